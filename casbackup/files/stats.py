"""`stats`: how much the snapshots hold against how much the store keeps (the dedup ratio), and
restic's per-snapshot counting modes (restore-size, files-by-contents, raw-data)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from ..codec import RAW_TYPES, Ref
from ..errors import UsageError
from ..packs import PACKED_TYPES
from ..reader import Reader
from ..repository import Repository
from .reader import TreeReader
from .snapshots import SnapshotInfo, list_snapshots
from .tree import Node


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
    for _, info in repo.store.list_objects():
        stored += info.size
        blobs += 1
    return RepositoryStats(len(every), sum(s.size for s in every), stored, blobs)


# restic's `stats --mode` counting modes (blobs-per-file is not offered).
MODES = ("restore-size", "files-by-contents", "raw-data")


@dataclass(frozen=True)
class SnapshotStats:
    """restic's stats of a set of snapshots in one counting mode:
    restore-size: every entry below the roots and the file bytes a restore writes;
    files-by-contents: files with distinct content (the same chunks, or the same inline bytes) and their bytes;
    raw-data: the distinct blobs the snapshots reach (chunks, TREE and FILE blobs) and their stored bytes."""

    mode: str
    snapshots_count: int
    total_size: int
    total_file_count: int | None = None
    total_blob_count: int | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mode": self.mode, "snapshots_count": self.snapshots_count, "total_size": self.total_size}
        if self.total_file_count is not None:
            d["total_file_count"] = self.total_file_count
        if self.total_blob_count is not None:
            d["total_blob_count"] = self.total_blob_count
        return d


def _content_key(node: Node, reader: TreeReader) -> tuple[Any, ...]:
    if node.data is not None:
        return ("inline", hashlib.sha256(node.data).digest())
    if node.file:
        return ("file", node.file)
    return ("chunks", tuple(c.id for c in reader.chunks(node)))


def _reachable(snap: Reader, roots: list[Ref]) -> set[Ref]:
    """Every blob the roots reach, by their refs lists (as gc marks them)."""
    seen: set[Ref] = set()
    todo = list(roots)
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        if ref.type not in RAW_TYPES:
            todo.extend(snap.read_structured(ref)[0])
    return seen


def _stored_size(repo: Repository, snap: Reader, ref: Ref) -> int:
    """A blob's stored bytes: its envelope's length where the reader's generation locates it
    (a packed blob, FORMAT.md §12.4), else its loose object's size."""
    if ref.type in PACKED_TYPES:
        loc = repo.locate(snap.generation.id, ref.id)
        return loc.length if loc else 0
    info = repo.store.stat(ref.id)
    return info.size if info else 0


def snapshot_stats(repo: Repository, snap: Reader, snapshots: list[SnapshotInfo], mode: str) -> SnapshotStats:
    """Stats of `snapshots` (read through the pinned `snap`) in one of MODES, over all of them together."""
    if mode not in MODES:
        raise UsageError(f"unknown stats mode {mode!r}: use one of {', '.join(MODES)}")
    reader = TreeReader(snap)
    if mode == "raw-data":
        refs = _reachable(snap, [s.root for s in snapshots])
        return SnapshotStats(mode, len(snapshots), sum(_stored_size(repo, snap, r) for r in set(refs)),
                             total_blob_count=len({r.id for r in refs}))
    count = size = 0
    contents: set[tuple[Any, ...]] = set()
    for info in snapshots:
        for path, node in reader.walk(Node(b"", "dir", tree=info.tree), "/"):
            if path == "/" and node.name == b"":
                continue
            if mode == "restore-size":
                count += 1
                size += node.size if node.kind == "file" else 0
            elif node.kind == "file":
                key = _content_key(node, reader)
                if key not in contents:
                    contents.add(key)
                    count += 1
                    size += node.size
    return SnapshotStats(mode, len(snapshots), size, total_file_count=count)
