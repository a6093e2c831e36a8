"""`stats`: how much the snapshots hold against how much the store keeps (the dedup ratio)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..repository import Repository
from .snapshots import list_snapshots


@dataclass(frozen=True)
class RepositoryStats:
    snapshots: int
    logical_size: int  # the sum of every snapshot's total_bytes: what a restore of all would write
    stored_size: int   # the bytes of every stored blob, whether or not a generation still reaches it
    blobs: int

    @property
    def dedup_ratio(self) -> float | None:
        return round(self.logical_size / self.stored_size, 3) if self.stored_size else None

    def to_json(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots, "logical_size": self.logical_size, "stored_size": self.stored_size,
                "blobs": self.blobs, "dedup_ratio": self.dedup_ratio}


def repository_stats(repo: Repository) -> RepositoryStats:
    """Snapshot sizes from a pinned reader of the current generation; blob sizes from one listing
    of the store (not pinned: a gc running meanwhile changes only the stored side)."""
    with repo.reader("stats") as reader:
        every = list_snapshots(reader)
    stored = blobs = 0
    for _, info in repo.store.list():
        stored += info.size
        blobs += 1
    return RepositoryStats(len(every), sum(s.size for s in every), stored, blobs)
