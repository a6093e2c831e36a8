#!/usr/bin/env python3
"""Write the pack vectors (spec/FORMAT.md §12): packs and gc's pack decisions.

Usage: python tools/pack_vectors.py   (writes spec/vectors/packs.json and gc-decisions.json)
Blobs and TOCs are stored uncompressed and the pack IDs are fixed, so every byte is exact.
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from casbackup.chunklist import Piece, leaf_body  # noqa: E402
from casbackup.codec import BlobType, encode_blob, pack_structured, seal  # noqa: E402
from casbackup.packrules import PackFacts, decide  # noqa: E402
from casbackup.packs import TRAILER_LEN, PackBuilder, PackClass  # noqa: E402

OUT = ROOT / "spec" / "vectors"
DATA_PACK_ID = "0d" * 32
META_PACK_ID = "3e" * 32


def _pack_vector(name: str, builder: PackBuilder) -> dict[str, object]:
    stored = builder.finish(level=None)
    return {
        "name": name, "pack_id": builder.pack_id, "class": int(builder.pack_class), "stored_hex": stored.hex(),
        "blobs": [{"type": int(i.location.type), "id": i.id, "offset": i.location.offset,
                   "length": i.location.length,
                   "location_value_hex": i.location.to_value().hex()} for i in builder.items()],
    }


def _corrupt(name: str, pack_id: str, stored: bytes, error: str) -> dict[str, object]:
    return {"name": name, "pack_id": pack_id, "stored_hex": stored.hex(), "error": error}


def _retoc(stored: bytes, new_toc_payload_hex_patch: tuple[bytes, bytes]) -> bytes:
    """The same pack with one byte string of its TOC payload replaced and the TOC re-sealed, so the
    corruption reaches the layout rule it means to exercise rather than the checksum."""
    toc_len = struct.unpack("<I", stored[-TRAILER_LEN:-TRAILER_LEN + 4])[0]
    start = len(stored) - TRAILER_LEN - toc_len
    toc = stored[start:start + toc_len]
    old, new = new_toc_payload_hex_patch
    assert len(old) == len(new) and toc.count(old) == 1
    patched = seal(toc[:-16].replace(old, new))
    return stored[:start] + patched + stored[start + toc_len:]


def packs() -> dict[str, object]:
    a = encode_blob(BlobType.CHUNK, b"first chunk of a file\n", None)
    b = encode_blob(BlobType.CHUNK, b"second chunk\n", None)
    data = PackBuilder(PackClass.DATA, DATA_PACK_ID)
    data.add(a)
    data.add(b)
    refs, body = leaf_body([Piece(a.id, 22), Piece(b.id, 13)])
    leaf = pack_structured(refs, body, BlobType.FILE)
    meta = PackBuilder(PackClass.METADATA, META_PACK_ID)
    meta.add(encode_blob(BlobType.FILE, leaf, None))
    good = [_pack_vector("data pack: two CHUNK blobs", data), _pack_vector("metadata pack: one FILE blob", meta)]
    stored = bytes.fromhex(str(good[0]["stored_hex"]))
    off_b = 8 + len(a.stored)
    bad = [
        _corrupt("stored under another name", "ee" * 32, stored, "TOC names another pack"),
        _corrupt("trailer magic damaged", DATA_PACK_ID, stored[:-1] + b"X", "bad trailer magic"),
        _corrupt("TOC checksum mismatch", DATA_PACK_ID, stored[:-TRAILER_LEN - 1] + bytes([stored[-TRAILER_LEN - 1] ^ 1])
                 + stored[-TRAILER_LEN:], "checksum mismatch"),
        _corrupt("gap between blobs", DATA_PACK_ID,
                 _retoc(stored, (struct.pack(">B", off_b) if off_b < 128 else struct.pack(">BB", 0xcc, off_b),
                                 struct.pack(">B", off_b + 1) if off_b + 1 < 128 else struct.pack(">BB", 0xcc, off_b + 1))),
                 "gap or overlap"),
        _corrupt("CHUNK in a metadata pack", DATA_PACK_ID, _retoc(stored, (b"\xa5class\x01", b"\xa5class\x02")),
                 "in a metadata pack"),
    ]
    return {"description": "packs (FORMAT.md §12.3, §12.4): packs with their TOC, the _blobs location "
                           "value of each blob, and corrupt packs a reader must reject (error: a substring of the "
                           "reason this implementation gives)",
            "packs": good, "corrupt": bad}


def decisions() -> dict[str, object]:
    now, grace = 1_000_000.0, 86_400.0
    cases = [
        ("stored within the grace period", dict(mtime=now - 10, live=False, body_bytes=100, live_bytes=0)),
        ("no reachable blob located in it", dict(mtime=now - 2 * grace, live=False, body_bytes=100, live_bytes=0)),
        ("live but 10% reachable", dict(mtime=now - 2 * grace, live=True, body_bytes=100, live_bytes=10)),
        ("live, exactly the threshold", dict(mtime=now - 2 * grace, live=True, body_bytes=100, live_bytes=50)),
        ("live, fully reachable", dict(mtime=now - 2 * grace, live=True, body_bytes=100, live_bytes=100)),
        ("live only through an older retained generation", dict(mtime=now - 2 * grace, live=True, body_bytes=100,
                                                                live_bytes=0)),
        ("sparse but being swept", dict(mtime=now - 2 * grace, live=True, body_bytes=100, live_bytes=10,
                                        sweeping=True)),
    ]
    out = []
    for name, kw in cases:
        facts = PackFacts(**kw)  # type: ignore[arg-type]
        out.append({"name": name, "now": now, "grace": grace, "repack_below": 0.5, **kw,
                    "decision": decide(facts, now, grace, 0.5).value})
    return {"description": "FORMAT.md §12.7.3: gc's decision for one pack, the first rule "
                           "that holds", "cases": out}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "packs.json").write_text(json.dumps(packs(), indent=1) + "\n")
    (OUT / "gc-decisions.json").write_text(json.dumps(decisions(), indent=1) + "\n")


if __name__ == "__main__":
    main()
