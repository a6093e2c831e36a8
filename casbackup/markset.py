"""A compact mark set for gc at scale (spec/FORMAT.md §12.7.7): 8 bytes per blob, not ~100.

A Python set of 10^7 blob IDs takes about 1 GB; this keeps each ID's first 64 bits in 256 sorted
arrays (one per first byte), about 80 MB at 10^7. A prefix collision can only make a dead blob
look live, never the reverse, so gc stays safe (S4).

gc's mark records every raw blob (CHUNK, VALUE) it reaches here (gc.py hands reach.py a StagedMarks);
structured blobs, which the walk must read once each, stay in the walk's exact visited set.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left
from typing import Iterable

_BUCKETS = 256


def _prefix(blob_id: str) -> int:
    return int(blob_id[:16], 16)


class PrefixSet:
    """Add IDs in any order (duplicates allowed), then test membership. Tests may come between
    adds (gc's mark extends its set when its root swap loses a race): a bucket is sorted and
    de-duplicated lazily, on the first test after it changed, so the transient list of a sort
    costs ~1/256 of the set. `freeze()` sorts everything and forbids further adds."""

    def __init__(self) -> None:
        self._buckets = [array("Q") for _ in range(_BUCKETS)]
        self._dirty = bytearray(_BUCKETS)  # 1: items appended since the bucket's last sort
        self._frozen = False

    def add(self, blob_id: str) -> None:
        if self._frozen:
            raise ValueError("the mark set is frozen")
        p = _prefix(blob_id)
        b = p >> 56
        self._buckets[b].append(p)
        self._dirty[b] = 1

    def update(self, blob_ids: Iterable[str]) -> None:
        for blob_id in blob_ids:
            self.add(blob_id)

    def _sorted(self, b: int) -> "array[int]":
        if self._dirty[b]:
            self._buckets[b] = array("Q", sorted(set(self._buckets[b])))
            self._dirty[b] = 0
        return self._buckets[b]

    def freeze(self) -> None:
        """Sort and de-duplicate every bucket now; no adds after this."""
        for b in range(_BUCKETS):
            self._sorted(b)
        self._frozen = True

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, str):
            return False
        try:
            p = _prefix(blob_id)
        except ValueError:  # not a blob ID (a pack member, say): never added
            return False
        bucket = self._sorted(p >> 56)
        i = bisect_left(bucket, p)
        return i < len(bucket) and bucket[i] == p

    def __len__(self) -> int:
        """Items held (duplicates count until their bucket is next sorted)."""
        return sum(len(b) for b in self._buckets)

    @property
    def nbytes(self) -> int:
        return sum(b.itemsize * len(b) for b in self._buckets)


class StagedMarks:
    """One PrefixSet per stage of a walk (gc's: the head, the rest of the newest keep_last, the
    rest), so gc's report can say what only older generations or pins hold without a second
    copy of the marks: an ID is in the union, and `stage_of` is the first stage that added it.
    A blob reached in several stages may be held more than once (a shared tree or file is
    walked once, so its chunks are not)."""

    def __init__(self, stages: int) -> None:
        self.sets = [PrefixSet() for _ in range(stages)]

    def add(self, blob_id: str, stage: int) -> None:
        self.sets[stage].add(blob_id)

    def stage_of(self, blob_id: str) -> int | None:
        for stage, marks in enumerate(self.sets):
            if blob_id in marks:
                return stage
        return None

    def __contains__(self, blob_id: object) -> bool:
        return any(blob_id in marks for marks in self.sets)

    def __len__(self) -> int:
        return sum(len(m) for m in self.sets)

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.sets)


class UpToStage:
    """What a walk had reached once `stage` was done: an exact set (structured blobs, copied at
    that point) or the raw marks of the stages up to `stage`."""

    def __init__(self, exact: set[str], marks: StagedMarks, stage: int) -> None:
        self.exact = exact
        self.marks = marks
        self.stage = stage

    def __contains__(self, blob_id: object) -> bool:
        if blob_id in self.exact:
            return True
        return any(blob_id in m for m in self.marks.sets[:self.stage + 1])
