"""Restore writes chunks in the worker threads (issue 10): each at its offset, only after the
store verified it, and an error in a worker (corrupt chunk, failed write) still leaves no temp
file and nothing half-written in place."""
from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from casbackup.errors import BlobCorrupt
from casbackup.files.reader import TreeReader
from casbackup.files.snapshots import resolve
from helpers_common import flip_stored
from helpers_files import backup, make_repo, restore, restored

TEMP = ".casbackup-restore-"


@pytest.fixture
def big(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(3 * 1024 * 1024))  # ~48 chunks at the 64 KiB test average
    return src


def chunks_of(repo, src: Path):  # type: ignore[no-untyped-def]
    with repo.reader() as snap:
        reader = TreeReader(snap)
        node = reader.lookup(resolve(snap, "latest").tree, f"{src}/big")
        return list(reader.chunks(node, "/big", "test"))


def record_pwrites(monkeypatch) -> list[tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    calls: list[tuple[str, int, int]] = []
    real = os.pwrite

    def spy(fd: int, data, offset: int) -> int:  # type: ignore[no-untyped-def]
        calls.append((threading.current_thread().name, offset, len(data)))
        return real(fd, data, offset)
    monkeypatch.setattr(os, "pwrite", spy)
    return calls


def test_chunks_are_written_by_the_workers_at_their_offsets(tmp_path: Path, big: Path, monkeypatch) -> None:
    repo = make_repo(tmp_path / "repo")
    backup(repo, big)
    chunks = chunks_of(repo, big)
    assert len(chunks) > 8
    calls = record_pwrites(monkeypatch)
    restore(repo, tmp_path / "out")
    assert (restored(tmp_path / "out", big) / "big").read_bytes() == (big / "big").read_bytes()
    offsets = [0]
    for c in chunks:
        offsets.append(offsets[-1] + c.size)
    assert sorted(off for _, off, _ in calls) == offsets[:-1]
    assert {name.split("_")[0] for name, _, _ in calls} == {"restore"}  # the pool's threads, not the walker
    assert threading.current_thread().name not in {name for name, _, _ in calls}


def test_a_corrupt_chunk_is_never_written(tmp_path: Path, big: Path, monkeypatch) -> None:
    repo = make_repo(tmp_path / "repo")
    backup(repo, big)
    chunks = chunks_of(repo, big)
    bad = chunks[len(chunks) // 2]
    bad_offset = sum(c.size for c in chunks[: len(chunks) // 2])
    flip_stored(tmp_path / "repo", bad.id, -10)  # inside the compressed payload: the hash check fails
    calls = record_pwrites(monkeypatch)
    with pytest.raises(BlobCorrupt) as exc:
        restore(repo, tmp_path / "out")
    assert "big" in str(exc.value) and bad.id in str(exc.value)
    assert bad_offset not in [off for _, off, _ in calls]
    out = tmp_path / "out"
    assert not [p for p in out.rglob(f"{TEMP}*")] and not (restored(out, big) / "big").exists()


def test_a_failed_write_in_a_worker_names_the_file_and_cleans_up(tmp_path: Path, big: Path, monkeypatch) -> None:
    repo = make_repo(tmp_path / "repo")
    backup(repo, big)
    real = os.pwrite
    count = [0]

    def full_disk(fd: int, data, offset: int) -> int:  # type: ignore[no-untyped-def]
        count[0] += 1
        if count[0] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)
    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(OSError) as exc:
        restore(repo, tmp_path / "out")
    assert exc.value.errno == errno.ENOSPC
    assert any("big" in note for note in getattr(exc.value, "__notes__", []))
    out = tmp_path / "out"
    assert not [p for p in out.rglob(f"{TEMP}*")] and not (restored(out, big) / "big").exists()
