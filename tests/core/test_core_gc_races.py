"""Deterministic interleavings of writers, readers and GC, driven step by step.

Each test replays one race the protocol must win (spec §8-§9): dedup against a condemned or
sweeping blob (the "fossil" race), a commit blocked by a sweep, a reader validating its pin
while GC moves, and a sweep interrupted and finished by the next GC.
"""
from __future__ import annotations

from typing import Any, Generator

import pytest

from helpers_common import blob_stored, head_location
from helpers_core import FakeClock
from casbackup.check import check
from casbackup.codec import BlobType, Ref, blob_id
from casbackup.errors import CommitConflict
from casbackup.gc import Collector
from casbackup.gcstate import load_gcstate
from casbackup.repository import Repository, Step

GRACE = 100.0
X = b"the chunk everybody dedups against " * 50
XREF = Ref(BlobType.CHUNK, blob_id(BlobType.CHUNK, X))


def until(steps: Generator[str, None, Any], name: str) -> None:
    """Advance a step generator until it has yielded `name`."""
    for step in steps:
        if step == name:
            return
    raise AssertionError(f"steps finished before {name!r}")


def finish(steps: Generator[str, None, Any]) -> Any:
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def orphan_x_and_condemn(clock: FakeClock, repo: Repository) -> str:
    """Commit X, drop it, let a GC condemn its pack, and let the grace period pass; returns the
    pack as gc names it (format v2: gc condemns and deletes packs, not blobs)."""
    with repo.transaction() as txn:
        txn.put("data", "x", b"x", refs=[txn.put_blob(BlobType.CHUNK, X).ref])
    repo.commit(deletes=[("data", "x")])
    xm = "pack:" + head_location(repo, XREF.id).pack
    clock.advance(GRACE + 1)
    Collector(repo, grace=GRACE, keep_last=1, force=True).run()
    root, _ = repo.read_root()
    assert xm in load_gcstate(repo.store, root.condemned)
    clock.advance(GRACE + 1)
    return xm


def gc(repo: Repository) -> Generator[str, None, Any]:
    return Collector(repo, grace=GRACE, keep_last=1, force=True).steps()


def head_is_readable(repo: Repository) -> None:
    repo.store.clear_cache()
    report = check(repo, read_data=True)
    assert report.ok, (report.dangling, report.corrupt)


def test_dedup_of_condemned_blob_rescues_it(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    xm = orphan_x_and_condemn(clock, repo)
    sweep = gc(repo)
    until(sweep, "mark-cas")  # about to re-mark: X is still condemned, not yet announced
    with repo.transaction() as txn:
        res = txn.put_blob(BlobType.CHUNK, X)
        assert res.created is False  # dedup: the condemned blob is reused, not uploaded
        txn.put("data", "again", b"x", refs=[res.ref])
    report = finish(sweep)
    assert xm not in report.deleted_ids
    assert blob_stored(repo, XREF.id)
    head_is_readable(repo)


def test_use_of_condemned_blob_rescues_it(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    xm = orphan_x_and_condemn(clock, repo)
    with repo.transaction() as txn:
        txn.use([XREF])
        txn.put("data", "again", b"x", refs=[XREF])
    root, _ = repo.read_root()
    assert xm not in load_gcstate(repo.store, root.condemned), "the commit did not rescue X's pack"
    report = Collector(repo, grace=GRACE, keep_last=1, force=True).run()
    assert xm not in report.deleted_ids
    head_is_readable(repo)


def test_commit_waits_for_a_sweep_of_its_blob_then_conflicts(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    orphan_x_and_condemn(clock, repo)
    txn = repo.transaction()
    txn.put("data", "again", b"x", refs=[txn.put_blob(BlobType.CHUNK, X).ref])
    sweep = gc(repo)
    until(sweep, "announced")  # X is in the root's sweeping set now
    commit = txn.commit_steps()
    assert next(commit) is Step.WAIT_SWEEP  # blocked while the sweep runs
    finish(sweep)
    with pytest.raises(CommitConflict, match=XREF.id):
        finish(commit)
    head_is_readable(repo)


def test_dedup_during_sweep_committed_after_it_ended(world: tuple[FakeClock, Repository]) -> None:
    """The fossil race: a writer finds X present (create returns False) while a sweep that will
    delete X is running, and commits only after the sweep has ended. The commit must not
    publish a reference to the deleted blob."""
    clock, repo = world
    xm = orphan_x_and_condemn(clock, repo)
    sweep = gc(repo)
    until(sweep, "planned")  # announced, root and pins re-read: X will be deleted
    txn = repo.transaction()
    res = txn.put_blob(BlobType.CHUNK, X)
    assert res.created is False
    txn.put("data", "again", b"x", refs=[res.ref])
    report = finish(sweep)
    assert xm in report.deleted_ids
    with pytest.raises(CommitConflict, match=XREF.id):
        txn.commit()
    head_is_readable(repo)


def test_dedup_before_mark_committed_after_sweep(world: tuple[FakeClock, Repository]) -> None:
    """Same race, wider: the writer dedups before GC even re-marks, and commits after the sweep."""
    clock, repo = world
    xm = orphan_x_and_condemn(clock, repo)
    txn = repo.transaction()
    res = txn.put_blob(BlobType.CHUNK, X)
    assert res.created is False
    txn.put("data", "again", b"x", refs=[res.ref])
    report = Collector(repo, grace=GRACE, keep_last=1, force=True).run()
    if xm in report.deleted_ids:
        with pytest.raises(CommitConflict):
            txn.commit()
    else:
        txn.commit()
    head_is_readable(repo)


def test_reader_refuses_pin_when_gc_collected_its_generation(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    repo.commit(puts=[("data", "a", b"1" * 10000)])
    old_head = repo.read_root()[0].generation
    opener = repo.open_reader_steps("race", 300.0, renew=False)
    assert next(opener) == "root-read"  # the reader resolved the root, but has not pinned yet
    repo.commit(puts=[("data", "a", b"2" * 10000)])
    clock.advance(GRACE + 1)
    Collector(repo, grace=GRACE, keep_last=1, force=True).run()
    clock.advance(GRACE + 1)
    report = Collector(repo, grace=GRACE, keep_last=1, force=True).run()
    assert old_head in report.deleted_ids
    snap = finish(opener)  # pin written for a collected generation: validation must retry
    assert snap.generation.id != old_head
    assert snap.get("data", "a") == b"2" * 10000
    snap.close()


def test_pin_written_during_sweep_protects_its_generation(world: tuple[FakeClock, Repository]) -> None:
    """A reader that pins the head between the announcement and the delete keeps it."""
    clock, repo = world
    repo.commit(puts=[("data", "a", b"1" * 10000)])
    repo.commit(puts=[("data", "b", b"2" * 10000)])
    clock.advance(GRACE + 1)
    Collector(repo, grace=GRACE, keep_last=1, force=True).run()
    clock.advance(GRACE + 1)
    sweep = gc(repo)
    until(sweep, "announce-cas")
    with repo.reader("during sweep") as snap:
        finish(sweep)
        assert snap.get("data", "a") == b"1" * 10000
        assert snap.get("data", "b") == b"2" * 10000


def test_interrupted_sweep_is_finished_but_spares_a_reuploaded_blob(world: tuple[FakeClock, Repository]) -> None:
    """Packs have random names, so only a loose blob (here a PAGE) can be stored again under the
    same key; the S4 guard (stat before delete) must spare it."""
    clock, repo = world
    page = repo.store.put_structured(BlobType.PAGE, [], [0, [["orphan", "k", b"v", None, []]]]).ref.id
    orphan_x_and_condemn(clock, repo)
    sweep = gc(repo)
    until(sweep, "deleted")  # first object gone; then the GC "crashes"
    remaining = set(load_gcstate(repo.store, repo.read_root()[0].sweeping))
    assert page in remaining
    sweep.close()
    if repo.store.exists(page):  # make sure the page is among the deleted, then re-upload it
        repo.store.delete(page)
    assert repo.store.put_structured(BlobType.PAGE, [], [0, [["orphan", "k", b"v", None, []]]]).created
    clock.advance(1)
    report = Collector(repo, grace=GRACE, keep_last=1, force=True).run()
    assert report.finished_abandoned_sweep
    assert repo.read_root()[0].sweeping is None
    assert repo.store.exists(page), "a blob stored 1s ago was deleted (grace violated)"
    for member in remaining - {page}:
        assert not repo.store.exists_object(member)
    head_is_readable(repo)


def test_commit_rebases_when_gc_swept_the_state_its_root_named(world: tuple[FakeClock, Repository]) -> None:
    """A commit reads a root whose sweeping set is S; before it loads S, that sweep ends and
    later GCs (grace 0 here, as under --force) collect S itself. The stale root's state being
    gone is no error: the root moved on, so the commit rebases on the new one (CI found this
    race under kill -9 stress, where a rebase's location lookups widen the window)."""
    clock, repo = world
    y = b"a live chunk " * 500
    with repo.transaction() as first:
        first.put("data", "y", b"y", refs=[first.put_blob(BlobType.CHUNK, y).ref])
    orphan_x_and_condemn(clock, repo)
    sweep = gc(repo)
    until(sweep, "announced")
    stale = repo.read_root()[0].sweeping
    assert stale is not None
    txn = repo.transaction()
    txn.put("data", "y again", b"y", refs=[txn.put_blob(BlobType.CHUNK, y).ref])  # live: no grace-0 gc takes it
    plan = txn._locations
    ran: list[bool] = []

    def gc_meanwhile(head: Any) -> Any:
        if not ran:
            ran.append(True)
            finish(sweep)
            for _ in range(3):
                clock.advance(1)
                Collector(repo, grace=0.0, keep_last=1, force=True).run()
            assert not repo.store.exists(stale), "the test needs S collected"
        return plan(head)

    txn._locations = gc_meanwhile  # type: ignore[method-assign]
    txn.commit()
    assert repo.read_root()[0].generation == txn.result.id
    head_is_readable(repo)


def test_gc_prune_commit_does_not_wait_for_its_own_sweep(world: tuple[FakeClock, Repository],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """After pruning X's location, the head's `_blobs` leaf is byte for byte the leaf of the
    generation before X was added, a page this same sweep deletes. gc's prune commit writes it
    anew and must not wait for the sweep it belongs to (it once waited COMMIT_TIMEOUT, then
    failed)."""
    import casbackup.transaction as transaction
    monkeypatch.setattr(transaction, "COMMIT_TIMEOUT", 3.0)
    clock, repo = world
    y = b"a live chunk " * 500
    with repo.transaction() as first:
        first.put("data", "y", b"y", refs=[first.put_blob(BlobType.CHUNK, y).ref])
    xm = orphan_x_and_condemn(clock, repo)
    report = Collector(repo, grace=GRACE, keep_last=1, force=True).run()
    assert xm in report.deleted_ids
    assert head_location(repo, XREF.id) is None
    assert repo.read_root()[0].sweeping is None
    head_is_readable(repo)
