"""spec/vectors/files/tree.json matches what the library encodes and decodes, and the snapshot
entry in spec/vectors/blobs.json is a valid one (spec/files.md §6)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from casbackup.btree import BTree
from casbackup.codec import BlobType, Ref, blob_id, unpack_structured
from casbackup.files.snapshots import NAMESPACE, decode as decode_snapshot, new_id
from casbackup.files.tree import Node, decode_file, decode_tree

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "spec" / "vectors"


def load_generator():
    spec = importlib.util.spec_from_file_location("files_vectors", ROOT / "tools" / "files_vectors.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_vectors_are_current() -> None:
    stored = json.loads((VECTORS / "files" / "tree.json").read_text())
    assert stored == load_generator().build()


def _only(nodes: list[Node], name: bytes) -> Node:
    assert [n.name for n in nodes] == [name]
    return nodes[0]


def test_vectors_decode() -> None:
    doc = json.loads((VECTORS / "files" / "tree.json").read_text())
    by_id = {}
    for b in doc["blobs"]:
        payload = bytes.fromhex(b["payload_hex"])
        assert blob_id(BlobType(b["type"]), payload) == b["id"]
        by_id[b["id"]] = (BlobType(b["type"]), payload)

    def tree(tree_id: str) -> list[Node]:
        refs, body = unpack_structured(by_id[tree_id][1], tree_id)
        return decode_tree(tree_id, refs, body)

    entry = doc["snapshot_entry"]
    assert entry["refs"] == [{"type": int(BlobType.TREE), "id": entry["refs"][0]["id"]}]
    root_id = entry["refs"][0]["id"]
    value = bytes.fromhex(entry["value_hex"])
    assert new_id(value) == entry["key"]
    info = decode_snapshot(entry["key"], value, [Ref(BlobType.TREE, root_id)])
    assert info.tree == root_id and info.paths == ["/home/alice"] and info.tags == ["daily"]
    # the root TREE mirrors the backed-up path /home/alice (spec/files.md §6)
    home = _only(tree(root_id), b"home")
    alice = _only(tree(home.tree or ""), b"alice")
    nodes = tree(alice.tree or "")
    assert [n.name for n in nodes] == [b"big.dat", b"huge.dat", b"link", b"specials", b"sub"]
    big, huge, link, specials, sub = nodes
    assert b"".join(by_id[c.id][1] for c in big.chunks or []) == b"A" * 40 + b"B" * 24
    frefs, fbody = unpack_structured(by_id[huge.file][1], huge.file)
    assert [c.id for c in decode_file(huge.file, frefs, fbody)] == [c.id for c in big.chunks or []]
    assert link.target == b"sub/note.txt"
    assert tree(sub.tree or "")[0].data == b"hello"
    dev, pipe, sock = tree(specials.tree or "")
    assert (dev.kind, dev.rdev, pipe.kind, pipe.mode, sock.kind) == ("chardev", 259, "fifo", 0o4640, "socket")


class _Blobs:
    """Just enough of a BlobStore for BTree.load on the vectors' payloads."""

    def __init__(self, payloads: dict[str, bytes]) -> None:
        self.payloads = payloads

    def get_structured(self, ref: Ref, generation: str | None = None, cache: bool = True):  # type: ignore[no-untyped-def]
        return unpack_structured(self.payloads[ref.id], ref.id)


def test_blobs_json_snapshot_entry_is_valid() -> None:
    """The PAGE vector of blobs.json holds a real snapshot entry: key = its ID, refs = its root TREE,
    and that TREE (also a vector) decodes."""
    payloads = {v["id"]: bytes.fromhex(v["payload_hex"]) for v in json.loads((VECTORS / "blobs.json").read_text())}
    pages = [Ref(BlobType.PAGE, v["id"]) for v in json.loads((VECTORS / "blobs.json").read_text())
             if v["type"] == BlobType.PAGE]
    entries = [e for ref in pages for e in BTree(_Blobs(payloads)).load(ref).entries  # type: ignore[arg-type]
               if e.namespace == NAMESPACE]
    assert len(entries) == 1
    (e,) = entries
    assert e.value is not None and new_id(e.value) == e.key
    info = decode_snapshot(e.key, e.value, e.refs)
    assert list(e.refs) == [info.root] and info.root.id in payloads
    assert [n.name for n in tree_nodes(info.root.id, payloads[info.root.id])] == [b"hello.txt"]


def tree_nodes(tree_id: str, payload: bytes) -> list[Node]:
    refs, body = unpack_structured(payload, tree_id)
    return decode_tree(tree_id, refs, body)
