"""GC rules: grace (condemned for >= grace AND stored for >= grace), keep-last, force,
dry-run, one GC at a time, abandoned sweeps (S4, S7)."""
from __future__ import annotations

import pytest

from helpers_common import blob_stored, head_location, store_orphan
from helpers_core import FakeClock
from casbackup.check import check
from casbackup.codec import BlobType
from casbackup.errors import GcBusy, UsageError
from casbackup.gc import Collector
from casbackup.gcstate import load_gcstate
from casbackup.pins import acquire_gc_lease
from casbackup.repository import Repository

HOUR = 3600.0


def gc(repo: Repository, **kw: object) -> object:
    kw.setdefault("keep_last", 1)
    return Collector(repo, **kw).run()  # type: ignore[arg-type]


def snapshot_of_store(repo: Repository) -> tuple[dict[str, float], bytes]:
    return {i: info.mtime for i, info in repo.store.list_objects()}, repo.backend.get("root")


def test_grace_under_one_hour_needs_force(mem_repo: Repository) -> None:
    with pytest.raises(UsageError, match="--force"):
        Collector(mem_repo, grace=59 * 60)
    Collector(mem_repo, grace=59 * 60, force=True)
    Collector(mem_repo, grace=HOUR)
    with pytest.raises(UsageError):
        Collector(mem_repo, grace=-1, force=True)
    with pytest.raises(UsageError):
        Collector(mem_repo, keep_last=0)


def test_orphan_is_deleted_only_after_being_condemned_for_the_grace_period(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    orphan = store_orphan(repo, b"uploaded, never committed")
    clock.advance(HOUR - 1)
    r = gc(repo, grace=HOUR)
    assert r.blobs_young >= 1 and r.condemned == 0  # stored < grace ago: not even condemned
    clock.advance(2)
    r = gc(repo, grace=HOUR)
    assert r.newly_condemned == 1 and r.deleted == 0  # condemned now; not for long enough
    assert orphan in load_gcstate(repo.store, repo.read_root()[0].condemned)
    clock.advance(HOUR - 1)
    assert gc(repo, grace=HOUR).deleted == 0
    clock.advance(1)
    r = gc(repo, grace=HOUR)
    assert r.deleted_ids == [orphan]
    assert repo.read_root()[0].condemned is None and repo.read_root()[0].sweeping is None


def test_grace_zero_with_force_deletes_in_one_run(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    orphan = store_orphan(repo, b"orphan")
    assert orphan in gc(repo, grace=0, force=True).deleted_ids
    assert check(repo, read_data=True).ok


def test_keep_last_retains_generations(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    gens = [repo.commit(puts=[("n", "k", str(i).encode() * 10000)]) for i in range(5)]
    clock.advance(10)
    r = gc(repo, grace=0, force=True, keep_last=3)
    assert r.retained_generations == 3
    for g in gens[-3:]:
        assert repo.store.exists(g.id)  # GENERATIONs are loose blobs
    for g in gens[:2]:
        assert g.id in r.deleted_ids
    # format v2: the sweep's last commit forgets the locations of the packs it deleted (seq 6)
    assert [g.seq for g in repo.log()] == [6, 5, 4, 3]
    assert check(repo, read_data=True).ok
    with repo.reader() as snap:
        assert snap.get("n", "k") == b"4" * 10000


def test_dry_run_changes_nothing(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    repo.commit(puts=[("n", "k", b"1" * 10000)])
    repo.commit(puts=[("n", "k", b"2" * 10000)])
    store_orphan(repo, b"orphan")
    repo.backend.raw_put("pins/expired", b"junk", mtime=0.0)  # type: ignore[attr-defined]
    clock.advance(10 * HOUR)
    before = snapshot_of_store(repo)
    r = gc(repo, grace=HOUR, dry_run=True)
    assert r.condemned > 0 and r.would_delete == 0  # nothing condemned long enough yet
    assert snapshot_of_store(repo) == before
    assert "pins/expired" in {i.key for i in repo.backend.list("pins/")}  # not cleaned either
    gc(repo, grace=HOUR)  # condemn for real
    clock.advance(2 * HOUR)
    before = snapshot_of_store(repo)
    r = gc(repo, grace=HOUR, dry_run=True)
    assert r.would_delete > 0 and r.deleted == 0
    assert snapshot_of_store(repo) == before


def test_one_gc_at_a_time(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    running = Collector(repo, grace=0, force=True).steps()
    assert next(running) == "lease"
    with pytest.raises(GcBusy):
        gc(repo, grace=0, force=True)
    gc(repo, grace=0, force=True, dry_run=True)  # a dry run takes no lease and changes nothing
    for _ in running:
        pass
    gc(repo, grace=0, force=True)  # released when it finished


def test_expired_gc_lease_is_taken_over(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    dead = acquire_gc_lease(repo.backend, ttl=600, monotonic=clock)
    dead.stop_renewing()  # a GC that was killed
    with pytest.raises(GcBusy):
        gc(repo, grace=0, force=True)
    clock.advance(601)
    gc(repo, grace=0, force=True)


def test_abandoned_sweep_is_finished_by_the_next_gc(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    orphans = [store_orphan(repo, f"orphan {i}".encode()) for i in range(5)]
    clock.advance(10)
    steps = Collector(repo, grace=0, force=True, keep_last=1).steps()
    for step in steps:
        if step == "deleted":
            break
    steps.close()  # stopped after one delete: the root still announces the sweep
    dead = acquire_gc_lease(repo.backend, ttl=600, monotonic=clock)  # as if it had been killed
    dead.stop_renewing()
    root = repo.read_root()[0]
    assert root.sweeping is not None
    assert sum(repo.store.exists_object(o) for o in orphans) == 4
    with pytest.raises(GcBusy):
        gc(repo, grace=0, force=True)  # a killed GC's lease stays until it expires ...
    clock.advance(601)  # ... then the next GC takes it over and finishes the sweep
    r = gc(repo, grace=0, force=True)
    assert r.finished_abandoned_sweep
    assert not any(repo.store.exists_object(o) for o in orphans)
    assert repo.read_root()[0].sweeping is None
    assert check(repo, read_data=True).ok


def test_gc_never_deletes_what_the_head_reaches(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    with repo.transaction() as txn:
        big = txn.put_blob(BlobType.CHUNK, b"file data" * 1000).ref
        txn.put("snap", "s1", b"meta", refs=[big])
        txn.put("n", "large", b"v" * 20000)  # a VALUE blob
    clock.advance(100 * HOUR)
    for _ in range(3):
        gc(repo, grace=0, force=True)
        clock.advance(HOUR)
    assert blob_stored(repo, big.id)
    with repo.reader() as snap:
        assert snap.get("n", "large") == b"v" * 20000
        (e,) = list(snap.list("snap"))
        assert snap.read_blob(e.refs[0]) == b"file data" * 1000


def test_rescued_blob_is_kept_and_counted(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    with repo.transaction() as txn:  # stored and located, then forgotten: its pack is garbage
        x = txn.put_blob(BlobType.CHUNK, b"will be rescued").ref
    pack = "pack:" + head_location(repo, x.id).pack
    clock.advance(2 * HOUR)
    gc(repo, grace=HOUR)
    assert pack in load_gcstate(repo.store, repo.read_root()[0].condemned)
    with repo.transaction() as txn:
        assert txn.put_blob(BlobType.CHUNK, b"will be rescued").created is False  # dedup: the index locates it
        txn.put("n", "k", b"v", refs=[x])
    assert pack not in load_gcstate(repo.store, repo.read_root()[0].condemned)
    clock.advance(2 * HOUR)
    r = gc(repo, grace=HOUR)
    assert pack not in r.deleted_ids and blob_stored(repo, x.id)
