"""A compact mark set for gc at scale (spec/FORMAT.md §12.7.7): 8 bytes per blob, not ~90.

A Python set of 10^7 blob IDs takes about 1 GB; this keeps each ID's first 64 bits in 256 sorted
arrays (one per first byte), about 80 MB at 10^7. A prefix collision can only make a dead blob
look live, never the reverse, so gc stays safe (S4). Not wired into gc yet: gc's mark still
uses the exact set of walk.py (FORMAT.md §12.7.7 says what wiring it in takes).
"""
from __future__ import annotations

from array import array
from bisect import bisect_left
from typing import Iterable

_BUCKETS = 256


def _prefix(blob_id: str) -> int:
    return int(blob_id[:16], 16)


class PrefixSet:
    """Add IDs in any order (duplicates allowed), `freeze()` once, then test membership."""

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(_BUCKETS)]
        self._frozen = False

    def add(self, blob_id: str) -> None:
        if self._frozen:
            raise ValueError("the mark set is frozen")
        p = _prefix(blob_id)
        self._buckets[p >> 56].append(p)

    def update(self, blob_ids: Iterable[str]) -> None:
        for blob_id in blob_ids:
            self.add(blob_id)

    def freeze(self) -> None:
        """Sort and de-duplicate each bucket; one bucket at a time, so the transient list costs
        ~1/256 of the set."""
        for i, bucket in enumerate(self._buckets):
            self._buckets[i] = array("Q", sorted(set(bucket)))
        self._frozen = True

    def __contains__(self, blob_id: object) -> bool:
        if not self._frozen:
            raise ValueError("freeze() the mark set before testing membership")
        if not isinstance(blob_id, str):
            return False
        p = _prefix(blob_id)
        bucket = self._buckets[p >> 56]
        i = bisect_left(bucket, p)
        return i < len(bucket) and bucket[i] == p

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    @property
    def nbytes(self) -> int:
        return sum(b.itemsize * len(b) for b in self._buckets)
