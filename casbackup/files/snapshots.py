"""Snapshot entries (namespace `snapshots`, spec/files.md §4): encode, decode, resolve IDs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import blake3

from ..codec import BlobType, Ref, packb, unpackb
from ..damage import damaged_keys, is_damaged
from ..errors import BlobCorrupt, NotFound, UsageError

NAMESPACE = "snapshots"
SNAPSHOT_VERSION = 1


@dataclass
class SnapshotInfo:
    id: str
    time: float
    host: str
    user: str
    paths: list[str]
    tags: list[str]
    tree: str
    parent: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    damaged: bool = False  # repair found data it reaches missing or corrupt (never part of value())

    @property
    def root(self) -> Ref:
        return Ref(BlobType.TREE, self.tree)

    @property
    def size(self) -> int:
        return int(self.summary.get("total_bytes", 0))

    def value(self) -> bytes:
        return packb({"v": SNAPSHOT_VERSION, "time": self.time, "host": self.host, "user": self.user,
                      "paths": list(self.paths), "tags": sorted(set(self.tags)), "tree": bytes.fromhex(self.tree),
                      "parent": self.parent, "summary": self.summary})

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "short_id": self.id[:8], "time": self.time, "host": self.host, "user": self.user,
                "paths": self.paths, "tags": self.tags, "tree": self.tree, "parent": self.parent,
                "size": self.size, "summary": self.summary, "damaged": self.damaged}


def new_id(value: bytes) -> str:
    """A snapshot's ID is the BLAKE3 of its canonical value: stable and collision-free."""
    return blake3.blake3(b"casbackup/v1/snapshot\x00" + value).hexdigest()


def decode(key: str, value: bytes, refs: Iterable[Ref]) -> SnapshotInfo:
    where = f"snapshot {key}"
    d = unpackb(value, where)
    if not isinstance(d, dict) or d.get("v") != SNAPSHOT_VERSION:
        raise BlobCorrupt(where, "not a version-1 snapshot record")
    try:
        tree = d["tree"]
        if not (isinstance(tree, bytes) and len(tree) == 32):
            raise TypeError
        info = SnapshotInfo(key, float(d["time"]), str(d["host"]), str(d.get("user", "")),
                            [str(p) for p in d["paths"]], [str(t) for t in d.get("tags", [])], tree.hex(),
                            d.get("parent"), d.get("summary") or {})
    except (KeyError, TypeError, ValueError):
        raise BlobCorrupt(where, "malformed snapshot record") from None
    if info.root not in set(refs):
        raise BlobCorrupt(where, "the snapshot's root tree is not among the entry's refs")
    return info


def list_snapshots(snap: Any) -> list[SnapshotInfo]:
    """All snapshots of a pinned generation, oldest first."""
    out = [decode(e.key, snap.value(e), e.refs) for e in snap.list(NAMESPACE)]
    damaged = damaged_keys(snap, NAMESPACE)
    for s in out:
        s.damaged = s.id in damaged
    out.sort(key=lambda s: (s.time, s.id))
    return out


def resolve(snap: Any, spec: str) -> SnapshotInfo:
    """'latest', a full ID or a unique prefix of one, as restic and git accept."""
    if spec == "latest":
        every = list_snapshots(snap)
        if not every:
            raise NotFound("the repository has no snapshots")
        return every[-1]
    if not spec or any(c not in "0123456789abcdef" for c in spec.lower()):
        raise UsageError(f"invalid snapshot ID {spec!r}: give a hex ID, a unique prefix, or 'latest'")
    matches = [e for e in snap.list(NAMESPACE, prefix=spec.lower())]
    if not matches:
        raise NotFound(f"no snapshot matches {spec!r}")
    if len(matches) > 1:
        raise UsageError(f"snapshot prefix {spec!r} is ambiguous ({len(matches)} matches); give more digits")
    e = matches[0]
    info = decode(e.key, snap.value(e), e.refs)
    info.damaged = is_damaged(snap, NAMESPACE, info.id)
    return info
