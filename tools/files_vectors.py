#!/usr/bin/env python3
"""Write spec/vectors/files/tree.json: the blobs of a small file snapshot, byte for byte.

tests/files/test_vectors.py rebuilds them with the library and compares, so the spec text, the
vectors and the code cannot drift apart. Run from the project root: python tools/files_vectors.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from casbackup.codec import BlobType, blob_id, pack_structured  # noqa: E402
from casbackup.files.snapshots import SnapshotInfo, new_id  # noqa: E402
from casbackup.files.tree import Chunk, Node, file_body, tree_body  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "spec" / "vectors" / "files" / "tree.json"


def build() -> dict[str, Any]:
    blobs: list[dict[str, Any]] = []

    def add(kind: BlobType, payload: bytes, note: str) -> str:
        i = blob_id(kind, payload)
        blobs.append({"type": kind.name, "type_byte": int(kind), "id": i, "payload_hex": payload.hex(), "note": note})
        return i

    c1 = add(BlobType.CHUNK, b"A" * 40, "chunk 1 of big.dat")
    c2 = add(BlobType.CHUNK, b"B" * 24, "chunk 2 of big.dat")
    chunks = [Chunk(c1, 40), Chunk(c2, 24)]
    refs, body = file_body(chunks)
    file_id = add(BlobType.FILE, pack_structured(refs, body), "FILE blob: ordered chunk list of huge.dat")
    sub = [Node(b"note.txt", "file", mode=0o600, mtime_ns=1_700_000_000_123_456_789, uid=1000, gid=1000, size=5,
                ino=11, ctime_ns=1_700_000_000_123_456_789, data=b"hello")]
    refs, body = tree_body(sub)
    sub_id = add(BlobType.TREE, pack_structured(refs, body), "TREE of sub/: one inline file")
    root = [
        Node(b"big.dat", "file", mode=0o644, mtime_ns=1_700_000_001_000_000_000, uid=0, gid=0, size=64, ino=12,
             ctime_ns=1_700_000_001_000_000_000, chunks=chunks),
        Node(b"huge.dat", "file", mode=0o644, mtime_ns=1_700_000_002_000_000_000, uid=0, gid=0, size=64, ino=13,
             ctime_ns=1_700_000_002_000_000_000, file=file_id),
        Node(b"link", "symlink", mode=0o777, mtime_ns=1_700_000_003_000_000_000, target=b"sub/note.txt"),
        Node(b"sub", "dir", mode=0o755, mtime_ns=1_700_000_004_000_000_000, tree=sub_id),
    ]
    specials = [
        Node(b"dev-null", "chardev", mode=0o666, mtime_ns=1_700_000_006_000_000_000, rdev=(1 << 8) | 3),
        Node(b"pipe", "fifo", mode=0o4640, mtime_ns=1_700_000_007_000_000_000, uid=1000, gid=100),
        Node(b"sock", "socket", mode=0o755, mtime_ns=1_700_000_008_000_000_000, uid=1000, gid=100),
    ]
    refs, body = tree_body(specials)
    add(BlobType.TREE, pack_structured(refs, body), "TREE of special files: chardev (rdev 1:3), fifo (setuid), socket")
    refs, body = tree_body(root)
    root_id = add(BlobType.TREE, pack_structured(refs, body), "root TREE: chunked file, FILE-blob file, symlink, dir")
    info = SnapshotInfo("", 1_700_000_005.5, "host1", "alice", ["/home/alice"], ["daily"], root_id, None,
                        {"files_new": 3, "total_bytes": 133})
    value = info.value()
    return {
        "description": "A file snapshot: every blob's type, ID and canonical payload, and the snapshot entry. "
                       "Blob IDs are BLAKE3-256(domain || type byte || payload) as in spec/FORMAT.md.",
        "blobs": blobs,
        "snapshot_entry": {"namespace": "snapshots", "key": new_id(value), "value_hex": value.hex(),
                           "refs": [{"type": "TREE", "id": root_id}]},
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT}")
