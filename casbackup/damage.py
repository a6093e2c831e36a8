"""The `_damage` namespace: what `repair blobs` removed, and which entries lost data with it.

Committed in one transaction by repair (spec §11.3). Check and gc read it so a blob removed on
purpose is *known damage*, not a new failure; upper layers read it so they never trust a damaged
entry again (files.backup never takes a damaged snapshot as its parent). Values carry no refs:
recording a blob here never keeps anything alive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import blake3

from .btree import Entry
from .codec import packb, unpackb
from .errors import BlobCorrupt

NAMESPACE = "_damage"
BLOB_PREFIX = "blob:"
ENTRY_PREFIX = "entry:"
DAMAGE_VERSION = 1


def blob_record_key(blob_id: str) -> str:
    return f"{BLOB_PREFIX}{blob_id}"


def entry_record_key(namespace: str, key: str) -> str:
    """Namespace and key together can exceed a key's 1024 bytes, so the record key hashes them
    (the value holds both in clear)."""
    digest = blake3.blake3(b"casbackup/v1/damage\x00" + namespace.encode() + b"\x00" + key.encode()).hexdigest()
    return f"{ENTRY_PREFIX}{digest[:32]}"


@dataclass(frozen=True)
class DamagedBlob:
    blob: str
    type: str
    reason: str
    time: float

    def value(self) -> bytes:
        return packb({"v": DAMAGE_VERSION, "kind": "blob", "type": self.type, "reason": self.reason,
                      "time": self.time})


@dataclass(frozen=True)
class DamagedEntry:
    namespace: str
    key: str
    blobs: tuple[str, ...]
    time: float

    def value(self) -> bytes:
        return packb({"v": DAMAGE_VERSION, "kind": "entry", "namespace": self.namespace, "key": self.key,
                      "blobs": list(self.blobs), "time": self.time})


def decode_damage_value(key: str, value: bytes) -> DamagedBlob | DamagedEntry:
    where = f"damage record {key}"
    d = unpackb(value, where)
    if not isinstance(d, dict) or d.get("v") != DAMAGE_VERSION:
        raise BlobCorrupt(where, "not a version-1 damage record")
    try:
        if key.startswith(BLOB_PREFIX) and d["kind"] == "blob":
            return DamagedBlob(key[len(BLOB_PREFIX):], str(d["type"]), str(d["reason"]), float(d["time"]))
        if key.startswith(ENTRY_PREFIX) and d["kind"] == "entry":
            ns, k = d["namespace"], d["key"]
            if not (isinstance(ns, str) and isinstance(k, str)) or entry_record_key(ns, k) != key:
                raise ValueError
            return DamagedEntry(ns, k, tuple(str(b) for b in d["blobs"]), float(d["time"]))
    except (KeyError, TypeError, ValueError):
        pass
    raise BlobCorrupt(where, "malformed damage record")


def _values(snap: Any, prefix: str) -> Iterator[tuple[Entry, bytes]]:
    for e in snap.list(NAMESPACE, prefix=prefix):
        yield e, snap.value(e)


def known_blobs(snap: Any) -> dict[str, str]:
    """Blob id -> why repair removed it, as recorded in a pinned generation."""
    out: dict[str, str] = {}
    for e, value in _values(snap, BLOB_PREFIX):
        rec = decode_damage_value(e.key, value)
        if isinstance(rec, DamagedBlob):
            out[rec.blob] = rec.reason
    return out


def known_blobs_of(repo: Any, generation: Any) -> set[str]:
    """known_blobs for a generation read without a pin (gc holds the gc lease instead)."""
    out: set[str] = set()
    for e in repo.index.iterate(generation.index, (NAMESPACE, BLOB_PREFIX), generation.id):
        if e.namespace != NAMESPACE or not e.key.startswith(BLOB_PREFIX):
            break
        out.add(e.key[len(BLOB_PREFIX):])
    return out


def damaged_keys(snap: Any, namespace: str) -> set[str]:
    """Keys of `namespace` whose data repair found damaged."""
    out: set[str] = set()
    for e, value in _values(snap, ENTRY_PREFIX):
        rec = decode_damage_value(e.key, value)
        if isinstance(rec, DamagedEntry) and rec.namespace == namespace:
            out.add(rec.key)
    return out


def is_damaged(snap: Any, namespace: str, key: str) -> bool:
    return snap.entry(NAMESPACE, entry_record_key(namespace, key)) is not None
