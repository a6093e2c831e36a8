#!/usr/bin/env python3
"""Write spec/vectors/file.json: FILE blobs (spec/FORMAT.md §6.4) in every body, byte for byte.

The same two chunks listed by a version-1 leaf, by a legacy Aptos body, and by an index of two
leaf parts, plus the empty stream. tests/test_vectors.py decodes each payload, rebuilds it with
the library and compares, so the spec text, the vectors and the code cannot drift apart.
Run from the project root: python tools/file_codec_vectors.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from casbackup.chunklist import Piece, index_body, leaf_body, legacy_body  # noqa: E402
from casbackup.codec import BlobType, Ref, blob_id, pack_structured  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "spec" / "vectors" / "file.json"
NOTE = ("FILE blobs of spec/FORMAT.md §6.4. IDs are hex; payload_hex is the structured payload "
        "[refs, body] (§4.4) before the envelope; refs are {type, id} in payload order; items are the body's list "
        "as [id hex, size]; stream is the chunk list a reader flattens it to.")


def build() -> dict[str, Any]:
    chunks: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []

    def chunk(payload: bytes, name: str) -> Piece:
        cid = blob_id(BlobType.CHUNK, payload)
        chunks.append({"name": name, "id": cid, "payload_hex": payload.hex()})
        return Piece(cid, len(payload))

    def file(name: str, form: str, refs: list[Ref], body: Any, items: list[Piece], stream: list[Piece]) -> Piece:
        payload = pack_structured(refs, body, BlobType.FILE)
        fid = blob_id(BlobType.FILE, payload)
        files.append({"name": name, "form": form, "id": fid, "payload_hex": payload.hex(),
                      "refs": [{"type": int(r.type), "id": r.id} for r in sorted(set(refs))],
                      "items": [[p.id, p.size] for p in items], "stream": [[c.id, c.size] for c in stream],
                      "size": sum(c.size for c in stream)})
        return Piece(fid, sum(c.size for c in stream))

    a = chunk(b"A" * 40, "chunk A (40 bytes)")
    b = chunk(b"B" * 24, "chunk B (24 bytes)")
    file("leaf: A then B", "leaf", *leaf_body([a, b]), [a, b], [a, b])
    file("legacy Aptos body (read, never written): A then B", "legacy", *legacy_body([a, b]), [a, b], [a, b])
    part1 = file("leaf part 1: A", "leaf", *leaf_body([a]), [a], [a])
    part2 = file("leaf part 2: B", "leaf", *leaf_body([b]), [b], [b])
    file("index of parts 1 and 2: A then B", "index", *index_body([part1, part2]), [part1, part2], [a, b])
    file("empty stream", "leaf", *leaf_body([]), [], [])
    return {"description": NOTE, "chunks": chunks, "files": files}


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
