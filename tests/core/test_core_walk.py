"""The shared walks (casbackup/walk.py): the generation chain with the one retain_floor rule, and
the reachability walk with its hooks, as gc, check, repair and log use them."""
from __future__ import annotations

from typing import Any

import pytest

from helpers_common import head_location
from helpers_core import FakeClock
from casbackup.check import check
from casbackup.codec import BlobType, Ref
from casbackup.errors import BlobCorrupt, BlobMissing
from casbackup.gc import Collector
from casbackup.pins import list_pins
from casbackup.reach import Reachability
from casbackup.records import Generation
from casbackup.repository import Repository
from casbackup.layout import pack_key
from casbackup.walk import Walker, below_floor, chain

HOUR = 3600.0


# ---- the chain ------------------------------------------------------------------------------

def _gens(*seqs: int) -> dict[str, Generation]:
    """Generations g<seq>, each the parent of the next (seqs given oldest first)."""
    out: dict[str, Generation] = {}
    parent: str | None = None
    for seq in seqs:
        gid = f"g{seq}"
        out[gid] = Generation(gid, seq, parent, None, 0, 0.0, "w", "")
        parent = gid
    return out


def _loader(gens: dict[str, Generation], corrupt: set[str] = set()):  # noqa: B006 - read only
    def load(gen_id: str) -> Generation:
        if gen_id in corrupt:
            raise BlobCorrupt(gen_id, "bad bytes")
        if gen_id not in gens:
            raise BlobMissing(gen_id)
        return gens[gen_id]
    return load


def test_below_floor_is_the_spec_rule() -> None:
    # gc keeps every generation with seq >= retain_floor (FORMAT.md §9.1, §9.4 step 6)
    assert not below_floor(3, 3) and below_floor(2, 3) and not below_floor(0, 0)


def test_chain_is_newest_first_and_ends_at_the_first_generation() -> None:
    gens = _gens(0, 1, 2, 3)
    assert [g.seq for g in chain(_loader(gens), "g3", 0)] == [3, 2, 1, 0]
    assert [g.seq for g in chain(_loader(gens), gens["g2"], 0)] == [2, 1, 0]  # a loaded start is not reloaded


def test_chain_reports_a_missing_parent_with_its_child_and_the_floor_rule() -> None:
    gens = _gens(1, 2, 3, 4, 5)
    seen: list[tuple[str, int | None, bool]] = []

    def missing(gen_id: str, child: Generation | None, below: bool, _exc: BlobMissing) -> None:
        seen.append((gen_id, child.seq if child else None, below))

    del gens["g2"]  # the parent of seq 3: below a floor of 3
    assert [g.seq for g in chain(_loader(gens), "g5", 3, on_missing=missing)] == [5, 4, 3]
    assert seen == [("g2", 3, True)]
    seen.clear()
    assert [g.seq for g in chain(_loader(gens), "g5", 2, on_missing=missing)] == [5, 4, 3]
    assert seen == [("g2", 3, False)]  # seq 2 is at the floor: gc promised to keep it
    seen.clear()
    assert list(chain(_loader(gens), "g2", 0, on_missing=missing)) == []
    assert seen == [("g2", None, False)]  # the start itself: never below the floor
    with pytest.raises(BlobMissing):
        list(chain(_loader(gens), "g5", 3))  # no hook: it raises


def test_chain_reports_corrupt_generations_and_broken_links() -> None:
    gens = _gens(1, 2, 3)
    bad: list[tuple[str, str]] = []

    def corrupt(gen_id: str, exc: Exception) -> None:
        bad.append((gen_id, str(getattr(exc, "reason", exc))))

    assert [g.seq for g in chain(_loader(gens, {"g1"}), "g3", 0, on_corrupt=corrupt)] == [3, 2]
    assert bad == [("g1", "bad bytes")]
    with pytest.raises(BlobCorrupt):
        list(chain(_loader(gens, {"g1"}), "g3", 0))
    gens["g3"] = Generation("g3", 7, "g2", None, 0, 0.0, "w", "")  # names a parent with the wrong seq
    assert [g.seq for g in chain(_loader(gens), "g3", 0)] == [7, 2, 1]  # links unchecked by default
    bad.clear()
    assert [g.seq for g in chain(_loader(gens), "g3", 0, on_corrupt=corrupt, verify_links=True)] == [7]
    assert bad == [("g3", "generation 7 names a parent with seq 2")]


# ---- the chain as its callers use it ------------------------------------------------------------

def _history(repo: Repository, n: int) -> list[Generation]:
    gens = [repo.commit(puts=[("ns", f"k{i}", bytes([65 + i]) * 5000)]) for i in range(n)]
    return gens


def _set_floor(repo: Repository, floor: int) -> None:
    from dataclasses import replace
    root, etag = repo.read_root()
    repo.backend.compare_and_swap("root", etag, replace(root, retain_floor=floor).encode())


def test_history_missing_below_the_floor_stops_log_gc_and_check_alike(mem_repo: Repository) -> None:
    gens = _history(mem_repo, 5)  # seq 1..5 on top of init's seq 0
    assert [g.seq for g in gens] == [1, 2, 3, 4, 5]
    _set_floor(mem_repo, 3)
    mem_repo.store.delete(gens[1].id)  # seq 2, below the floor: collected as promised
    mem_repo.store.clear_cache()
    assert [g.seq for g in mem_repo.log()] == [5, 4, 3]
    reach = Reachability(mem_repo)
    kept = reach.retained_generations(mem_repo.read_root()[0], [], mem_repo.backend.now(), keep_last=10)
    assert [g.seq for g in kept] == [5, 4, 3]
    report = check(mem_repo)
    assert report.ok and report.generations_checked == 3 and report.history_collected_below_seq == 3
    assert report.dangling == [] and report.collected_during_check == 0


def test_history_missing_at_the_floor_is_damage_for_gc_and_check(mem_repo: Repository) -> None:
    gens = _history(mem_repo, 5)
    _set_floor(mem_repo, 3)
    mem_repo.store.delete(gens[2].id)  # seq 3: at the floor, gc promised to keep it
    mem_repo.store.clear_cache()
    assert [g.seq for g in mem_repo.log()] == [5, 4]  # log shows what is there
    reach = Reachability(mem_repo)
    with pytest.raises(BlobMissing):
        reach.retained_generations(mem_repo.read_root()[0], [], mem_repo.backend.now(), keep_last=10)
    # enough generations kept, and no pin to walk down to: gc needs nothing further down
    kept = reach.retained_generations(mem_repo.read_root()[0], [], mem_repo.backend.now(), keep_last=2)
    assert [g.seq for g in kept] == [5, 4]
    report = check(mem_repo)
    assert not report.ok and report.history_collected_below_seq is None
    assert [(p.blob, p.generation, p.reason) for p in report.dangling] == [(gens[2].id, gens[3].id,
                                                                          "generation is missing")]


def test_gc_walking_down_to_a_pin_tolerates_history_collected_above_it(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    gens = _history(repo, 1)
    snap = repo.open_reader("pins seq 1")
    try:
        gens += _history(repo, 3)
        repo.store.delete(gens[1].id)  # seq 2: collected before the pin on seq 1 was honoured
        repo.store.clear_cache()
        reach = Reachability(repo)
        root, pins = repo.read_root()[0], list_pins(repo.backend)
        assert [g.seq for g in reach.retained_generations(root, pins, clock(), keep_last=2)] == [4, 3]
        with pytest.raises(BlobMissing):  # keep_last itself needs seq 2
            reach.retained_generations(root, pins, clock(), keep_last=3)
    finally:
        snap.close()


# ---- the reachability walk ----------------------------------------------------------------------

def _graph(repo: Repository) -> dict[str, Ref]:
    """a and b both name the shared tree s, which names chunk c; b also names chunk d. Each blob
    is alone in its pack (flushed one by one), so a test can lose or damage one of them."""
    with repo.transaction() as txn:
        def put(blob_type: BlobType, refs: list[Ref] | None, body: Any) -> Ref:
            ref = (txn.put_blob(blob_type, body) if refs is None else txn.put_structured(blob_type, refs, body)).ref
            txn.flush()
            return ref
        c = put(BlobType.CHUNK, None, b"shared chunk")
        d = put(BlobType.CHUNK, None, b"b's own chunk")
        s = put(BlobType.TREE, [c], {"name": "s"})
        a = put(BlobType.TREE, [s], {"name": "a"})
        b = put(BlobType.TREE, [s, d], {"name": "b"})
    return {"a": a, "b": b, "s": s, "c": c, "d": d}


def _lose(repo: Repository, ref: Ref) -> None:
    repo.store.delete_pack(head_location(repo, ref.id).pack)


class _Log:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.reads: list[str] = []
        self.raw: list[str] = []
        self.missing: list[tuple[str, Any]] = []
        self.corrupt: list[tuple[str, str, Any]] = []

    def read(self, ref: Ref, gen: str | None) -> tuple[list[Ref], Any]:
        self.reads.append(ref.id)
        return self.repo.store.get_structured(ref, gen or self.repo.read_root()[0].generation, cache=False)

    def on_raw(self, ref: Ref, gen: str | None) -> None:
        self.raw.append(ref.id)
        self.repo.store.get(ref, gen or self.repo.read_root()[0].generation)

    def on_missing(self, ref: Ref, _exc: BlobMissing, owner: Any) -> None:
        self.missing.append((ref.id, owner))

    def on_corrupt(self, ref: Ref, exc: Exception, owner: Any) -> None:
        self.corrupt.append((ref.id, str(getattr(exc, "reason", exc)), owner))

    def walker(self, **kw: Any) -> Walker:
        return Walker(self.read, on_raw=self.on_raw, on_missing=self.on_missing, on_corrupt=self.on_corrupt, **kw)


def test_a_shared_subtree_is_visited_once_even_across_walks(mem_repo: Repository) -> None:
    g, log = _graph(mem_repo), _Log(mem_repo)
    w = log.walker()
    w.walk([g["a"], g["b"]])
    assert sorted(log.reads) == sorted([g["a"].id, g["b"].id, g["s"].id])
    assert sorted(log.raw) == sorted([g["c"].id, g["d"].id])
    assert w.seen == {r.id for r in g.values()}
    w.walk([g["b"]], owner="again")
    assert len(log.reads) == 3 and len(log.raw) == 2  # nothing new to read
    assert log.missing == log.corrupt == []


def test_a_missing_blob_reaches_on_missing_with_its_owner_and_the_walk_goes_on(mem_repo: Repository) -> None:
    g, log = _graph(mem_repo), _Log(mem_repo)
    _lose(mem_repo, g["s"])
    _lose(mem_repo, g["d"])
    w = log.walker()
    w.walk([g["b"]], owner="entry b")
    assert sorted(log.missing) == sorted([(g["s"].id, "entry b"), (g["d"].id, "entry b")])
    assert g["c"].id not in w.seen  # below the missing tree: cannot be walked
    with pytest.raises(BlobMissing):
        Walker(log.read).walk([g["a"]])  # no hook: a missing blob stops the walk


def test_a_corrupt_blob_reaches_on_corrupt_and_a_bad_body_is_still_descended(mem_repo: Repository) -> None:
    g, log = _graph(mem_repo), _Log(mem_repo)
    mem_repo.backend.raw_put(pack_key(head_location(mem_repo, g["a"].id).pack), b"not a blob")  # type: ignore[attr-defined]

    def body(ref: Ref, refs: list[Ref], b: Any, _gen: str | None) -> None:
        if b.get("name") == "b":
            raise BlobCorrupt(ref.id, "b's body is wrong")

    w = log.walker(on_body=body)
    w.walk([g["a"], g["b"]], owner="o")
    assert [(i, o) for i, _r, o in log.corrupt] == [(g["b"].id, "o"), (g["a"].id, "o")]
    assert log.corrupt[0][1] == "b's body is wrong"
    assert {g["s"].id, g["c"].id, g["d"].id} <= w.seen  # what b names is walked and judged on its own
    with pytest.raises(BlobCorrupt):
        Walker(log.read).walk([g["a"]])


def test_on_blob_false_makes_a_leaf(mem_repo: Repository) -> None:
    g, log = _graph(mem_repo), _Log(mem_repo)
    w = log.walker(on_blob=lambda ref: ref.id != g["s"].id)
    w.walk([g["a"]])
    assert log.reads == [g["a"].id] and g["s"].id in w.seen and g["c"].id not in w.seen


# ---- gc's mark through the walk: S4 ---------------------------------------------------------------

def test_gc_never_deletes_what_a_pinned_generation_reaches(mem_repo: Repository) -> None:
    repo = mem_repo
    repo.commit(puts=[("ns", "old", b"O" * 20000)])  # a VALUE blob only this generation reaches
    snap = repo.open_reader("slow restore")
    old_value = snap.get("ns", "old")
    old_entry = snap.entry("ns", "old")
    assert old_entry is not None and old_entry.value_ref is not None
    for i in range(4):
        repo.commit(puts=[("ns", f"n{i}", b"x")], deletes=[("ns", "old")] if i == 0 else [])
    report = Collector(repo, grace=0, force=True, keep_last=1).run()
    assert report.retained_generations == 5  # head back to the pinned generation
    old_pack = "pack:" + head_location(repo, old_entry.value_ref.id).pack  # format v2: gc deletes packs
    assert report.deleted > 0 and old_pack not in report.deleted_ids
    assert snap.get("ns", "old") == old_value  # S4: the pin kept its generation whole
    assert check(repo).ok
    snap.close()
    report = Collector(repo, grace=0, force=True, keep_last=1).run()
    assert old_pack in report.deleted_ids  # unpinned: the old value goes
    assert check(repo).ok
