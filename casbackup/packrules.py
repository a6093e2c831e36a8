"""gc's decision for one pack (spec/FORMAT.md §12.7.3): young, condemn, repack or keep.

One pure function, so the rule is written once, tested by vectors (spec/vectors/gc-decisions.json)
and used by gc to choose the packs it repacks.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

DEFAULT_REPACK_BELOW = 0.5


class PackDecision(str, Enum):
    YOUNG = "young"        # stored within the grace period: never examined further
    CONDEMN = "condemn"    # no retained or pinned generation locates a reachable blob in it
    REPACK = "repack"      # live, but under `repack_below` of its body is reachable
    KEEP = "keep"


@dataclass(frozen=True)
class PackFacts:
    mtime: float          # storage mtime of the pack
    live: bool            # §12.7.1: some retained or pinned generation locates a reachable blob in it
    body_bytes: int       # sum of the TOC's blob lengths
    live_bytes: int       # sum of lengths of reachable blobs the head locates in it
    sweeping: bool = False  # the pack is in the root's sweeping set: the sweep decides its fate


def decide(facts: PackFacts, now: float, grace: float, repack_below: float = DEFAULT_REPACK_BELOW) -> PackDecision:
    """The first rule of §12.7.3 that holds."""
    if now - facts.mtime < grace:
        return PackDecision.YOUNG
    if not facts.live:
        return PackDecision.CONDEMN
    if facts.body_bytes > 0 and facts.live_bytes / facts.body_bytes < repack_below and not facts.sweeping:
        return PackDecision.REPACK
    return PackDecision.KEEP
