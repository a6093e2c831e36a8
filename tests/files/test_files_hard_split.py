"""Huge directories and huge files never make a structured blob over the reader's limit: TREEs
split into an index of TREE parts, FILEs into chunklist parts, and every reader flattens them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from casbackup.codec import MAX_STRUCTURED_PAYLOAD, BlobType, Ref, decode_blob, unpack_structured
from casbackup.errors import BlobCorrupt
from casbackup.files.diff import diff_trees
from casbackup.files.reader import TreeReader
from casbackup.files.snapshots import resolve
from casbackup.files.tree import Node, decode_file, decode_tree, decode_tree_body, split_tree, write_tree
from casbackup.layout import pack_key
from casbackup.packs import split_pack
from helpers_files import backup, make_repo, restore, restored, snapshot_of

pytestmark = pytest.mark.slow  # huge directories and files


def structured_payloads(repo) -> dict[str, tuple[BlobType, bytes]]:
    """Every TREE and FILE blob stored (format 2: in the metadata packs)."""
    out = {}
    for pack_id, _ in repo.store.list_packs():
        for item, stored in split_pack(pack_id, repo.backend.get(pack_key(pack_id)))[1]:
            kind, payload = decode_blob(item.id, stored)
            if kind in (BlobType.TREE, BlobType.FILE):
                out[item.id] = (kind, payload)
    return out


def test_huge_directory_and_huge_file_round_trip_under_the_limit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "many").mkdir(parents=True)
    for i in range(60_000):
        (src / "many" / f"empty-file-{i:06d}").touch()
    big = os.urandom(28 * 1024 * 1024)
    (src / "big.bin").write_bytes(big)
    repo = make_repo(chunk_min=256, chunk_avg=256, chunk_max=1024)  # pyfastcdc: min >= 256
    info, summary = backup(repo, src)
    assert summary.error_count == 0
    payloads = structured_payloads(repo)
    assert max(len(p) for _, p in payloads.values()) <= MAX_STRUCTURED_PAYLOAD
    # the split forms were really used
    forms = {k: set() for k in (BlobType.TREE, BlobType.FILE)}
    for bid, (kind, payload) in payloads.items():
        refs, body = unpack_structured(payload, bid)
        forms[kind].add("parts" if "parts" in body else "flat")
        if kind == BlobType.TREE:
            decode_tree(bid, refs, body)  # one blob on its own, either form
        else:
            decode_file(bid, refs, body)
    assert forms[BlobType.TREE] == {"parts", "flat"} and forms[BlobType.FILE] == {"parts", "flat"}
    with repo.reader("t") as snap:
        reader = TreeReader(snap)
        tree = resolve(snap, info.id).tree
        node = reader.lookup(tree, f"{src}/big.bin")
        assert node.file and sum(1 for _ in reader.chunks(node)) > 70_000
        many = reader.nodes(reader.lookup(tree, f"{src}/many").tree or "")
        assert len(many) == 60_000 and [n.name for n in many] == sorted(n.name for n in many)
    out = tmp_path / "out"
    restore(repo, out, info.id)
    assert snapshot_of(restored(out, src)) == snapshot_of(src)
    # the files cache reads the split parent: nothing is read again
    (src / "many" / "empty-file-000007").write_text("changed")
    info2, s2 = backup(repo, src)
    assert s2.files_unmodified == 60_000 and s2.files_changed == 1
    with repo.reader("t") as snap:
        a, b = resolve(snap, info.id).tree, resolve(snap, info2.id).tree
        assert list(diff_trees(TreeReader(snap), a, b)) == [("M", f"{src}/many/empty-file-000007")]


def _node(i: int) -> Node:
    return Node(b"f%06d" % i, "file", mode=0o644, size=0, data=b"")


def test_write_tree_splits_and_readers_check_the_parts(mem_repo, monkeypatch) -> None:
    nodes = [_node(i) for i in range(3000)]
    assert len(split_tree(nodes, budget=100_000)) > 1
    with mem_repo.transaction("t") as txn:  # format 2: packed blobs are read once committed
        small = write_tree(txn.put_structured, nodes[:3])
        monkeypatch.setattr("casbackup.files.tree.TREE_PART_BUDGET", 100_000)
        top = write_tree(txn.put_structured, list(reversed(nodes)))
    head = mem_repo.read_root()[0].generation
    refs, body = mem_repo.store.get_structured(small, head)
    assert "entries" in body
    refs, body = mem_repo.store.get_structured(top, head)
    with mem_repo.transaction("t2") as txn:
        tb = decode_tree_body(top.id, refs, body)
        assert tb.parts and len(tb.parts) > 1 and decode_tree(top.id, refs, body) == []
        # a hostile index: parts out of order, a nested index, a part not in refs
        p = [Ref(BlobType.TREE, x) for x in tb.parts]
        swapped = txn.put_structured(BlobType.TREE, p, {"v": 1, "parts": [bytes.fromhex(x) for x in tb.parts[::-1]]}).ref
        nested = txn.put_structured(BlobType.TREE, [top], {"v": 1, "parts": [bytes.fromhex(top.id)]}).ref
    with mem_repo.reader("r") as snap:
        reader = TreeReader(snap)
        assert [n.name for n in reader.nodes(top.id)] == [n.name for n in nodes]
        with pytest.raises(BlobCorrupt, match="out of order across"):
            reader.nodes(swapped.id)
        with pytest.raises(BlobCorrupt, match="do not nest"):
            reader.nodes(nested.id)
    with pytest.raises(BlobCorrupt, match="not among"):
        decode_tree_body("t" * 64, [], {"v": 1, "parts": [b"\x01" * 32]})
    for bad in ({"v": 1, "parts": []}, {"v": 1, "parts": [b"\x01" * 32] * 2}, {"v": 1, "parts": [], "entries": []}):
        with pytest.raises(BlobCorrupt):
            decode_tree_body("t" * 64, [Ref(BlobType.TREE, "01" * 32)], bad)
