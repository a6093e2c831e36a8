"""GCSTATE blobs: the condemned and sweeping sets that the root names (spec/FORMAT.md §9).

They live below the repository layer because committers must read them (the rescue rule).
Their refs are always empty: naming a blob here must never make it reachable.
"""
from __future__ import annotations

from .codec import ID_LEN, BlobType, Ref
from .errors import BlobCorrupt
from .store import BlobStore


def load_gcstate(store: BlobStore, blob_id: str | None) -> dict[str, float]:
    """Blob id -> the storage time at which GC first found it unreferenced."""
    if blob_id is None:
        return {}
    refs, body = store.get_structured(Ref(BlobType.GCSTATE, blob_id))
    if refs or not isinstance(body, dict) or not isinstance(body.get("blobs"), list):
        raise BlobCorrupt(blob_id, "malformed gc state")
    out: dict[str, float] = {}
    for item in body["blobs"]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes) and len(item[0]) == ID_LEN
                and isinstance(item[1], (int, float))):
            raise BlobCorrupt(blob_id, "malformed gc state item")
        out[item[0].hex()] = float(item[1])
    return out


def write_gcstate(store: BlobStore, kind: str, items: dict[str, float]) -> str | None:
    if not items:
        return None
    body = {"kind": kind, "blobs": [[bytes.fromhex(i), t] for i, t in sorted(items.items())]}
    return store.put_structured(BlobType.GCSTATE, [], body).ref.id
