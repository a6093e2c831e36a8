"""A late pin (FORMAT.md §9.1, §9.4 step 5, §9.6): a reader that resolved the root, then stalled
across a whole condemn-and-sweep before writing its pin, holds a live pin on a generation gc has
already collected in part. gc does not honour a pin below the root's retain floor, so the pin
must not stop it; the reader refuses the pin at validation and pins the head instead.

Found by the stronger state machine (tests/core/test_core_stateful.py): gc walked the retained
chain down to the late pin and stopped with BlobMissing until the reader resumed or the pin
expired.
"""
from __future__ import annotations

from typing import Any, Generator

import pytest

from helpers_core import FakeClock
from casbackup.errors import BlobMissing, LeaseExpired
from casbackup.gc import Collector
from casbackup.pins import list_pins
from casbackup.reach import Reachability, honoured
from casbackup.reader import Reader
from casbackup.records import Generation
from casbackup.repository import Repository
from casbackup.steps import Step

GRACE = 10.0


def _gc(repo: Repository) -> Collector:
    return Collector(repo, grace=GRACE, keep_last=1, force=True)


def _finish(opener: Generator[Step, None, Reader]) -> Reader:
    while True:
        try:
            next(opener)
        except StopIteration as stop:
            return stop.value


def _partly_collected(clock: FakeClock, repo: Repository) -> tuple[Generation, Generation,
                                                                    Generator[Step, None, Reader]]:
    """Generation 3 reuses generation 1's index page (same content, stored at the start) in a
    blob of its own stored 15 s later; a reader resolves generation 3 and stalls before its pin;
    generation 4 replaces it, and a gc condemns what only older generations reach: the old page
    now, generation 3's own blob (still within the grace period) not yet. Returns generation 3,
    generation 4 and the stalled opener."""
    gen1 = repo.commit(puts=[("ns", "k", b"v1")])
    repo.commit(puts=[("ns", "k", b"v2")])
    clock.advance(15)
    gen3 = repo.commit(puts=[("ns", "k", b"v1")])
    assert gen3.index == gen1.index  # the same page: old, while gen3's own blob is young
    opener = repo.open_reader_steps("late", 5000.0, renew=False)
    assert next(opener) is Step.ROOT_READ  # resolved generation 3; not pinned yet
    gen4 = repo.commit(puts=[("ns", "k", b"v3")])
    _gc(repo).run()  # condemns the old page (and generations 0-2); generation 3's blob is young
    clock.advance(GRACE + 1)
    return gen3, gen4, opener


def _assert_reader_refuses_and_pins_the_head(opener: Generator[Step, None, Reader], gen4: Generation) -> None:
    snap = _finish(opener)
    try:
        assert snap.generation.id == gen4.id  # the late pin was refused, the head pinned instead
        assert snap.get("ns", "k") == b"v3"
    finally:
        snap.close()


def test_a_late_pin_on_a_partly_collected_generation_does_not_stop_gc(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    gen3, gen4, opener = _partly_collected(clock, repo)
    report = _gc(repo).run()  # sweeps the old page: generation 3 is now partly gone
    assert report.deleted > 0
    assert gen3.index is not None and not repo.store.exists(gen3.index.id) and repo.store.exists(gen3.id)
    root, _ = repo.read_root()
    assert root.retain_floor == gen4.seq

    assert next(opener) is Step.PINNED  # the late pin: on generation 3, below the floor
    [late] = [p for p in list_pins(repo.backend) if p.record is not None and p.record.generation == gen3.id]
    assert late.live(clock()) and not honoured(late, root, clock())
    repo.store.clear_cache()
    report = _gc(repo).run()  # before the fix: BlobMissing walking down to generation 3
    assert report.retained_generations == 1
    _assert_reader_refuses_and_pins_the_head(opener, gen4)
    _gc(repo).run()  # and gc goes on afterwards


def test_the_floor_is_published_before_the_first_delete(world: tuple[FakeClock, Repository]) -> None:
    """A gc that dies mid-sweep leaves the sweep to the next gc. The late pin was written after
    the dying sweep read the pins, so only the floor in the root can tell the next gc that
    generation 3 was given up: it is published before anything is deleted."""
    clock, repo = world
    gen3, gen4, opener = _partly_collected(clock, repo)
    assert gen3.index is not None
    sweep = _gc(repo).steps()
    step: Any = None
    while step is not Step.PLANNED:  # announced; root and pins re-read; about to delete
        step = next(sweep)
    assert repo.read_root()[0].retain_floor == gen4.seq
    assert next(opener) is Step.PINNED  # the late pin, after the sweep read the pins
    while repo.store.exists(gen3.index.id):
        step = next(sweep)
        assert step is Step.DELETED
    sweep.close()  # gc dies mid-sweep (its lease is released): the root still names the sweep
    assert repo.read_root()[0].sweeping is not None
    repo.store.clear_cache()
    report = _gc(repo).run()  # finishes the sweep; before the fix: BlobMissing
    assert report.finished_abandoned_sweep
    assert repo.read_root()[0].sweeping is None
    _assert_reader_refuses_and_pins_the_head(opener, gen4)


def test_a_pin_at_the_floor_is_still_walked_in_full(world: tuple[FakeClock, Repository]) -> None:
    """Only pins below the floor are passed over: a validated reader's pin is at or above it, and
    what it names is still read strictly (a missing blob there stops gc, S5)."""
    clock, repo = world
    repo.commit(puts=[("ns", "k", b"v1")])
    snap = repo.open_reader("validated", 5000.0, renew=False)
    try:
        repo.commit(puts=[("ns", "k", b"v2")])
        clock.advance(GRACE + 1)
        _gc(repo).run()
        clock.advance(GRACE + 1)
        assert _gc(repo).run().deleted > 0
        root, _ = repo.read_root()
        assert root.retain_floor == snap.generation.seq  # the sweep kept the pinned generation
        [pin] = [p for p in list_pins(repo.backend) if p.record is not None and p.record.seq == snap.generation.seq]
        assert honoured(pin, root, clock())
        assert snap.get("ns", "k") == b"v1"
        index = snap.generation.index
        assert index is not None
        repo.store.delete(index.id)  # damage under a validated pin
        repo.store.clear_cache()
        with pytest.raises(BlobMissing):
            Reachability(repo).walk_root(root, list_pins(repo.backend), clock(), keep_last=1)
    finally:
        snap.close()


def test_attach_refuses_a_late_pin(world: tuple[FakeClock, Repository]) -> None:
    """Borrowing a pin gc does not honour would read a partly collected generation."""
    clock, repo = world
    gen3, gen4, opener = _partly_collected(clock, repo)
    _gc(repo).run()
    assert next(opener) is Step.PINNED
    [late] = [p for p in list_pins(repo.backend) if p.record is not None and p.record.generation == gen3.id]
    assert late.record is not None
    with pytest.raises(LeaseExpired, match="below the retain floor"):
        repo.attach(late.record.pin_id)
    _assert_reader_refuses_and_pins_the_head(opener, gen4)
