"""The one way a conditional write learns its outcome when its reply is lost (spec §7.3).

A create-if-absent or compare-and-swap may answer OutcomeUnknown: the request was sent, the
reply never came. Retrying blindly can turn our own success into a false conflict, and giving
up loses the answer. So every conditional write goes through `resolve`: attempt; on a lost
reply ask the caller's read-back whether the write landed; attempt again only while the
read-back shows nothing was applied (the same condition still guards the retry, so a late
duplicate cannot apply twice).
"""
from __future__ import annotations

from typing import Callable, TypeVar

from .errors import BackendError, OutcomeUnknown

# How often a write is sent again while its replies keep getting lost, for every conditional
# write (root, pins, the gc lease, blob creates).
REASK_LIMIT = 8

T = TypeVar("T")


def resolve(attempt: Callable[[], T], landed: Callable[[], T | None], what: str) -> T:
    """The result of `attempt()`, resolving lost replies by reading back.

    `landed()` runs after each lost reply: it returns the attempt's result if the write landed,
    None if provably nothing was applied yet (then the attempt is repeated), or raises if
    someone else's write got there first (a real conflict). A blob create passes a `landed`
    that always answers None: create-if-absent of identical bytes may simply be repeated.
    """
    for _ in range(REASK_LIMIT):
        try:
            return attempt()
        except OutcomeUnknown:
            outcome = landed()
            if outcome is not None:
                return outcome
    raise BackendError(f"could not confirm whether {what} was applied (replies kept getting lost); "
                       "check the storage and run the command again")
