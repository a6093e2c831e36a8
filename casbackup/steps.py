"""Stepped operations: commits, pinned opens and gc runs pause at named steps.

Production drives a step generator straight through (`run_steps`); tests drive several at
once and interleave them at any step, which is how the races of spec §9.6 are tested. A step
is a `Step`, not a free string: drivers act on `Step.waits` and `Step.why`, never on a prefix.
"""
from __future__ import annotations

from enum import Enum
from typing import Generator, TypeVar


class Step(str, Enum):
    """Where a stepped operation paused (a str, so a step also compares equal to its name)."""

    # opening a pinned reader (spec §8.1)
    ROOT_READ = "root-read"
    PINNED = "pinned"
    # a commit (spec §7.2, §9.3)
    CAS = "cas"
    WAIT_SWEEP = "wait-sweep"
    WAIT_ROOT = "wait-root"
    # a gc run (spec §9.4)
    LEASE = "lease"
    MARK_CAS = "mark-cas"
    ANNOUNCE_CAS = "announce-cas"
    ANNOUNCED = "announced"
    PLANNED = "planned"
    DELETED = "deleted"
    CLEAR_CAS = "clear-cas"
    PRUNE_COMMIT = "prune-commit"  # format v2: removing locations of deleted packs
    REPACK_COMMIT = "repack-commit"  # format v2: moving live blobs out of sparse packs

    @property
    def waits(self) -> bool:
        """The driver must back off before the next step (see `why`)."""
        return self in _WAIT_REASONS

    @property
    def why(self) -> str:
        return _WAIT_REASONS.get(self, "")


_WAIT_REASONS = {
    Step.WAIT_SWEEP: "a gc sweep is deleting blobs this commit uses",
    Step.WAIT_ROOT: "the root kept changing under concurrent commits",
}

T = TypeVar("T")
Steps = Generator[Step, None, T]


def run_steps(steps: "Steps[T]") -> T:
    """Drive a step generator to completion (production path; tests interleave the steps)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
