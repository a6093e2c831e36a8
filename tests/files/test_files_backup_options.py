"""backup's options through the library (issue 12), and the read path's reused segments (issue
10): chunks are views of pooled buffers, and a buffer is never refilled while work reads it."""
from __future__ import annotations

import io
import os
import random
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from casbackup.backends import MemoryBackend
from casbackup.errors import BackendError, NotFound, UsageError
from casbackup.files import sources
from casbackup.files.backup import BackupOptions, run_backup
from casbackup.files.chunker import Chunker, SegmentPool
from casbackup.files.snapshots import list_snapshots
from casbackup.files.sources import SourceCommandFailed
from casbackup.repository import Repository
from helpers_files import backup, make_repo, restore, restored, snapshot_of

SMALL = (16 * 1024, 64 * 1024, 256 * 1024)


def repo_files(root: Path) -> dict[str, int]:
    """Every stored object of a local repository with its size (what a write would change);
    not the empty `.lock` files the local backend's compare-and-swap flocks, which hold nothing."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and p.name != ".lock"}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    rng = random.Random(12)
    s = tmp_path / "src"
    (s / "d").mkdir(parents=True)
    (s / "small.txt").write_text("small\n")
    (s / "d" / "big.bin").write_bytes(rng.randbytes(700_000))
    (s / "d" / "text.txt").write_bytes(b"line of text\n" * 40_000)
    return s


# ---- the read path ----

def test_views_cut_like_split_while_uploads_hold_segments() -> None:
    """Chunks cut from reused segments, each held by a slow "upload" that copies it late,
    equal the chunks of the plain split: no segment was refilled under a reader."""
    data = random.Random(5).randbytes(6 * 1024 * 1024 + 123)
    c = Chunker(*SMALL)
    c.segment = 600 * 1024 + 11  # many segments and carries
    pool = SegmentPool(c.segment, 3)
    with ThreadPoolExecutor(4) as workers:
        def late_copy(view: memoryview) -> bytes:
            time.sleep(0.002)
            return bytes(view)
        futures = []
        for seg, view in c.views(io.BytesIO(data), pool):
            fut = workers.submit(late_copy, view)
            seg.hold(fut)
            futures.append(fut)
        pieces = [f.result() for f in futures]
    assert pieces == list(Chunker(*SMALL).split(io.BytesIO(data)))
    assert b"".join(pieces) == data
    assert pool.allocated <= 3  # memory bounded by the pool, not by the input's size


def test_a_sealed_segment_waits_for_its_holders() -> None:
    pool = SegmentPool(1024, 2)
    a = pool.acquire()
    pending: Future[None] = Future()
    a.hold(pending)
    pool.seal(a)
    b = pool.acquire()
    pool.seal(b)
    assert pool.acquire() is b  # the idle one is reused first; `a` is still read
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # the pool is full: it waits for a's reader
    pending.set_result(None)
    waiter.join(5)
    assert got == [a] and pool.allocated == 2


def test_cut_of_whole_bytes_matches_split() -> None:
    data = random.Random(6).randbytes(900_000)
    c = Chunker(*SMALL)
    assert [bytes(v) for v in c.cut(data)] == list(c.split(io.BytesIO(data))) and c.cut(b"") == []


@pytest.mark.parametrize("readers", [1, 2, 5])
def test_read_concurrency_round_trips(src: Path, tmp_path: Path, readers: int) -> None:
    for i in range(12):
        (src / f"f{i}.bin").write_bytes(random.Random(i).randbytes(50_000 + i * 9_000))
    repo = make_repo()
    _, summary = backup(repo, src, read_concurrency=readers)
    assert summary.files_new == 15 and summary.error_count == 0
    restore(repo, tmp_path / "out")
    assert snapshot_of(restored(tmp_path / "out", src)) == snapshot_of(src)


class FullDisk(MemoryBackend):
    """Refuses every blob after the first `room` of them, as a full disk would."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room, self.armed = room, False

    def create(self, key: str, data: bytes) -> bool:
        if self.armed and key.startswith(("blobs/", "packs/")):
            if self.room <= 0:
                raise BackendError(f"{key}: no space left on device")
            self.room -= 1
        return super().create(key, data)


def test_a_storage_error_met_by_a_reader_stops_the_backup(tmp_path: Path) -> None:
    """The first failed upload, seen by a reader thread, ends the whole backup with that error
    (nothing committed, no thread left behind), however much of the tree is still to walk."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}.bin").write_bytes(random.Random(i).randbytes(400_000))
    for i in range(30):
        (src / f"sub{i:02d}").mkdir()
        (src / f"sub{i:02d}" / "x.txt").write_text("x" * i)
    backend = FullDisk(room=1)  # format 2: one pack of 1 MiB fits, the next does not
    repo = Repository.init(backend, chunk_min=SMALL[0], chunk_avg=SMALL[1], chunk_max=SMALL[2],
                           pack_size=1024 * 1024)
    backend.armed = True
    threads = threading.active_count()
    with pytest.raises(BackendError, match="no space left"):
        backup(repo, src, read_concurrency=2)
    assert threading.active_count() == threads
    with repo.reader() as r:
        assert list_snapshots(r) == []


def test_read_concurrency_below_one_is_refused(src: Path) -> None:
    with pytest.raises(UsageError, match="read concurrency"):
        backup(make_repo(), src, read_concurrency=0)


# ---- --dry-run, --parent, --time ----

def test_dry_run_counts_what_a_backup_stores_and_writes_nothing(src: Path, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", chunk_min=SMALL[0], chunk_avg=SMALL[1], chunk_max=SMALL[2])
    before = repo_files(tmp_path / "repo")
    info, dry = backup(repo, src, dry_run=True)
    assert repo_files(tmp_path / "repo") == before  # no blob, no root change, no pin left behind
    assert info.id == "" and dry.files_new == 3 and dry.bytes_read == dry.total_bytes == dry.bytes_new
    _, real = backup(repo, src)
    assert (dry.bytes_added, dry.blobs_added, dry.total_bytes) == (real.bytes_added, real.blobs_added,
                                                                   real.total_bytes)
    (src / "small.txt").write_text("small, changed\n")
    (src / "new.txt").write_text("new\n")
    _, dry2 = backup(repo, src, dry_run=True)
    d = dry2.as_dict()
    assert (d["files_new"], d["files_changed"], d["files_unmodified"]) == (1, 1, 2)
    assert d["bytes_new"] == 4 and d["bytes_changed"] == 15 and d["bytes_unmodified"] == 700_000 + 13 * 40_000
    assert 0 < d["blobs_added"] < real.blobs_added  # the new inline data and the TREEs above it
    with repo.reader() as r:
        assert len(list_snapshots(r)) == 1


def test_parent_option_replaces_the_automatic_parent(src: Path) -> None:
    repo = make_repo()
    first, _ = backup(repo, src, host="a")
    other, s = backup(repo, src, host="b")  # another host: no automatic parent, everything read
    assert other.parent is None and s.files_unmodified == 0
    info, s = backup(repo, src, host="b", parent=first.id[:12])
    assert info.parent == first.id and s.files_unmodified == 3 and s.bytes_read == 0
    info, s = backup(repo, src, host="a", parent="latest")
    assert info.parent is not None and s.bytes_read == 0
    with pytest.raises(NotFound):
        backup(repo, src, parent="0123abcd")
    with pytest.raises(UsageError):
        backup(repo, src, parent="not-hex")
    with repo.reader() as r:
        assert len(list_snapshots(r)) == 4  # the two refused backups committed nothing


def test_time_option_sets_the_snapshot_time(src: Path) -> None:
    repo = make_repo()
    info, _ = backup(repo, src, time=1_234_567_890.0)
    with repo.reader() as r:
        assert [s.time for s in list_snapshots(r)] == [1_234_567_890.0] and info.time == 1_234_567_890.0


# ---- --stdin-from-command ----

def test_stdin_from_command_stores_its_output(tmp_path: Path) -> None:
    repo = make_repo()
    cmd = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 300000)"]
    info, s = run_backup(repo, BackupOptions(stdin_command=cmd, stdin_name="dump.txt"))
    assert info.paths == ["dump.txt"] and s.total_bytes == 300_000
    restore(repo, tmp_path / "out")
    assert (tmp_path / "out" / "dump.txt").read_bytes() == b"x" * 300_000


def test_a_failing_command_commits_nothing() -> None:
    repo = make_repo()
    cmd = [sys.executable, "-c", "import sys; sys.stdout.write('partial'); sys.exit(4)"]
    with pytest.raises(SourceCommandFailed, match="status 4"):
        run_backup(repo, BackupOptions(stdin_command=cmd))
    with pytest.raises(UsageError, match="cannot run"):
        run_backup(repo, BackupOptions(stdin_command=["/nonexistent/command"]))
    with repo.reader() as r:
        assert list_snapshots(r) == []


# ---- --files-from* ----

def test_files_from_lines_are_globs_with_comments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a.txt", "b.txt", ".hidden.txt", "c.log", "sp ace"):
        (tmp_path / name).write_text(name)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    listing = tmp_path / "list"
    listing.write_bytes(b"\xef\xbb\xbf# a comment\n\n  *.txt  \r\nd/[^y].txt\n  #also a comment\nnomatch*\nsp ace\n")
    out = sources.FileList()
    sources.files_from(str(listing), out)
    assert out.paths == [".hidden.txt", "a.txt", "b.txt", "d/x.txt", "sp ace"]  # Go's * matches dot files
    assert out.warnings == ["pattern 'nomatch*' does not match any files, skipping"]
    with pytest.raises(UsageError):
        sources.glob_paths("[unterminated")


def test_files_from_verbatim_and_raw(tmp_path: Path) -> None:
    verbatim = tmp_path / "v"
    verbatim.write_bytes(b"  spaced  \n#not a comment\n\n*.txt\r\n")
    out = sources.FileList()
    sources.files_from_verbatim(str(verbatim), out)
    assert out.paths == ["  spaced  ", "#not a comment", "*.txt"]
    raw = sources.FileList()
    sources.files_from_raw("-", raw, io.BytesIO(b"a\nb\x00caf\xe9\x00"))
    assert raw.paths == ["a\nb", os.fsdecode(b"caf\xe9")]
    for bad, why in ((b"a\x00b", "trailing zero byte"), (b"a\x00\x00", "empty filename")):
        with pytest.raises(UsageError, match=why):
            sources.files_from_raw("-", sources.FileList(), io.BytesIO(bad))
    with pytest.raises(UsageError, match="cannot read"):
        sources.files_from(str(tmp_path / "missing"), sources.FileList())
    kept = sources.FileList()
    assert sources.keep_existing([str(verbatim), str(tmp_path / "gone")], kept) == [str(verbatim)]
    assert kept.warnings == [f"{tmp_path / 'gone'} does not exist, skipping"]
