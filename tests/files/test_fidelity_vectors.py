"""spec/vectors/files/fidelity.json (spec/files.md §3.2) matches what the library encodes and
decodes, and a reader refuses malformed xattrs and hard-link fields."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from casbackup.codec import BlobType, Ref, blob_id, unpack_structured
from casbackup.errors import BlobCorrupt
from casbackup.files.tree import MAX_XATTR_BYTES, Node, decode_tree, tree_body
from test_files_vectors import load_generator

VECTOR = Path(__file__).resolve().parents[2] / "spec" / "vectors" / "files" / "fidelity.json"


def test_fidelity_vectors_are_current() -> None:
    assert json.loads(VECTOR.read_text()) == load_generator().build_fidelity()


def test_fidelity_vectors_decode() -> None:
    doc = json.loads(VECTOR.read_text())
    for b in doc["blobs"]:
        assert blob_id(BlobType(b["type"]), bytes.fromhex(b["payload_hex"])) == b["id"]
    last = doc["blobs"][-1]
    refs, body = unpack_structured(bytes.fromhex(last["payload_hex"]), last["id"])
    nodes = decode_tree(last["id"], refs, body)
    got = [{"name": n.name.hex(), "type": n.kind, "links": n.links, "dev": n.dev,
            "ino": n.ino if n.links > 1 else None, "xattrs": [[k.hex(), v.hex()] for k, v in n.xattrs or ()]}
           for n in nodes]
    assert got == doc["expect"]
    a, b = nodes[0], nodes[1]
    assert (a.dev, a.ino, a.links) == (b.dev, b.ino, b.links) == (2049, 77, 2)
    assert any(k == b"system.posix_acl_access" for k, _ in nodes[2].xattrs or ())


def _decode_entry(**fields: object) -> list[Node]:
    entry = {"name": b"f", "type": "file", "data": b"", **fields}
    return decode_tree("t" * 64, [], {"v": 1, "entries": [entry]})


@pytest.mark.parametrize("xattrs", [
    "not a list", [[b"user.a"]], [[b"user.a", "str value"]], [[b"", b"v"]], [[b"user.\0x", b"v"]],
    [[b"user.b", b""], [b"user.a", b""]], [[b"user.a", b""], [b"user.a", b""]],
    [[b"user.a", bytes(MAX_XATTR_BYTES)]], [[b"x" * 256, b""]],
])
def test_bad_xattrs_are_corrupt(xattrs: object) -> None:
    with pytest.raises(BlobCorrupt):
        _decode_entry(xattrs=xattrs)


@pytest.mark.parametrize("fields", [
    {"links": -1}, {"links": 2**32}, {"links": True}, {"links": 2, "ino": 5}, {"links": 2, "dev": 5},
    {"links": 2, "dev": 2**64, "ino": 1},
])
def test_bad_link_fields_are_corrupt(fields: dict[str, object]) -> None:
    with pytest.raises(BlobCorrupt):
        _decode_entry(**fields)


def test_links_on_a_dir_and_single_links_are_ignored() -> None:
    (n,) = _decode_entry(links=1)
    assert n.links == 1 and n.dev == 0
    sub = Ref(BlobType.TREE, "01" * 32)
    (d,) = decode_tree("t" * 64, [sub], {"v": 1, "entries": [{"name": b"d", "type": "dir", "tree": b"\1" * 32,
                                                              "links": 7}]})
    assert d.links == 0


def test_round_trip_through_encoding() -> None:
    n = Node(b"x", "fifo", mode=0o600, links=2, dev=3, ino=4, xattrs=[(b"security.a", b"\0"), (b"user.b", b"v")])
    refs, body = tree_body([n])
    (m,) = decode_tree("t" * 64, refs, body)
    assert (m.links, m.dev, m.ino, m.xattrs) == (2, 3, 4, n.xattrs)
    assert "links" not in tree_body([Node(b"d", "dir", tree="00" * 32, links=5)])[1]["entries"][0]
