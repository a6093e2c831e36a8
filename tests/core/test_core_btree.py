"""The copy-on-write B+tree against a dict model, structural sharing, and corrupt pages."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casbackup.backends import MemoryBackend
from casbackup.btree import BTree, Entry, Op
from casbackup.codec import BlobType, Ref
from casbackup.errors import BlobCorrupt, BlobMissing
from casbackup.store import BlobStore

names = st.sampled_from(["a", "b", "ns"])
keys = st.text(alphabet="abcdefghij", min_size=1, max_size=6)
ops_strategy = st.lists(
    st.lists(st.tuples(names, keys, st.one_of(st.none(), st.binary(max_size=300))), max_size=60),
    min_size=1, max_size=6,
)


def entry(ns: str, key: str, value: bytes) -> Entry:
    return Entry(ns, key, value, None, ())


def contents(tree: BTree, root: Ref | None) -> dict[tuple[str, str], bytes]:
    return {(e.namespace, e.key): e.value or b"" for e in tree.iterate(root)}


@settings(max_examples=60)
@given(ops_strategy)
def test_btree_matches_a_dict(batches: list[list[tuple[str, str, bytes | None]]]) -> None:
    store = BlobStore(MemoryBackend(), cache_entries=0)
    tree = BTree(store)
    model: dict[tuple[str, str], bytes] = {}
    root: Ref | None = None
    count = 0
    history = []
    for batch in batches:
        ops = {}
        for ns, key, value in batch:
            ops[(ns, key)] = Op(ns, key, None if value is None else entry(ns, key, value))
        before = dict(model)
        for (ns, key), op in ops.items():
            if op.entry is None:
                model.pop((ns, key), None)
            else:
                model[(ns, key)] = op.entry.value or b""
        root, delta, _ = tree.apply(root, list(ops.values()))
        count += delta
        assert count == len(model)
        assert contents(tree, root) == model
        for (ns, key), value in list(model.items())[:20]:
            e = tree.get(root, ns, key)
            assert e is not None and e.value == value
        assert tree.get(root, "zz", "missing") is None
        for start in [("", "")] + [(ns, key) for ns, key, _ in batch[:5]] + [("b", "e"), ("zz", "")]:
            got = [(e.namespace, e.key) for e in tree.iterate(root, start)]
            assert got == sorted(k for k in model if k >= start)
        history.append((root, dict(model)))
        del before
    # Older roots are unchanged (copy-on-write): every version still reads as it was.
    for old_root, old_model in history:
        assert contents(tree, old_root) == old_model


def test_iterate_from_a_start_key() -> None:
    tree = BTree(BlobStore(MemoryBackend()))
    n = 60_000
    root, _, _ = tree.apply(None, [Op("ns", f"{i:05d}", entry("ns", f"{i:05d}", b"v" * 200)) for i in range(n)])
    assert tree.load(root).level >= 2  # big enough to have two levels of internal pages
    for first in (0, 1, 2500, 31_337, n - 1):
        got = [e.key for e in tree.iterate(root, ("ns", f"{first:05d}"))]
        assert got == [f"{i:05d}" for i in range(first, n)]
    assert [e.key for e in tree.iterate(root, ("ns", "02500x"))][0] == "02501"
    assert list(tree.iterate(root, ("nt", ""))) == []


def test_one_put_into_a_large_tree_writes_few_small_pages() -> None:
    store = BlobStore(MemoryBackend())
    tree = BTree(store)
    root, _, pages = tree.apply(None, [Op("ns", f"k{i:07d}", entry("ns", f"k{i:07d}", b"v" * 40))
                                       for i in range(100_000)])
    before = {i for i, _ in store.list()}
    new_root, delta, written = tree.apply(root, [Op("ns", "k0050000x", entry("ns", "k0050000x", b"new"))])
    assert delta == 1
    new = {i for i, _ in store.list()} - before
    assert len(new) == len(written) <= 4  # the path from the root to one leaf
    size = sum(info.size for i, info in store.list() if i in new)
    assert size < 64 * 1024
    assert tree.get(new_root, "ns", "k0050000x").value == b"new"  # type: ignore[union-attr]
    assert tree.get(root, "ns", "k0050000x") is None


def test_deleting_everything_gives_an_empty_tree() -> None:
    tree = BTree(BlobStore(MemoryBackend()))
    root, _, _ = tree.apply(None, [Op("n", str(i), entry("n", str(i), b"x" * 500)) for i in range(500)])
    root, delta, _ = tree.apply(root, [Op("n", str(i), None) for i in range(500)])
    assert root is None and delta == -500


def test_missing_page_is_loud() -> None:
    store = BlobStore(MemoryBackend(), cache_entries=0)
    tree = BTree(store)
    root, _, pages = tree.apply(None, [Op("n", f"{i:04d}", entry("n", f"{i:04d}", b"x" * 300)) for i in range(500)])
    assert root is not None
    leaf = next(p for p in pages if p != root)
    store.delete(leaf.id)
    with pytest.raises(BlobMissing) as err:
        list(tree.iterate(root, generation="g" * 64))
    assert err.value.blob_id == leaf.id and err.value.generation == "g" * 64


@pytest.mark.parametrize("body", [
    [0, [["n", "b", b"1", None, []], ["n", "a", b"2", None, []]]],  # unsorted
    [0, [["n", "a", b"1", None, []], ["n", "a", b"2", None, []]]],  # duplicate
    [0, [["n", "a", None, None, []]]],  # neither inline value nor value blob
    [0, [["n", "a", b"1"]]],  # short entry
    [99, []],  # level out of range
    [1, [["n", "a", bytes([BlobType.CHUNK]) + b"\0" * 32]]],  # child is not a page
    "not a page",
])
def test_malformed_pages_are_corrupt(body: object) -> None:
    store = BlobStore(MemoryBackend())
    ref = store.put_structured(BlobType.PAGE, [], body).ref
    with pytest.raises(BlobCorrupt):
        BTree(store).load(ref)
