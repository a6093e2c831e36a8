"""Snapshot entries (namespace `snapshots`, spec/files.md §4): encode, decode, resolve IDs."""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any, Iterable

import blake3

from ..codec import BlobType, Ref, packb, unpackb
from ..damage import damaged_keys, is_damaged
from ..errors import BlobCorrupt, NotFound, UsageError
from ..repository import Reader
from .progress import rfc3339

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
    original: str | None = None  # the ID it had before its first tag change (restic's `original`)
    damaged: bool = False  # repair found data it reaches missing or corrupt (never part of value())

    @property
    def root(self) -> Ref:
        return Ref(BlobType.TREE, self.tree)

    @property
    def size(self) -> int:
        return int(self.summary.get("total_bytes", 0))

    def value(self) -> bytes:
        d = {"v": SNAPSHOT_VERSION, "time": self.time, "host": self.host, "user": self.user,
             "paths": list(self.paths), "tags": sorted(set(self.tags)), "tree": bytes.fromhex(self.tree),
             "parent": self.parent, "summary": self.summary}
        if self.original is not None:  # absent until a tag change, so older IDs are unchanged
            d["original"] = self.original
        return packb(d)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "short_id": self.id[:8], "time": rfc3339(self.time), "host": self.host, "user": self.user,
                "paths": self.paths, "tags": self.tags, "tree": self.tree, "parent": self.parent,
                "size": self.size, "summary": self.summary, "damaged": self.damaged, "original": self.original}


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
        original = d.get("original")
        if original is not None and not isinstance(original, str):
            raise TypeError
        info.original = original
    except (KeyError, TypeError, ValueError):
        raise BlobCorrupt(where, "malformed snapshot record") from None
    if info.root not in set(refs):
        raise BlobCorrupt(where, "the snapshot's root tree is not among the entry's refs")
    return info


def list_snapshots(snap: Reader) -> list[SnapshotInfo]:
    """All snapshots of a pinned generation, oldest first."""
    out = [decode(e.key, snap.value(e), e.refs) for e in snap.list(NAMESPACE)]
    damaged = damaged_keys(snap, NAMESPACE)
    for s in out:
        s.damaged = s.id in damaged
    out.sort(key=lambda s: (s.time, s.id))
    return out


def series(snapshots: list[SnapshotInfo]) -> list[list[SnapshotInfo]]:
    """Snapshots of one host and one set of paths form a series: a keep policy and --latest
    count within each series (restic's default grouping). Each keeps the given order."""
    groups: dict[tuple[str, tuple[str, ...]], list[SnapshotInfo]] = {}
    for s in snapshots:
        groups.setdefault((s.host, tuple(sorted(s.paths))), []).append(s)
    return list(groups.values())


def latest_per_series(snapshots: list[SnapshotInfo], n: int) -> list[SnapshotInfo]:
    """The last `n` of each series, in the given (oldest first) order."""
    keep = {s.id for group in series(snapshots) for s in group[-n:]}
    return [s for s in snapshots if s.id in keep]


@dataclass
class SnapshotFilter:
    """restic's --host / --path / --tag selection: any of the hosts; all of the paths; any of
    the tag lists, where one list "a,b" needs every tag in it. Empty means no condition."""

    hosts: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.paths = [posixpath.normpath(p) if p.startswith("/") else p for p in self.paths]

    def empty(self) -> bool:
        return not (self.hosts or self.paths or self.tags)

    def matches(self, s: SnapshotInfo) -> bool:
        if self.hosts and s.host not in self.hosts:
            return False
        if self.paths and not set(self.paths) <= set(s.paths):
            return False
        if self.tags:
            lists = [{t for t in tl.split(",") if t} for tl in self.tags]
            if not any(tl <= set(s.tags) for tl in lists):
                return False
        return True

    def describe(self) -> str:
        parts = [f"--host {h}" for h in self.hosts] + [f"--path {p}" for p in self.paths]
        return " ".join(parts + [f"--tag {t}" for t in self.tags])

    def apply(self, every: list[SnapshotInfo]) -> list[SnapshotInfo]:
        return [s for s in every if self.matches(s)]


def resolve(snap: Reader, spec: str, flt: SnapshotFilter | None = None) -> SnapshotInfo:
    """'latest' (the newest snapshot the filter selects), a full ID or a unique prefix of one,
    as restic and git accept. As in restic, the filter only narrows 'latest'."""
    if spec == "latest":
        every = list_snapshots(snap)
        if not every:
            raise NotFound("the repository has no snapshots")
        if flt is not None and not flt.empty():
            every = flt.apply(every)
            if not every:
                raise NotFound(f"no snapshot matches {flt.describe()}")
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


def select(snap: Reader, specs: list[str], flt: SnapshotFilter | None) -> list[SnapshotInfo]:
    """The snapshots named (IDs, prefixes, 'latest'), or all the filter selects; oldest first."""
    if specs:
        chosen = {info.id: info for info in (resolve(snap, s, flt) for s in specs)}
        return sorted(chosen.values(), key=lambda s: (s.time, s.id))
    every = list_snapshots(snap)
    return flt.apply(every) if flt is not None else every
