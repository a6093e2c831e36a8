"""A commit whose own pin lapsed while rivals committed and gc collected the history between
(FORMAT.md §7.3, §8.2, §9.1): its root swap must end in a clean LeaseExpired, never in a
BlobMissing from deciding whether it landed, and never in a second copy of a commit that did.

Found by the stronger state machine (tests/core/test_core_stateful.py): a writer's pin (200 s)
lapsed over a 700 s clock jump, its swap got a mismatch, and the read-back walked the head's
chain down to its seq through generations gc had collected.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from helpers_core import FakeClock
from casbackup.backends import MemoryBackend
from casbackup.errors import LeaseExpired, OutcomeUnknown
from casbackup.gc import Collector
from casbackup.layout import ROOT_KEY
from casbackup.repository import Repository
from casbackup.steps import Step

GRACE = 10.0
WRITER_TTL = 200.0


def _collect(clock: FakeClock, repo: Repository) -> None:
    """Two whole gc runs a grace period apart: everything only older generations reach goes."""
    clock.advance(GRACE + 1)
    Collector(repo, grace=GRACE, keep_last=1, force=True).run()
    clock.advance(GRACE + 1)
    assert Collector(repo, grace=GRACE, keep_last=1, force=True).run().deleted > 0


def _drive(steps: Any) -> Any:
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def test_a_mismatch_after_the_pin_lapsed_is_lease_expired(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    txn = repo.transaction("slow writer", ttl=WRITER_TTL)
    txn.put("ns", "mine", b"1")
    steps = txn.commit_steps()
    assert next(steps) is Step.CAS  # planned on generation 0, about to swap
    rivals = [repo.commit(puts=[("ns", f"r{i}", b"x")]) for i in range(3)]
    clock.advance(700)  # our pin lapses; nothing keeps generations 0-2 any more
    _collect(clock, repo)
    assert not repo.store.exists(rivals[0].id)  # history between the head and our seq is gone
    with pytest.raises(LeaseExpired) as err:  # before the fix: BlobMissing from the landing check
        _drive(steps)
    # the mismatch answered our only request: known not published, so no "outcome unknown"
    assert "could be confirmed" not in str(err.value)
    root, _ = repo.read_root()
    assert root.generation == rivals[-1].id  # nothing of ours was published


class _LosesTheRootReply(MemoryBackend):
    """Memory storage whose next root swap applies (or not) and loses its reply; `meanwhile`
    runs in between, as if the reply took that long to be lost."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.lose = False
        self.applied = True
        self.meanwhile: Callable[[], None] = lambda: None

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        if not (self.lose and key == ROOT_KEY):
            return super().compare_and_swap(key, expected_etag, data)
        self.lose = False
        if self.applied:
            super().compare_and_swap(key, expected_etag, data)
        self.meanwhile()
        raise OutcomeUnknown("reply lost for root")


def _world_losing_replies() -> tuple[FakeClock, _LosesTheRootReply, Repository]:
    clock = FakeClock(1_000_000.0)
    backend = _LosesTheRootReply(clock)
    first = Repository.init(backend)
    return clock, backend, Repository(backend, first.config, writable=True, monotonic=clock)


@pytest.mark.parametrize("applied", [True, False])
def test_a_lost_reply_whose_history_was_collected_is_lease_expired_not_a_guess(applied: bool) -> None:
    """The swap's reply is lost; while it is, rivals commit (on top of ours if it applied), the
    pin lapses and gc collects the history between. The read-back cannot see our seq any more:
    the answer is LeaseExpired saying the outcome is unknown, never a rebase that would publish
    our commit a second time, nor a claim that it was published."""
    clock, backend, repo = _world_losing_replies()
    rivals: list[Any] = []

    def meanwhile() -> None:
        rivals.extend(repo.commit(puts=[("ns", f"r{i}", b"x")]) for i in range(3))
        clock.advance(700)
        _collect(clock, repo)

    txn = repo.transaction("slow writer", ttl=WRITER_TTL)
    txn.put("ns", "mine", b"1")
    backend.lose, backend.applied, backend.meanwhile = True, applied, meanwhile
    with pytest.raises(LeaseExpired, match="could be confirmed"):
        txn.commit()
    root, _ = repo.read_root()
    assert root.generation == rivals[-1].id
    assert root.seq == 3 + (1 if applied else 0)  # ours at most once: it landed, or it did not
    snap = repo.open_reader()
    try:
        assert (snap.entry("ns", "mine") is not None) is applied
    finally:
        snap.close()


def test_a_first_mismatch_needs_no_read_back_of_history(world: tuple[FakeClock, Repository]) -> None:
    """A mismatch answering the first request of a root write is a conflict outright (no request
    of it was lost): the commit rebases, with its pin still held, and lands once."""
    clock, repo = world
    txn = repo.transaction("writer", ttl=WRITER_TTL)
    txn.put("ns", "mine", b"1")
    steps = txn.commit_steps()
    assert next(steps) is Step.CAS
    rival = repo.commit(puts=[("ns", "r", b"x")])
    assert next(steps) is Step.WAIT_ROOT  # the swap lost to the rival: rebase
    gen = _drive(steps)
    assert gen.parent == rival.id and gen.seq == rival.seq + 1
