"""One storage-contract suite for every backend (spec/FORMAT.md "Storage contract", spec/backends.md).

Targets come from the `target` fixture in conftest: memory, local, S3 on moto, SeaweedFS (marker
`seaweedfs`) and rclone through the command backend. Races run in separate processes.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from casbackup.backends.base import BatchDeleter, delete_keys
from casbackup.backends.listing import fanout_prefixes, list_prefixes
from casbackup.codec import BlobType
from casbackup.errors import BackendError, CapabilityError, EtagMismatch, KeyMissing, UsageError
from casbackup.check import check
from casbackup.gc import Collector
from casbackup.repository import Repository, self_test
from casbackup import store as store_module
from casbackup.store import BlobStore

from . import helpers_workers as workers
from .conftest import Target

BINARY = bytes(range(256)) * 4 + b"\x00" * 100


def _conditional(target: Target) -> None:
    if not target.conditional:
        pytest.skip(f"{target.name} declares no conditional writes: races are out of its contract")


# ---- single-process contract ------------------------------------------------------------


@pytest.mark.slow
def test_missing_keys_raise_key_missing(target: Target) -> None:
    b = target.make()
    for call in (lambda: b.get("blobs/aa/none"), lambda: b.stat("blobs/aa/none"),
                 lambda: b.read_versioned("root"), lambda: b.get_range("blobs/aa/none", 0, 4)):
        with pytest.raises(KeyMissing):
            call()


def test_create_is_create_if_absent(target: Target) -> None:
    b = target.make()
    assert b.create("blobs/ab/one", BINARY) is True
    assert b.create("blobs/ab/one", b"other bytes") is False
    assert b.get("blobs/ab/one") == BINARY
    assert b.stat("blobs/ab/one").size == len(BINARY)
    assert b.create("blobs/ab/empty", b"") is True
    assert b.get("blobs/ab/empty") == b""


def test_large_object_roundtrip(target: Target) -> None:
    b = target.make()
    data = os.urandom(3 * 1024 * 1024 + 17)
    assert b.create("blobs/cd/big", data)
    assert b.get("blobs/cd/big") == data
    assert b.get_range("blobs/cd/big", 1024 * 1024, 10) == data[1024 * 1024:1024 * 1024 + 10]


def test_get_range(target: Target) -> None:
    b = target.make()
    b.create("k/r", b"0123456789")
    assert b.get_range("k/r", 0, 4) == b"0123"
    assert b.get_range("k/r", 3, 4) == b"3456"
    assert b.get_range("k/r", 8, 10) == b"89"  # fewer at the end
    assert b.get_range("k/r", 10, 5) == b""
    assert b.get_range("k/r", 2, 0) == b""


@pytest.mark.slow
def test_compare_and_swap(target: Target) -> None:
    b = target.make()
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("pins/p1", "0" * 32, b"x")  # expected a value, there is none
    e1 = b.compare_and_swap("pins/p1", None, b"one")
    assert b.read_versioned("pins/p1") == (b"one", e1)
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("pins/p1", None, b"two")  # only-if-absent, but present
    e2 = b.compare_and_swap("pins/p1", e1, b"two")
    assert e2 != e1
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("pins/p1", e1, b"stale")
    assert b.read_versioned("pins/p1") == (b"two", e2)
    b.delete("pins/p1")
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("pins/p1", e2, b"after delete")


@pytest.mark.slow
def test_list_prefixes_sizes_and_storage_clock(target: Target) -> None:
    b = target.make()
    for key, data in {"pins/a": b"1", "pins/b": b"22", "pinsx/c": b"333", "blobs/aa/x": b"4444"}.items():
        b.create(key, data)
    assert {i.key: i.size for i in b.list("pins/")} == {"pins/a": 1, "pins/b": 2}
    assert {i.key for i in b.list("pins")} == {"pins/a", "pins/b", "pinsx/c"}
    assert {i.key for i in b.list("pins/b")} == {"pins/b"}
    assert [i.key for i in b.list("nothing/")] == []
    assert {i.key for i in b.list("")} >= {"pins/a", "pins/b", "pinsx/c", "blobs/aa/x"}
    now = b.now()
    for info in b.list(""):
        assert abs(info.mtime - now) < 120, (info, now)  # mtimes are on the storage's clock
    assert abs(now - time.time()) < 120


def test_delete_is_idempotent(target: Target) -> None:
    b = target.make()
    b.create("blobs/ef/gone", b"x")
    b.delete("blobs/ef/gone")
    b.delete("blobs/ef/gone")
    with pytest.raises(KeyMissing):
        b.get("blobs/ef/gone")
    assert [i.key for i in b.list("blobs/ef/")] == []


# ---- batched deletes and the concurrent fan-out listing -----------------------------------


def test_batched_delete_removes_every_key_and_ignores_absent_ones(target: Target) -> None:
    b = target.make()
    keys = [f"blobs/{i:02x}/key{i}" for i in range(0, 60, 3)]
    for key in keys:
        assert b.create(key, b"x")
    b.create("blobs/ff/kept", b"kept")
    if isinstance(b, BatchDeleter):
        b.delete_batch_size = 7  # several batches, each one request, one with the absent keys in it
    delete_keys(b, keys[:10] + ["blobs/aa/never-stored", "blobs/ab/never-stored"] + keys[10:])
    assert [i.key for i in b.list("blobs/")] == ["blobs/ff/kept"]
    delete_keys(b, [])


def test_fanout_listing_is_the_whole_listing_in_key_order(target: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "LISTING_PAGE", 5)  # more than FANOUT_AFTER_PAGES "pages": the fan-out is used
    monkeypatch.setattr(store_module, "FANOUT_AFTER_PAGES", 1)
    b = target.make()
    store = BlobStore(b)
    ids = sorted(store.put(BlobType.PAGE, f"blob {i}".encode()).ref.id for i in range(24))  # loose blobs
    for key in ("blobs/foreign", "blobs/zz/foreign", "blobsx/00/other"):
        b.create(key, b"not a blob")
    plain = {i.key: i.size for i in b.list("blobs/")}
    fanout = [(i.key, i.size) for i in list_prefixes(b, fanout_prefixes("blobs/"), workers=4)]
    assert fanout == [(f"blobs/{i[:2]}/{i}", plain[f"blobs/{i[:2]}/{i}"]) for i in ids]
    # concurrently on object stores, sequentially elsewhere: the same blobs, in the same order
    assert [(i, info.size) for i, info in store.list()] == [(k.rsplit("/", 1)[1], s) for k, s in fanout]


class FailingListing:
    """A backend whose listing of one prefix fails after yielding part of it (a lost connection
    mid-listing), and which asks for concurrent listings."""

    list_concurrency = 4

    def __init__(self, inner: Any, failing: str) -> None:
        self._inner, self._failing = inner, failing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def list(self, prefix: str) -> Any:
        for n, info in enumerate(self._inner.list(prefix)):
            if prefix == self._failing and n == 1:
                raise BackendError(f"listing {prefix} failed")
            yield info


def test_a_failed_fanout_listing_is_an_error_never_a_short_listing(target: Target,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "LISTING_PAGE", 5)
    monkeypatch.setattr(store_module, "FANOUT_AFTER_PAGES", 1)
    b = target.make()
    ids = [f"{p}{n:062x}" for p in ("00", "7f", "ff") for n in range(3)]
    for blob_id in ids:
        b.create(f"blobs/{blob_id[:2]}/{blob_id}", b"a listed key")
    failing = FailingListing(b, "blobs/7f/")  # fails after the first key of blobs/7f/
    with pytest.raises(BackendError, match="blobs/7f/"):
        list(list_prefixes(failing, fanout_prefixes("blobs/"), workers=4))
    with pytest.raises(BackendError, match="blobs/7f/"):
        list(BlobStore(failing).list())  # type: ignore[arg-type]
    assert [i for i, _ in BlobStore(FailingListing(b, "none/")).list()] == ids  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/../b", "", ".hidden", "a/b/"])
def test_hostile_keys_are_refused(target: Target, key: str) -> None:
    b = target.make()
    with pytest.raises(UsageError):
        b.create(key, b"x")
    with pytest.raises(UsageError):
        b.get(key)


def test_capability_self_test(target: Target) -> None:
    b = target.make()
    if target.conditional:
        self_test(b)
        assert [i.key for i in b.list("selftest/")] == []  # it cleans up after itself
    else:
        with pytest.raises(CapabilityError, match="create-if-absent.*conditional update"):
            self_test(b)
        self_test(b, unsafe_single_writer=True)  # loud, but allowed


def test_thread_race_on_create_and_cas(target: Target) -> None:
    _conditional(target)
    b = target.make()
    results: list[bool] = []
    start = threading.Barrier(8)

    def creator(i: int) -> None:
        start.wait()
        results.append(b.create("blobs/12/contended", f"writer {i}".encode()))

    threads = [threading.Thread(target=creator, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


# ---- across processes ---------------------------------------------------------------------


def _spawn(fn: object, args_for: list[tuple[object, ...]]) -> list[object]:
    return _spawn_each([(fn, args) for args in args_for])


def _spawn_each(jobs: list[tuple[object, tuple[object, ...]]]) -> list[object]:
    """Each job (function, args) in its own process, started together; results in job order."""
    ctx = multiprocessing.get_context("spawn")  # no fork: obstore's runtime threads do not survive it
    barrier = ctx.Barrier(len(jobs))
    queues = [ctx.Queue() for _ in jobs]
    procs = [ctx.Process(target=fn, args=(*args, barrier, q)) for (fn, args), q in zip(jobs, queues)]
    for p in procs:
        p.start()
    results = [q.get(timeout=300) for q in queues]
    for p in procs:
        p.join(timeout=30)
    errors = [r[1] for r in results if r[0] != "ok"]
    assert not errors, errors[0]
    return [r[1] for r in results]


def _shared(target: Target) -> None:
    _conditional(target)
    if target.url is None:
        pytest.skip(f"{target.name} cannot be shared between processes")


@pytest.mark.slow
def test_process_race_create_has_one_winner(target: Target) -> None:
    _shared(target)
    n = 6
    results = _spawn(workers.race_create,
                     [(target.url, target.options, "blobs/34/contended", f"writer {i}".encode()) for i in range(n)])
    winners = [payload for payload, created in results if created]
    assert len(winners) == 1
    assert target.make().get("blobs/34/contended") == winners[0]


@pytest.mark.slow
def test_process_race_cas_loses_no_update(target: Target, soak: bool) -> None:
    _shared(target)
    n, rounds = (6, 40) if soak else (4, 8)
    b = target.make()
    b.compare_and_swap("root", None, b"0")
    conflicts = _spawn(workers.race_counter, [(target.url, target.options, "root", rounds) for _ in range(n)])
    assert b.read_versioned("root")[0] == str(n * rounds).encode()
    assert sum(conflicts) >= 0  # conflicts are expected and retried; only the total matters


@pytest.mark.slow
def test_process_race_commits_loses_no_commit(target: Target, soak: bool) -> None:
    _shared(target)
    n, rounds = (4, 15) if soak else (3, 3)
    Repository.init(target.make())
    seqs = _spawn(workers.race_commits, [(target.url, target.options, w, rounds) for w in range(n)])
    all_seqs = sorted(s for worker in seqs for s in worker)
    assert all_seqs == list(range(1, n * rounds + 1))  # every commit got its own generation
    repo = Repository.open(target.make())
    with repo.reader() as snap:
        assert snap.generation.seq == n * rounds
        for w in range(n):
            for i in range(rounds):
                assert snap.get("race", f"w{w}-{i}") == f"{w}:{i}".encode()


@pytest.mark.slow
def test_process_race_writers_gc_and_a_pinned_reader_at_pack_level(target: Target, soak: bool) -> None:
    """S1-S5 at pack level on each shared storage, in separate processes: writers dedup against
    packs that a grace-0 gc condemns, repacks and sweeps, while a reader reads a pinned view.
    No commit is lost or published dangling, the pinned reads never miss a blob, and what the
    writers kept is whole afterwards (check --read-data)."""
    _shared(target)
    writers, rounds = (3, 12) if soak else (2, 8)
    Repository.init(target.make())
    jobs: list[tuple[object, tuple[object, ...]]] = [
        *((workers.pack_writer, (target.url, target.options, w, rounds)) for w in range(writers)),
        (workers.pack_gc, (target.url, target.options, 0.15 * rounds + 1)),
        (workers.pinned_reader, (target.url, target.options, 0.15 * rounds + 1)),
    ]
    results = _spawn_each(jobs)
    repo = Repository.open(target.make(), write=True)
    final = Collector(repo, grace=0, keep_last=1, force=True).run()
    _, (deleted, repacked), reads = results[writers - 1], results[writers], results[writers + 1]
    assert reads > 0
    assert deleted + final.deleted > 0 and repacked + final.repacked_packs > 0  # gc had work of both kinds
    with repo.reader() as snap:
        for kept, removed, _conflicts in results[:writers]:
            for key in kept:
                e = snap.entry("race", key)
                assert e is not None and len(e.refs) >= 2, key
                for ref in e.refs:
                    snap.read_blob(ref)
            assert all(snap.entry("race", key) is None for key in removed)
    assert check(repo, read_data=True).ok


# ---- end to end through the CLI ------------------------------------------------------------


@pytest.mark.slow
def test_cli_end_to_end(target: Target, cli: object) -> None:
    if target.url is None:
        pytest.skip("the in-memory backend lives in one process; the CLI runs in another")
    run = cli  # type: ignore[assignment]
    args = target.cli_args()
    unsafe = [] if target.conditional else ["--unsafe-single-writer"]
    if not target.conditional:
        refused = run(*args, "init", env=target.env)
        assert refused.code == CapabilityError.exit_code, refused.stderr
        assert "create-if-absent" in refused.stderr and "--unsafe-single-writer" in refused.stderr
    r = run(*args, *unsafe, "init", env=target.env)
    assert r.code == 0, r.stderr
    r = run(*args, *unsafe, "meta", "put", "ns", "greeting", "hello object store", env=target.env)
    assert r.code == 0, r.stderr
    r = run(*args, "meta", "get", "ns", "greeting", env=target.env)
    assert (r.code, r.stdout) == (0, b"hello object store"), r.stderr
    r = run(*args, "check", env=target.env)
    assert r.code == 0, r.stderr + r.out
    r = run(*args, *unsafe, "gc", "--json", env=target.env)
    assert r.code == 0 and '"deleted": 0' in r.out, r.stderr + r.out  # default grace: nothing young goes
    r = run(*args, "meta", "get", "ns", "greeting", env=target.env)
    assert (r.code, r.stdout) == (0, b"hello object store"), r.stderr
    r = run(*args, "meta", "get", "ns", "absent", env=target.env)
    assert r.code != 0


@pytest.mark.slow
def test_cli_files_end_to_end(target: Target, cli: object, tmp_path: Path) -> None:
    """backup, restore, forget, gc and check --read-data through the CLI on each shared storage."""
    if target.url is None:
        pytest.skip("the in-memory backend lives in one process; the CLI runs in another")
    if not target.conditional:
        pytest.skip(f"{target.name}: one shell process per object makes this a minute-long run; "
                    "test_cli_end_to_end covers its CLI path")
    run = cli  # type: ignore[assignment]
    args = target.cli_args()

    def ok(*more: str) -> Any:
        r = run(*args, *more, env=target.env)
        assert r.code == 0, (more, r.stderr)
        return r

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n" * 1000)
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    ok("init")
    first = ok("-q", "backup", str(src)).out.strip()
    (src / "sub" / "b.bin").write_bytes(os.urandom(200_000))  # the first version's chunks become garbage
    second = ok("-q", "backup", str(src)).out.strip()
    assert first and second and first != second
    assert json.loads(ok("forget", first, "--json").out)["removed"] == [first]
    gc = json.loads(ok("gc", "--grace", "0s", "--force", "--keep-last", "1", "--json").out)
    gc2 = json.loads(ok("gc", "--grace", "0s", "--force", "--keep-last", "1", "--json").out)
    assert gc["deleted"] + gc2["deleted"] > 0, (gc, gc2)  # the forgotten snapshot's data is gone
    ok("check", "--read-data")
    ok("restore", "latest", "--target", str(tmp_path / "out"))
    restored = tmp_path / "out" / src.relative_to(src.anchor)
    assert (restored / "a.txt").read_bytes() == (src / "a.txt").read_bytes()
    assert (restored / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    r = run(*args, "restore", first, "--target", str(tmp_path / "gone"), env=target.env)
    assert r.code != 0  # forgotten and collected: a loud error, not an empty restore
