"""The local-disk backend: create-if-absent and CAS across processes, crash leftovers,
listing hygiene, key validation, and fsync ordering before the root swap (S1, S6, S8)."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from typing import Any
from pathlib import Path

import pytest

from casbackup.backends import LocalBackend
from casbackup.backends.local import TEMP_PREFIX
from casbackup.errors import EtagMismatch, KeyMissing, UsageError
from casbackup.repository import Repository

CTX = mp.get_context("fork")


def _create_worker(root: str, i: int, barrier: "mp.synchronize.Barrier", out: "mp.Queue[tuple[int, bool]]") -> None:
    b = LocalBackend(root)
    barrier.wait()
    out.put((i, b.create("blobs/aa/contended", f"writer {i} ".encode() * 100_000)))


def test_create_if_absent_across_processes(tmp_path: Path) -> None:
    root = str(tmp_path / "r")
    LocalBackend(root, create=True)
    n = 6
    barrier, out = CTX.Barrier(n), CTX.Queue()
    procs = [CTX.Process(target=_create_worker, args=(root, i, barrier, out)) for i in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in range(n)]
    for p in procs:
        p.join(60)
    winners = [i for i, created in results if created]
    assert len(winners) == 1, results
    data = LocalBackend(root).get("blobs/aa/contended")
    assert data == f"writer {winners[0]} ".encode() * 100_000  # the winner's bytes, whole


def _cas_worker(root: str, increments: int, barrier: "mp.synchronize.Barrier") -> None:
    b = LocalBackend(root)
    barrier.wait()
    done = 0
    while done < increments:
        data, etag = b.read_versioned("counter")
        try:
            b.compare_and_swap("counter", etag, str(int(data) + 1).encode())
            done += 1
        except EtagMismatch:
            continue


def test_compare_and_swap_across_processes_loses_no_update(tmp_path: Path) -> None:
    root = str(tmp_path / "r")
    b = LocalBackend(root, create=True)
    b.compare_and_swap("counter", None, b"0")
    n, k = 4, 60
    barrier = CTX.Barrier(n)
    procs = [CTX.Process(target=_cas_worker, args=(root, k, barrier)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert b.get("counter") == str(n * k).encode()


def test_cas_semantics(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "r", create=True)
    e1 = b.compare_and_swap("root", None, b"one")
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("root", None, b"two")  # only-if-absent on an existing key
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("root", "0" * 32, b"two")
    e2 = b.compare_and_swap("root", e1, b"two")
    assert b.read_versioned("root") == (b"two", e2)
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("root", e1, b"three")  # stale etag


def test_create_get_delete_stat(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "r", create=True)
    assert b.create("blobs/ab/x", b"hello") is True
    assert b.create("blobs/ab/x", b"other") is False
    assert b.get("blobs/ab/x") == b"hello"
    assert b.get_range("blobs/ab/x", 1, 3) == b"ell"
    assert b.stat("blobs/ab/x").size == 5
    b.delete("blobs/ab/x")
    b.delete("blobs/ab/x")  # absent: not an error
    for call in (lambda: b.get("blobs/ab/x"), lambda: b.stat("blobs/ab/x"), lambda: b.get_range("blobs/ab/x", 0, 1)):
        with pytest.raises(KeyMissing):
            call()


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "a//b", ".hidden", "a/.tmp-x", "", "a/", "a\\b",
                                 "x" * 600])
def test_hostile_keys_are_refused(tmp_path: Path, key: str) -> None:
    b = LocalBackend(tmp_path / "r", create=True)
    with pytest.raises(UsageError):
        b.create(key, b"x")
    with pytest.raises(UsageError):
        b.get(key)
    assert not (tmp_path / "x").exists()


def test_listing_skips_temp_and_lock_files(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "r", create=True)
    b.create("blobs/ab/one", b"1")
    b.compare_and_swap("root", None, b"r")  # leaves the folder lock behind
    (tmp_path / "r" / "blobs" / "ab" / f"{TEMP_PREFIX}deadbeef").write_bytes(b"half")
    assert (tmp_path / "r" / ".lock").exists()
    keys = sorted(i.key for i in b.list(""))
    assert keys == ["blobs/ab/one", "root"]
    assert [i.key for i in b.list("blobs/")] == ["blobs/ab/one"]


def test_listing_failure_raises(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "r", create=True)
    b.create("blobs/ab/one", b"1")
    (tmp_path / "r" / "blobs").chmod(0)
    try:
        if os.access(tmp_path / "r" / "blobs", os.R_OK):
            pytest.skip("running as a user that ignores permissions")
        with pytest.raises(Exception):
            list(b.list("blobs/"))
    finally:
        (tmp_path / "r" / "blobs").chmod(0o755)


CRASH_SCRIPT = """
import os, sys
from casbackup.backends import LocalBackend
b = LocalBackend(sys.argv[1])
os.link = lambda *a, **k: os._exit(9)  # die after the temp file is written, before it is linked
b.create("blobs/cd/victim", b"x" * 100000)
"""


def test_crash_leaves_only_a_findable_temp_file(tmp_path: Path) -> None:
    root = tmp_path / "r"
    b = LocalBackend(root, create=True)
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(root)], cwd=Path(__file__).parents[2])
    assert proc.returncode == 9
    with pytest.raises(KeyMissing):
        b.get("blobs/cd/victim")  # never visible half-written, nor at all
    assert [i.key for i in b.list("")] == []
    stale = b.stale_temp_files(older_than=0)
    assert len(stale) == 1 and stale[0].name.startswith(TEMP_PREFIX)
    assert b.stale_temp_files(older_than=3600) == []  # a young temp file may be a live writer's
    assert b.remove_stale_temp_files(older_than=0) == 1
    assert b.stale_temp_files(older_than=0) == []
    assert b.create("blobs/cd/victim", b"x" * 100000) is True


def test_gc_cleans_old_temp_files(tmp_path: Path) -> None:
    from casbackup.gc import collect

    repo = Repository.init(LocalBackend(tmp_path / "r", create=True))
    tmp = tmp_path / "r" / "blobs" / f"{TEMP_PREFIX}0123"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(b"leftover")
    os.utime(tmp, (1, 1))
    report = collect(repo, grace=0, force=True)
    assert report.temp_files_removed == 1 and not tmp.exists()


# ---- S8: durability order ----------------------------------------------------------------


def test_fsync_file_and_directory_before_the_root_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every blob a commit makes reachable is fsynced (file, then its directory entry) before
    the root is replaced; the root's temp file is fsynced before the rename and its directory
    after it."""
    repo = Repository.init(LocalBackend(tmp_path / "r", create=True))
    events: list[tuple[str, str]] = []
    real_fsync, real_link, real_replace = os.fsync, os.link, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def link(src: str, dst: str, **kw: object) -> None:
        real_link(src, dst, **kw)  # type: ignore[arg-type]
        events.append(("link", f"{src} -> {dst}"))

    def replace(src: str, dst: str) -> None:
        real_replace(src, dst)
        events.append(("replace", f"{src} -> {dst}"))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "replace", replace)
    repo.commit(puts=[("ns", "k", b"v" * 20000)], message="durable")
    monkeypatch.undo()

    root_swaps = [i for i, (kind, what) in enumerate(events) if kind == "replace" and what.endswith("/root")]
    assert len(root_swaps) == 1
    swap = root_swaps[0]
    links = [(i, what) for i, (kind, what) in enumerate(events) if kind == "link"]
    assert links, "the commit linked no blobs?"
    for i, what in links:
        src, dst = what.split(" -> ")
        assert i < swap
        # the temp file's data was fsynced before it was linked into place
        assert any(k == "fsync" and w == src for k, w in events[:i]), f"{src} not fsynced before link"
        # the directory entry was fsynced after the link and before the root swap
        parent = str(Path(dst).parent)
        assert any(k == "fsync" and w == parent for k, w in events[i + 1 : swap]), f"{parent} not fsynced"
    src, dst = events[swap][1].split(" -> ")
    assert any(k == "fsync" and w == src for k, w in events[:swap]), "root temp file not fsynced before rename"
    assert any(k == "fsync" and w == str(Path(dst).parent) for k, w in events[swap + 1 :]), \
        "root directory not fsynced after rename"


def test_listing_survives_concurrent_deletes(tmp_path: Path) -> None:
    """Pins are released and blobs swept while others list: a key that vanishes mid-listing
    is simply not listed (it used to fail the whole listing with BackendError)."""
    import threading

    b = LocalBackend(tmp_path / "r", create=True)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            b.create(f"pins/p{i % 50}", b"x")
            b.delete(f"pins/p{(i + 25) % 50}")
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            for info in b.list("pins/"):
                assert info.key.startswith("pins/p")
    finally:
        stop.set()
        t.join()


def test_listing_a_prefix_does_not_walk_other_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = LocalBackend(tmp_path / "r", create=True)
    b.create("blobs/ab/x", b"1")
    b.create("pins/p1", b"1")
    walked: list[str] = []
    real = os.scandir

    def scandir(path: Any) -> Any:
        walked.append(str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert [i.key for i in b.list("pins/")] == ["pins/p1"]
    assert not any("blobs" in w for w in walked)
    assert [i.key for i in b.list("blobs/ab/")] == ["blobs/ab/x"]
    assert [i.key for i in b.list("nothing/here/")] == []
    with pytest.raises(UsageError):
        list(b.list("../"))
