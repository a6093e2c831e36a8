"""Backups of files that change or cannot be read still commit, with a clear summary; a gc
running during a restore cannot pull data from under it (the restore is pinned)."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from casbackup.files import backup as backup_mod
from casbackup.files import restore as restore_mod
from casbackup.files.reader import TreeReader
from casbackup.files.snapshots import list_snapshots
from casbackup.gc import Collector
from helpers_files import backup, make_repo, restore, restored


def test_file_changing_while_read_is_reported_and_committed(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "growing.log").write_bytes(os.urandom(1024 * 1024))
    (src / "stable").write_bytes(b"stable")
    real = backup_mod.Backup.read_stream

    def read_and_append(self, stream):  # a writer appends while we read
        out = real(self, stream)
        with open(src / "growing.log", "ab") as f:
            f.write(b"more")
        return out

    monkeypatch.setattr(backup_mod.Backup, "read_stream", read_and_append)
    repo = make_repo()
    info, summary = backup(repo, src)
    assert summary.error_count == 1
    assert summary.errors[0]["path"].endswith("growing.log") and "changed while it was read" in summary.errors[0]["error"]
    with repo.reader() as snap:
        assert [s.id for s in list_snapshots(snap)] == [info.id]
    assert info.summary["error_count"] == 1
    monkeypatch.setattr(backup_mod.Backup, "read_stream", real)
    # the next backup must read it again (its stored stat is the one from before the change)
    _, second = backup(repo, src)
    assert second.files_changed == 1 and second.error_count == 0


def test_unreadable_file_is_recorded_and_the_rest_committed(tmp_path: Path, monkeypatch) -> None:
    """Simulated with an os.open that refuses one path, so it also works as root (where chmod 000
    does not stop reads); the real chmod variant runs below when not root."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret").write_bytes(b"x" * 100_000)
    (src / "ok").write_bytes(b"fine")
    real_open = os.open

    def guarded(path, flags, *a, **kw):
        if os.fsdecode(path).endswith("secret"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(backup_mod.os, "open", guarded)
    repo = make_repo()
    info, summary = backup(repo, src)
    monkeypatch.setattr(backup_mod.os, "open", real_open)
    assert summary.error_count == 1 and summary.errors[0] == {"path": str(src / "secret"), "error": "Permission denied"}
    restore(repo, tmp_path / "out")
    got = restored(tmp_path / "out", src)
    assert (got / "ok").read_bytes() == b"fine" and not (got / "secret").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files; covered by the simulated variant")
def test_unreadable_file_chmod(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret").write_bytes(b"x")
    (src / "secret").chmod(0)
    (src / "ok").write_bytes(b"fine")
    repo = make_repo()
    _, summary = backup(repo, src)
    assert summary.error_count == 1 and "secret" in summary.errors[0]["path"]


def test_a_fifo_is_stored_never_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")  # would block a naive reader forever
    (src / "ok").write_bytes(b"fine")
    repo = make_repo()
    _, summary = backup(repo, src)
    assert summary.error_count == 0 and summary.specials == 1
    assert summary.files_new == 1


def test_gc_during_restore_does_not_break_it(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(300_000))
    repo = make_repo(tmp_path / "repo")
    info, _ = backup(repo, src)
    with repo.reader() as snap:
        reader = TreeReader(snap)
        snapshot_blobs = {info.tree}
        for _, node in reader.walk(reader.lookup(info.tree, "/"), "/"):
            snapshot_blobs.update(r.id for r in node.refs())
            if node.kind == "file":
                snapshot_blobs.update(c.id for c in reader.chunks(node))
    assert len(snapshot_blobs) > 6
    real = restore_mod.Restorer.finish
    fired = threading.Event()
    reports = []

    def forget_and_collect(self, job):
        real(self, job)
        if not fired.is_set():
            fired.set()  # mid-restore: forget the snapshot and collect with no grace, twice
            with repo.transaction("forget") as txn:
                txn.delete("snapshots", info.id)
            for _ in range(2):
                reports.append(Collector(repo, grace=0, keep_last=1, force=True).run())

    monkeypatch.setattr(restore_mod.Restorer, "finish", forget_and_collect)
    _, summary = restore(repo, tmp_path / "out", info.id)
    assert fired.is_set() and summary.files == 6
    deleted = {i for r in reports for i in r.deleted_ids}
    assert not deleted & snapshot_blobs  # the restore's pin protected every blob it needs
    got = restored(tmp_path / "out", src)
    for i in range(6):
        assert (got / f"f{i}").read_bytes() == (src / f"f{i}").read_bytes()
    # once the reader is gone, gc reclaims the space
    monkeypatch.setattr(restore_mod.Restorer, "finish", real)
    Collector(repo, grace=0, keep_last=1, force=True).run()
    Collector(repo, grace=0, keep_last=1, force=True).run()
    assert not snapshot_blobs & {i for i, _ in repo.store.list()}
