"""Properties of the TREE codec: round trips exactly, and hostile bodies only ever raise BlobCorrupt."""
from __future__ import annotations

import os

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from casbackup.codec import BlobType, Ref, blob_id, pack_structured, unpack_structured
from casbackup.errors import BlobCorrupt
from casbackup.files.tree import Chunk, Node, decode_tree, tree_body

names = st.binary(min_size=1, max_size=40).filter(lambda b: b not in (b".", b"..") and b"/" not in b and b"\0" not in b)
ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
common = dict(mode=st.integers(0, 0o7777), mtime_ns=st.integers(-(2**62), 2**62), uid=st.integers(0, 2**32 - 1),
              gid=st.integers(0, 2**32 - 1))


@st.composite
def nodes(draw) -> Node:
    kind = draw(st.sampled_from(["file", "dir", "symlink", "inline"]))
    name = draw(names)
    meta = {k: draw(v) for k, v in common.items()}
    if kind == "dir":
        return Node(name, "dir", tree=draw(ids), **meta)
    if kind == "symlink":
        return Node(name, "symlink", target=draw(names), **meta)
    if kind == "inline":
        data = draw(st.binary(max_size=64))
        return Node(name, "file", size=len(data), data=data, **meta)
    chunks = [Chunk(i, draw(st.integers(1, 2**30))) for i in draw(st.lists(ids, max_size=5))]
    return Node(name, "file", size=sum(c.size for c in chunks), chunks=chunks, ino=draw(st.integers(0, 2**40)), **meta)


@settings(max_examples=80, deadline=None)
@given(st.lists(nodes(), max_size=12, unique_by=lambda n: n.name))
def test_tree_roundtrip(items: list[Node]) -> None:
    refs, body = tree_body(items)
    payload = pack_structured(refs, body)
    tid = blob_id(BlobType.TREE, payload)
    got_refs, got_body = unpack_structured(payload, tid)
    decoded = decode_tree(tid, got_refs, got_body)
    assert decoded == sorted(items, key=lambda n: n.name)
    assert pack_structured(*tree_body(decoded)) == payload  # canonical: re-encoding gives the same bytes


junk = st.recursive(st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=6),
                    max_leaves=30)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "entries"]), junk) | junk,
       st.lists(st.dictionaries(st.sampled_from(["name", "type", "mode", "size", "data", "chunks", "tree", "target",
                                                  "mtime_ns", "uid", "gid", "file"]), junk), max_size=4))
@pytest.mark.slow
def test_hostile_tree_bodies_only_raise_blobcorrupt(body, entries) -> None:
    for candidate in (body, {"v": 1, "entries": entries}):
        try:
            decode_tree("t" * 64, [Ref(BlobType.CHUNK, os.urandom(32).hex())], candidate)
        except BlobCorrupt:
            pass
