"""gc's mark in bounded memory (FORMAT.md §12.7.7): raw blobs are marked in a compact prefix set,
not in a per-blob Python set, and a prefix collision only ever keeps a dead blob."""
from __future__ import annotations

import tracemalloc

import pytest

from helpers_core import FakeClock
from casbackup import markset
from casbackup.check import check
from casbackup.codec import BlobType, Ref
from casbackup.gc import Collector
from casbackup.markset import PrefixSet, StagedMarks
from casbackup.pins import list_pins
from casbackup.reach import STAGE_REST, Reachability
from casbackup.repository import Repository
from casbackup.steps import Step, run_steps
from casbackup.store import pack_member

HOUR = 3600.0


def _chunks(repo: Repository, namespace: str, count: int, per_entry: int = 10) -> list[Ref]:
    """`count` small chunks, `per_entry` of them referenced by each entry of `namespace`, in
    one pack per entry group of 50 (flushed), so a repository has several data packs."""
    refs: list[Ref] = []
    with repo.transaction() as txn:
        for n in range(count // per_entry):
            group = [txn.put_blob(BlobType.CHUNK, f"{namespace} {n} {k}".encode()).ref for k in range(per_entry)]
            txn.put(namespace, f"e{n:06d}", b"", refs=group)
            refs += group
            if n % 50 == 49:
                txn.flush()
    return refs


def _with_dead_pack(world: tuple[FakeClock, Repository]) -> tuple[list[Ref], list[Ref]]:
    """Live chunks, and chunks alone in their own pack that nothing references any more."""
    clock, repo = world
    live = _chunks(repo, "live", 200)
    dead = _chunks(repo, "dead", 20)
    with repo.transaction() as txn:
        for n in range(2):
            txn.delete("dead", f"e{n:06d}")
    clock.advance(100 * HOUR)
    return live, dead


def _pack_of(repo: Repository, blob_id: str) -> str:
    root, _ = repo.read_root()
    loc = repo.locate(root.generation, blob_id)
    assert loc is not None
    return loc.pack


def test_the_mark_holds_raw_blobs_in_the_prefix_set_and_structured_ones_exactly(
        world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    live, dead = _with_dead_pack(world)
    dead_pack = _pack_of(repo, dead[0].id)
    collector = Collector(repo, grace=0, keep_last=1, force=True)
    steps = collector.steps()
    for step in steps:  # the mark's sets, as the repack reads them (the sweep drops them)
        if step is Step.MARK_CAS:
            reach = collector._marked
            break
    report = run_steps(steps)
    assert collector._reach is None  # dropped before the sweep's own walk
    assert not any(r.id in reach.seen for r in live + dead)  # no chunk in the exact set
    assert all(r.id in reach for r in live) and not any(r.id in reach for r in dead)
    assert isinstance(reach.raw, StagedMarks) and all(isinstance(s, PrefixSet) for s in reach.raw.sets)
    assert reach.raw.nbytes == 8 * len(reach.raw) and len(reach.raw) >= len(live)
    assert len(reach.seen) < len(live) / 10  # pages, the generation, live packs
    assert pack_member(dead_pack) in report.deleted_ids and pack_member(_pack_of(repo, live[0].id)) in reach
    assert check(repo).ok


def test_a_walk_of_many_chunks_costs_bytes_not_a_python_set_per_chunk(world: tuple[FakeClock, Repository]) -> None:
    """tracemalloc over the mark of 6,000 chunks: what the Reachability holds after the walk is
    ~8 bytes per chunk plus the fixed cost of its 3 x 256 empty arrays (~25 bytes a chunk here,
    all told); an exact set of chunk IDs took ~215."""
    clock, repo = world
    live = _chunks(repo, "live", 6_000, per_entry=20)
    root, _ = repo.read_root()
    pins = list_pins(repo.backend)
    repo.store.clear_cache()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reach = Reachability(repo, raw=StagedMarks(STAGE_REST + 1))  # as gc's mark makes it
        reach.walk_root(root, pins, clock(), keep_last=1)
        repo.store.clear_cache()  # decoded pages are the cache's (bounded), not the mark's
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert all(r.id in reach for r in live[::97])
    assert held < 40 * len(live) + 100_000, f"{held / len(live):.1f} bytes per chunk"


def test_a_prefix_collision_keeps_a_dead_pack_never_loses_a_live_one(world: tuple[FakeClock, Repository],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    clock, repo = world
    live, dead = _with_dead_pack(world)
    dead_pack = _pack_of(repo, dead[0].id)
    with monkeypatch.context() as m:
        m.setattr(markset, "_prefix", lambda blob_id: 0)  # every raw ID collides with every other
        report = Collector(repo, grace=0, keep_last=1, force=True).run()
    assert pack_member(dead_pack) not in report.deleted_ids  # looks live: kept (safe)
    assert repo.store.stat_pack(dead_pack) is not None
    assert check(repo).ok
    clock.advance(HOUR)
    report = Collector(repo, grace=0, keep_last=1, force=True).run()  # exact prefixes: it goes
    assert pack_member(dead_pack) in report.deleted_ids and repo.store.stat_pack(dead_pack) is None
    assert check(repo).ok
    with repo.reader() as snap:
        assert len(list(snap.list("live"))) == 20


def test_the_prefix_set_takes_adds_after_a_membership_test() -> None:
    """gc's mark extends its set when its root swap loses a race (§9.4 step 2)."""
    marks = PrefixSet()
    a, b = "ab" * 32, "cd" * 32
    marks.add(a)
    assert a in marks and b not in marks
    marks.add(b)
    marks.add(a)
    assert a in marks and b in marks and len(marks) == 2 and "pack:" + a not in marks


def test_a_sparse_pack_is_repacked_from_the_compact_marks(world: tuple[FakeClock, Repository]) -> None:
    """The per-pack tally joins `_blobs` against the prefix marks: a pack a quarter dead is
    repacked (its live chunks moved), then goes once no kept generation locates them in it."""
    clock, repo = world
    live = _chunks(repo, "live", 200)  # one pack
    old_pack = _pack_of(repo, live[0].id)
    with repo.transaction() as txn:
        for n in range(5):
            txn.delete("live", f"e{n:06d}")
    clock.advance(100 * HOUR)
    report = Collector(repo, grace=0, keep_last=1, force=True).run()
    assert report.repacked_packs == 1 and report.repacked_bytes > 0
    kept = live[50:]
    assert all(_pack_of(repo, r.id) != old_pack for r in kept)
    clock.advance(HOUR)
    report = Collector(repo, grace=0, keep_last=1, force=True).run()
    assert pack_member(old_pack) in report.deleted_ids
    assert check(repo).ok
    with repo.reader() as snap:
        for i in range(50, 200, 37):  # _chunks stored chunk k of entry n as "live n k"
            assert snap.read_blob(live[i]) == f"live {i // 10} {i % 10}".encode()
