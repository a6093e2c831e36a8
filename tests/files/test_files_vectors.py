"""spec/vectors/files/tree.json matches what the library encodes and decodes."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from casbackup.codec import BlobType, Ref, blob_id, unpack_structured
from casbackup.files.snapshots import decode as decode_snapshot, new_id
from casbackup.files.tree import decode_file, decode_tree

ROOT = Path(__file__).resolve().parents[2]


def load_generator():
    spec = importlib.util.spec_from_file_location("files_vectors", ROOT / "tools" / "files_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_vectors_are_current() -> None:
    stored = json.loads((ROOT / "spec" / "vectors" / "files" / "tree.json").read_text())
    assert stored == load_generator().build()


def test_vectors_decode() -> None:
    doc = json.loads((ROOT / "spec" / "vectors" / "files" / "tree.json").read_text())
    by_id = {}
    for b in doc["blobs"]:
        payload = bytes.fromhex(b["payload_hex"])
        assert blob_id(BlobType[b["type"]], payload) == b["id"]
        by_id[b["id"]] = (BlobType[b["type"]], payload)
    root_id = doc["snapshot_entry"]["refs"][0]["id"]
    refs, body = unpack_structured(by_id[root_id][1], root_id)
    nodes = decode_tree(root_id, refs, body)
    assert [n.name for n in nodes] == [b"big.dat", b"huge.dat", b"link", b"sub"]
    big, huge, link, sub = nodes
    assert b"".join(by_id[c.id][1] for c in big.chunks or []) == b"A" * 40 + b"B" * 24
    frefs, fbody = unpack_structured(by_id[huge.file][1], huge.file)
    assert [c.id for c in decode_file(huge.file, frefs, fbody)] == [c.id for c in big.chunks or []]
    assert link.target == b"sub/note.txt"
    srefs, sbody = unpack_structured(by_id[sub.tree][1], sub.tree)
    assert decode_tree(sub.tree, srefs, sbody)[0].data == b"hello"
    entry = doc["snapshot_entry"]
    value = bytes.fromhex(entry["value_hex"])
    assert new_id(value) == entry["key"]
    info = decode_snapshot(entry["key"], value, [Ref(BlobType.TREE, root_id)])
    assert info.tree == root_id and info.paths == ["/home/alice"] and info.tags == ["daily"]
    special = [b for b in doc["blobs"] if b["note"].startswith("TREE of special files")]
    if special:  # present once tools/files_vectors.py has been run with the special-file case
        sid = special[0]["id"]
        srefs, sbody = unpack_structured(bytes.fromhex(special[0]["payload_hex"]), sid)
        dev, pipe, sock = decode_tree(sid, srefs, sbody)
        assert (dev.kind, dev.rdev, pipe.kind, pipe.mode, sock.kind) == ("chardev", 259, "fifo", 0o4640, "socket")
