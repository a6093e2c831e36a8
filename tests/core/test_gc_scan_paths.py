"""gc's two scans at scale (FORMAT.md §12.7.7): a walk that has located many structured blobs by
descent switches to one scan of its generation's `_blobs` (structmap.StructuredLocations), and
one scan of `_blobs` answers every live-pack question the mark asks (reach.live_packs_tiers).
Both must change nothing but the time: the same marks, the same errors, the same report."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from helpers_core import FakeClock
from casbackup import structmap
from casbackup.btree import Entry
from casbackup.check import check
from casbackup.chunklist import Piece, leaf_body
from casbackup.codec import BlobType, Ref, encode_blob
from casbackup.errors import BlobMissing
from casbackup.gc import Collector
from casbackup.markset import StagedMarks
from casbackup.packs import LOCATIONS_NAMESPACE
from casbackup.pins import list_pins
from casbackup.reach import STAGE_REST, Reachability, live_packs, live_packs_tiers
from casbackup.records import Generation
from casbackup.repository import Repository
from casbackup.steps import Step

HOUR = 3600.0


def _files(repo: Repository, namespace: str, count: int, per_file: int = 4) -> tuple[list[Ref], list[Ref]]:
    """`count` entries, each naming one FILE blob of `per_file` chunks: (files, chunks)."""
    files: list[Ref] = []
    chunks: list[Ref] = []
    with repo.transaction() as txn:
        for n in range(count):
            pieces = []
            for k in range(per_file):
                data = f"{namespace} {n} {k}".encode()
                pieces.append(Piece(txn.put_blob(BlobType.CHUNK, data).ref.id, len(data)))
            refs, body = leaf_body(pieces)
            ref = txn.put_structured(BlobType.FILE, refs, body).ref
            txn.put(namespace, f"f{n:05d}", b"", refs=[ref])
            files.append(ref)
            chunks += refs
            if n % 40 == 39:
                txn.flush()
    return files, chunks


def _head(repo: Repository) -> Generation:
    root, _ = repo.read_root()
    return repo.load_generation(root.generation)


def _force_scan(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    """on: every walk builds its map at the first structured blob; off: never."""
    monkeypatch.setattr(structmap, "SCAN_AFTER_MIN", 0 if on else 10**12)
    monkeypatch.setattr(structmap, "SCAN_AFTER_SHARE", 0.0 if on else 1.0)


def test_the_map_holds_exactly_the_generations_own_structured_locations(world: tuple[FakeClock, Repository]) -> None:
    _, repo = world
    files, chunks = _files(repo, "f", 120)
    head = _head(repo)
    located = structmap.StructuredLocations(repo, head)
    assert len(located) == len(files)  # no CHUNK kept
    for ref in files:
        assert located.get(ref.id) == repo.locate(head.id, ref.id)
    assert all(located.get(r.id) is None for r in chunks[::7])
    assert located.get("00" * 32) is None and located.get("not hex") is None
    assert located.nbytes == 57 * len(files)


def test_an_undecodable_location_is_left_out_so_the_walk_reports_it_by_descent(
        world: tuple[FakeClock, Repository], monkeypatch: pytest.MonkeyPatch) -> None:
    _, repo = world
    files, _ = _files(repo, "f", 10)
    good = files[0].id
    bad = "00" * 32  # first in ID order, as a real scan would meet it
    scan = structmap._locations

    def entries(_repo: Repository, gen: Generation) -> Iterator[Entry]:
        yield Entry(LOCATIONS_NAMESPACE, bad, b"\x94\x07junk", None, ())
        yield from scan(_repo, gen)

    monkeypatch.setattr(structmap, "_locations", entries)
    located = structmap.StructuredLocations(repo, _head(repo))
    assert located.get(bad) is None and located.get(good) is not None


def _mark(repo: Repository, clock: FakeClock) -> Reachability:
    root, _ = repo.read_root()
    reach = Reachability(repo, raw=StagedMarks(STAGE_REST + 1))
    reach.walk_root(root, list_pins(repo.backend), clock(), keep_last=3)
    return reach


def test_a_walk_through_the_map_marks_what_a_walk_by_descent_marks(
        world: tuple[FakeClock, Repository], monkeypatch: pytest.MonkeyPatch) -> None:
    clock, repo = world
    files, chunks = _files(repo, "a", 150)
    later, later_chunks = _files(repo, "b", 30)
    with repo.transaction() as txn:
        for n in range(0, 150, 3):
            txn.delete("a", f"f{n:05d}")
    _force_scan(monkeypatch, False)
    plain = _mark(repo, clock)
    assert plain._map is None
    _force_scan(monkeypatch, True)
    repo.store.clear_cache()
    mapped = _mark(repo, clock)
    assert mapped._map is not None and len(mapped._map) > 0  # the last walked generation's
    assert mapped.seen == plain.seen and mapped.live_bytes == plain.live_bytes
    for ref in files + later + chunks + later_chunks:
        assert (ref.id in mapped) == (ref.id in plain)


def test_gc_with_the_map_collects_the_same_and_leaves_a_sound_repository(
        world: tuple[FakeClock, Repository], monkeypatch: pytest.MonkeyPatch) -> None:
    clock, repo = world
    _force_scan(monkeypatch, True)
    files, chunks = _files(repo, "a", 200)
    with repo.transaction() as txn:
        for n in range(0, 200):
            if n % 40 < 30:  # most of four packs' files: three packs repacked or wholly dead
                txn.delete("a", f"f{n:05d}")
    for k in range(3):
        repo.commit(puts=[("x", f"k{k}", b"v")])
    clock.advance(100 * HOUR)
    report = Collector(repo, grace=0, keep_last=1, force=True).run()
    assert report.deleted > 0
    assert check(repo, read_data=True).ok
    with repo.reader() as snap:
        kept = [e.key for e in snap.list("a")]
        assert len(kept) == 50
        for e in snap.list("a"):
            assert snap.read_structured(e.refs[0])


@pytest.mark.parametrize("scan", [True, False], ids=["map", "descent"])
def test_a_missing_metadata_pack_stops_gc_either_way(world: tuple[FakeClock, Repository],
                                                     monkeypatch: pytest.MonkeyPatch, scan: bool) -> None:
    clock, repo = world
    _force_scan(monkeypatch, scan)
    files, _ = _files(repo, "a", 60)
    head = _head(repo)
    loc = repo.locate(head.id, files[17].id)
    assert loc is not None
    repo.store.delete_pack(loc.pack)
    repo.store.clear_cache()
    clock.advance(100 * HOUR)
    with pytest.raises(BlobMissing):
        Collector(repo, grace=0, keep_last=1, force=True).run()


def test_one_scan_answers_every_tier_as_separate_scans_do(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    _files(repo, "a", 120)
    with repo.transaction() as txn:
        for n in range(0, 120, 2):
            txn.delete("a", f"f{n:05d}")
    _files(repo, "b", 40)
    reach = _mark(repo, clock)
    gens = reach.pack_generations
    assert len(gens) == 3
    head_only = Reachability(repo, raw=StagedMarks(STAGE_REST + 1))
    head_only.walk([Ref(BlobType.GENERATION, gens[0].id)], gens[0].id)
    tiers: list[tuple[int, Any]] = [(3, reach), (1, head_only), (2, reach), (1, reach)]
    together = live_packs_tiers(repo, gens, tiers)
    apart = [live_packs(repo, gens[:n], reached) for n, reached in tiers]
    assert together == apart
    assert together[0] != together[1]  # the tiers differ here: the test can tell them apart


def test_the_collector_drops_the_marks_before_its_sweep_walks_again(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    _files(repo, "a", 80)
    with repo.transaction() as txn:
        for n in range(40):  # the first pack's files: a dead pack to sweep
            txn.delete("a", f"f{n:05d}")
    clock.advance(100 * HOUR)
    collector = Collector(repo, grace=0, keep_last=1, force=True)
    seen = []
    for step in collector.steps():
        seen.append(step)
        if step is Step.MARK_CAS:
            assert collector._reach is not None
        if step is Step.ANNOUNCED:
            assert collector._reach is None and collector._listing == {}
    assert Step.ANNOUNCED in seen and collector.report.deleted > 0


def test_the_prune_keeps_a_location_a_writer_moved_to_its_own_pack_meanwhile(world: tuple[FakeClock, Repository]) -> None:
    """§12.7.5 at rebase: gc deleted pack P (X was dead in it) and is about to forget X's entry;
    meanwhile a writer stores X anew in its own pack (as one whose base did not locate X would)
    and commits. The prune must keep the writer's entry (it no longer names P) and still drop
    the other stale ones."""
    clock, repo = world
    keep, _ = _files(repo, "keep", 10)
    x = b"the chunk stored twice " * 40
    with repo.transaction() as txn:
        xref = txn.put_blob(BlobType.CHUNK, x).ref
        txn.put("gone", "x", b"", refs=[xref])
        others = [txn.put_blob(BlobType.CHUNK, f"dead {n}".encode()).ref for n in range(30)]
        txn.put("gone", "others", b"", refs=others)
    old = repo.locate(_head(repo).id, xref.id)
    assert old is not None
    with repo.transaction() as txn:
        txn.delete("gone", "x")
        txn.delete("gone", "others")
    for k in range(2):
        repo.commit(puts=[("pad", f"k{k}", b"v")])
    clock.advance(100 * HOUR)
    writer = repo.transaction("writer")
    gc = Collector(repo, grace=0, keep_last=1, force=True)
    steps = gc.steps()
    for step in steps:
        if step is Step.PRUNE_COMMIT:
            break
    else:
        raise AssertionError("gc never reached its prune commit")
    assert repo.store.stat_pack(old.pack) is None  # deleted; its entries still in the head
    writer._append(encode_blob(BlobType.CHUNK, x, repo.store.level))  # stored anew, in its own pack
    writer.put("again", "x", b"", refs=[xref])
    writer.commit()
    for _ in steps:
        pass
    head = _head(repo)
    now = repo.locate(head.id, xref.id)
    assert now is not None and now.pack != old.pack  # the writer's copy, kept
    assert all(repo.locate(head.id, r.id) is None for r in others)  # the rest forgotten
    with repo.reader() as snap:
        assert snap.read_blob(xref) == x
        assert all(snap.read_structured(ref) for ref in keep)
    assert check(repo, read_data=True).ok


def test_the_prune_forgets_in_batches_what_one_batch_would(world: tuple[FakeClock, Repository],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import casbackup.transaction as transaction
    monkeypatch.setattr(transaction, "FORGET_BATCH", 7)
    clock, repo = world
    _files(repo, "keep", 40)
    dead, dead_chunks = _files(repo, "dead", 80)
    with repo.transaction() as txn:
        for n in range(80):
            txn.delete("dead", f"f{n:05d}")
    clock.advance(100 * HOUR)
    report = Collector(repo, grace=0, keep_last=1, force=True).run()
    assert report.deleted > 0
    head = _head(repo)
    assert all(repo.locate(head.id, r.id) is None for r in dead + dead_chunks)
    assert check(repo, read_data=True).ok
