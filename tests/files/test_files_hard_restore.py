"""Restore under stress: memory bounded whatever a file's chunk count, no temp files left by an
interrupt (SIGINT or SIGTERM), and stale temp files of a killed run removed by the next one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from casbackup.chunklist import Piece, write_file
from casbackup.codec import BlobType
from casbackup.files.snapshots import NAMESPACE, SnapshotInfo, new_id
from helpers_common import cli_env, without_plaintext_warning
from helpers_files import make_repo, restore

TEMP = ".casbackup-restore-"


def many_chunk_snapshot(path: Path, chunks: int, monkeypatch) -> tuple[str, bytes]:
    """A local repository whose snapshot holds /big: `chunks` one-byte chunks (one CHUNK blob,
    listed over and over: a FILE index of leaf parts), next to a small file."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # building only; durability is not the point
    repo = make_repo(path)
    with repo.transaction("many chunks") as txn:
        c = txn.put_blob(BlobType.CHUNK, b"z").ref
        fref, size = write_file(txn.put_structured, [Piece(c.id, 1)] * chunks)
        base = {"type": "file", "mode": 0o644, "mtime_ns": 0, "uid": 0, "gid": 0}
        root = txn.put_structured(BlobType.TREE, [fref], {"v": 1, "entries": [
            {"name": b"big", "size": size, "file": bytes.fromhex(fref.id), **base},
            {"name": b"small", "size": 2, "data": b"hi", **base}]}).ref
        info = SnapshotInfo("", 1.0, "h", "u", ["/x"], [], root.id)
        value = info.value()
        txn.put(NAMESPACE, new_id(value), value, refs=[root])
    monkeypatch.undo()
    return new_id(value), b"z" * chunks


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP}*")]


# ---- item 13: restore memory does not grow with a file's chunk count ------------------------

PEAK = """
import resource, subprocess, sys
r = subprocess.run([sys.executable, "-m", "casbackup", *sys.argv[1:]], capture_output=True)
sys.stderr.write(r.stderr.decode())
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_restore_of_300k_chunks_has_bounded_memory(tmp_path: Path, monkeypatch) -> None:
    sid, content = many_chunk_snapshot(tmp_path / "repo", 300_000, monkeypatch)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", PEAK, "-r", str(tmp_path / "repo"), "restore", sid,
                           "--target", str(out)], capture_output=True, env=cli_env(), timeout=900)
    code, peak_kib = map(int, proc.stdout.split())
    assert code == 0, proc.stderr
    assert (out / "big").read_bytes() == content
    assert peak_kib < 200 * 1024, f"restore peaked at {peak_kib // 1024} MiB"


def test_restore_caps_chunks_in_flight_by_count(tmp_path: Path, monkeypatch) -> None:
    """The writer never queues more chunk reads than max_chunks, however small they are."""
    from casbackup.files import restore as restore_mod
    sid, content = many_chunk_snapshot(tmp_path / "repo", 3000, monkeypatch)
    seen: list[int] = []
    real = restore_mod.Restorer.write_next

    def spy(self) -> None:
        seen.append(len(self.queue))
        real(self)
    monkeypatch.setattr(restore_mod.Restorer, "write_next", spy)
    from casbackup.backends import LocalBackend
    from casbackup.repository import Repository
    repo = Repository.open(LocalBackend(tmp_path / "repo"))
    restore(repo, tmp_path / "out", sid, max_chunks=100)
    assert (tmp_path / "out" / "big").read_bytes() == content
    assert seen and max(seen) <= 100


# ---- item 19: interrupts leave no temp files; stale ones are removed next time --------------

@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_cli_restore_leaves_no_temp_files(tmp_path: Path, monkeypatch, sig, code) -> None:
    sid, _ = many_chunk_snapshot(tmp_path / "repo", 200_000, monkeypatch)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "casbackup", "-r", str(tmp_path / "repo"), "restore", sid,
                             "--target", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    deadline = time.monotonic() + 120
    while not (out.exists() and temps(out)):  # midway: the big file is being written
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    stderr = err.decode()
    assert proc.returncode == code, stderr
    lines = without_plaintext_warning(stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("casbackup: error: ") and "Traceback" not in stderr
    assert temps(out) == []
    assert not (out / "big").exists()


@pytest.mark.slow
def test_stale_temp_files_are_removed_by_the_next_restore(tmp_path: Path, cli) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("content")
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    r = cli("-r", repo, "backup", str(src))
    assert r.code == 0, r.stderr
    out = tmp_path / "out"
    sub = out / str(src).lstrip("/") / "sub"
    sub.mkdir(parents=True)
    stale = [out / f"{TEMP}0123456789abcdef", sub / f"{TEMP}fedcba9876543210", sub / f"{TEMP}fedcba9876543210-17"]
    keep = [sub / f"{TEMP}0123456789abcdef-", sub / f"{TEMP}0123456789abcdef-1x", sub / f"{TEMP}0123456789abcdeg", sub / f"{TEMP}0123456789ABCDEF", sub / f"{TEMP}0123456789abcdef0",
            sub / f"{TEMP}keep", sub / "casbackup-restore-0123456789abcdef", out / f"x{TEMP}0123456789abcdef"]
    for p in stale + keep:
        p.write_text("old")
    os.symlink("/nonexistent", out / f"{TEMP}00000000aaaaaaaa")  # a stale temp symlink (from symlink restore)
    stale.append(out / f"{TEMP}00000000aaaaaaaa")
    (out / f"{TEMP}1111111111111111").mkdir()  # a directory is never ours: left alone
    keep.append(out / f"{TEMP}1111111111111111")
    r = cli("-r", repo, "restore", "latest", "--target", str(out))
    assert r.code == 0, r.stderr
    assert [p for p in stale if os.path.lexists(p)] == []
    assert all(p.exists() for p in keep)
    assert (sub / "f").read_text() == "content"


def test_library_interrupt_removes_temp_files(tmp_path: Path, monkeypatch) -> None:
    """A KeyboardInterrupt in the middle of a file (here: raised by a chunk read) leaves no temp file."""
    from casbackup.backends import LocalBackend
    from casbackup.files import reader as reader_mod
    from casbackup.repository import Repository
    sid, _ = many_chunk_snapshot(tmp_path / "repo", 5000, monkeypatch)
    repo = Repository.open(LocalBackend(tmp_path / "repo"))
    chunks = [0]
    real = reader_mod.TreeReader.read_chunks

    def flaky(self, run):  # every chunk read of a restore goes through here (runs of a pack)
        chunks[0] += len(run)
        if chunks[0] >= 2000:
            raise KeyboardInterrupt
        return real(self, run)
    monkeypatch.setattr(reader_mod.TreeReader, "read_chunks", flaky)
    with pytest.raises(KeyboardInterrupt):
        restore(repo, tmp_path / "out", sid)
    assert temps(tmp_path / "out") == [] and not (tmp_path / "out" / "big").exists()
