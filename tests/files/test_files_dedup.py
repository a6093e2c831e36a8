"""Dedup and the files cache: an identical backup adds ~nothing; a 1% change adds ~1%."""
from __future__ import annotations

import random
from pathlib import Path

from casbackup.codec import BlobType
from casbackup.packs import LOCATIONS_NAMESPACE, Location
from helpers_files import backup, make_repo


def make_data(root: Path, files: int = 20, size: int = 1024 * 1024, seed: int = 7) -> int:
    rng = random.Random(seed)
    root.mkdir()
    for i in range(files):
        (root / f"f{i:03d}").write_bytes(rng.randbytes(size))
    return files * size


def test_identical_second_backup_adds_nothing_and_reads_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    total = make_data(src)
    repo = make_repo(tmp_path / "repo")
    _, first = backup(repo, src)
    assert first.bytes_read == total and first.bytes_added > total * 0.99
    info, second = backup(repo, src)
    assert second.files_unmodified == 20 and second.bytes_read == 0
    assert second.bytes_added < 4096  # at most the TREEs of ancestors whose mtime moved (e.g. /tmp)
    assert info.parent is not None


def test_forced_reread_still_dedups(tmp_path: Path) -> None:
    src = tmp_path / "src"
    total = make_data(src)
    repo = make_repo()
    backup(repo, src)
    _, second = backup(repo, src, force=True)
    assert second.bytes_read == total and second.bytes_added < 4096


def test_one_percent_change_adds_about_one_percent(tmp_path: Path) -> None:
    src = tmp_path / "src"
    total = make_data(src)
    repo = make_repo()
    backup(repo, src)
    rng = random.Random(1)
    changed = 0
    while changed < total // 100:  # 64 KiB overwrites at random offsets, 1% of the bytes
        p = src / f"f{rng.randrange(20):03d}"
        with open(p, "r+b") as f:
            f.seek(rng.randrange(0, 1024 * 1024 - 65536))
            f.write(rng.randbytes(65536))
        changed += 65536
    _, second = backup(repo, src)
    touched = 20 - second.files_unmodified
    assert second.bytes_read == touched * 1024 * 1024  # only changed files were read
    # Each 64 KiB overwrite replaces the 1-3 chunks it overlaps plus the one where the cut points
    # resync: with 64 KiB average chunks that is ~4x the edit, so 1% changed costs ~4-5%.
    assert second.bytes_added < 6 * changed, (second.bytes_added, changed)


def test_interrupted_backup_reuses_uploaded_chunks(tmp_path: Path, monkeypatch) -> None:
    """Format v2: the packs an interrupted backup wrote are found again through its checkpoint
    commits (their locations, published every CHECKPOINT_BYTES; small here)."""
    src = tmp_path / "src"
    total = make_data(src)
    repo = make_repo(tmp_path / "repo", pack_size=1024 * 1024)
    from casbackup import transaction
    monkeypatch.setattr(transaction, "CHECKPOINT_BYTES", 3 * 1024 * 1024)
    from casbackup.files import backup as backup_mod
    real = backup_mod.Backup.finish_file
    calls = {"n": 0}

    def boom(self, node, work, changed=False):  # fail late: after most chunks were uploaded
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        return real(self, node, work, changed)

    monkeypatch.setattr(backup_mod.Backup, "finish_file", boom)
    try:
        backup(repo, src)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("expected the interrupt")
    monkeypatch.setattr(backup_mod.Backup, "finish_file", real)
    with repo.reader() as snap:
        assert list(snap.list("snapshots")) == []  # nothing committed
    from casbackup.check import check
    assert not check(repo).dangling
    with repo.reader() as snap:
        located = [e for e in snap.list(LOCATIONS_NAMESPACE) if Location.from_value(e.value, e.key).type == BlobType.CHUNK]
    assert len(located) > 5  # chunks uploaded and checkpointed before the interrupt
    _, summary = backup(repo, src)
    assert summary.chunks_reused == len(located)  # every one of them is reused, none uploaded twice
    assert summary.bytes_added < total
