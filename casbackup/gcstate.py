"""GCSTATE blobs: the condemned and sweeping sets that the root names (spec/FORMAT.md §9.2).

They live below the repository layer because committers must read them (the rescue rule).
Naming a blob here must never make it reachable, so a set's refs are empty. A set too large for
one blob (the structured limit, 4 MiB, is ~90k items) is split into parts: an index blob
`{"kind", "parts": [part ids]}` whose refs are exactly its GCSTATE parts (so GC keeps the parts
it still needs), and parts `{"kind", "blobs": [...]}` whose refs stay empty.
"""
from __future__ import annotations

from typing import Any

from .codec import ID_LEN, BlobType, Ref
from .errors import BlobCorrupt
from .store import PACK_MEMBER, BlobStore, is_pack_member, pack_member

# One item costs ~44 payload bytes: 32768 of them keep a part near 1.4 MiB.
PART_ITEMS = 32768
KINDS = ("condemned", "sweeping")


def _items(blob_id: str, body: Any, into: dict[str, float]) -> None:
    """Both lists of a part (FORMAT.md §12.7.2): loose blobs by ID, packs as pack members."""
    if not isinstance(body.get("packs"), list):
        raise BlobCorrupt(blob_id, "malformed gc state: no packs list")
    for field, name in (("blobs", lambda h: h), ("packs", pack_member)):
        for item in body[field]:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes) and len(item[0]) == ID_LEN
                    and isinstance(item[1], (int, float)) and not isinstance(item[1], bool)):
                raise BlobCorrupt(blob_id, "malformed gc state item")
            into[name(item[0].hex())] = float(item[1])


def _part_body(kind: str, rows: list[tuple[str, float]]) -> dict[str, Any]:
    return {"kind": kind,
            "blobs": [[bytes.fromhex(m), t] for m, t in rows if not is_pack_member(m)],
            "packs": [[bytes.fromhex(m[len(PACK_MEMBER):]), t] for m, t in rows if is_pack_member(m)]}


def load_gcstate(store: BlobStore, blob_id: str | None) -> dict[str, float]:
    """Storage object (loose blob ID, or pack member) -> the storage time at which GC first found
    it unreferenced (all parts)."""
    if blob_id is None:
        return {}
    refs, body = store.get_structured(Ref(BlobType.GCSTATE, blob_id))
    if not isinstance(body, dict) or body.get("kind") not in KINDS:
        raise BlobCorrupt(blob_id, "malformed gc state")
    out: dict[str, float] = {}
    if isinstance(body.get("blobs"), list) and "parts" not in body:
        if refs:
            raise BlobCorrupt(blob_id, "a gc state that lists blobs must have no refs")
        _items(blob_id, body, out)
        return out
    parts = body.get("parts")
    if not isinstance(parts, list) or "blobs" in body or not parts:
        raise BlobCorrupt(blob_id, "malformed gc state")
    if not all(isinstance(p, bytes) and len(p) == ID_LEN for p in parts):
        raise BlobCorrupt(blob_id, "malformed gc state part id")
    part_refs = [Ref(BlobType.GCSTATE, p.hex()) for p in parts]
    if sorted(set(part_refs)) != sorted(refs) or len(set(part_refs)) != len(part_refs):
        raise BlobCorrupt(blob_id, "a gc state index's refs must be exactly its parts")
    for ref in part_refs:
        prefs, pbody = store.get_structured(ref)
        if (prefs or not isinstance(pbody, dict) or pbody.get("kind") != body["kind"]
                or not isinstance(pbody.get("blobs"), list) or "parts" in pbody):
            raise BlobCorrupt(ref.id, f"malformed gc state part of {blob_id}")
        _items(ref.id, pbody, out)
    return out


def write_gcstate(store: BlobStore, kind: str, items: dict[str, float]) -> str | None:
    """Store a set (split into parts above PART_ITEMS); returns the blob the root names."""
    if not items:
        return None
    rows = sorted(items.items())
    if len(rows) <= PART_ITEMS:
        return store.put_structured(BlobType.GCSTATE, [], _part_body(kind, rows)).ref.id
    part_refs = [store.put_structured(BlobType.GCSTATE, [], _part_body(kind, rows[i:i + PART_ITEMS])).ref
                 for i in range(0, len(rows), PART_ITEMS)]
    body = {"kind": kind, "parts": [bytes.fromhex(r.id) for r in part_refs]}
    return store.put_structured(BlobType.GCSTATE, part_refs, body).ref.id
