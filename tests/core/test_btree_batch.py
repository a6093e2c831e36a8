"""The batched lookup (BTree.get_many, Repository.locate_many) against per-key get/locate."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casbackup import btree as btree_module
from casbackup.backends import MemoryBackend
from casbackup.btree import BTree, Entry, Op, Page
from casbackup.codec import BlobType, Ref
from casbackup.errors import BlobCorrupt, BlobMissing
from casbackup.packs import LOCATIONS_NAMESPACE
from casbackup.repository import Repository
from casbackup.store import BlobStore

GEN = "9" * 64
NAMESPACES = ["_blobs", "a", "files", "z"]


class CountingTree(BTree):
    """Counts the pages each load reads, to prove one pass visits each page once."""

    def __init__(self, store: BlobStore) -> None:
        super().__init__(store)
        self.loads: list[str] = []

    def load(self, ref: Ref, generation: str | None = None, cache: bool = True) -> Page:
        self.loads.append(ref.id)
        return super().load(ref, generation, cache)


def build(keys: list[tuple[str, str]], leaf_bytes: int, fanout: int) -> tuple[CountingTree, Ref | None, list[Ref]]:
    """A tree of `keys` with small pages, so a few hundred keys make several levels."""
    tree = CountingTree(BlobStore(MemoryBackend(), cache_entries=0))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(btree_module, "LEAF_TARGET_BYTES", leaf_bytes)
        mp.setattr(btree_module, "MAX_FANOUT", fanout)
        ops = [Op(ns, k, Entry(ns, k, f"{ns}/{k}".encode(), None, ())) for ns, k in keys]
        root, _, pages = tree.apply(None, ops)
    tree.loads.clear()
    return tree, root, pages


key_text = st.text(alphabet="0123456789abcdef", min_size=1, max_size=5)
pairs = st.tuples(st.sampled_from(NAMESPACES), key_text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_get_many_returns_what_get_returns(data: Any) -> None:
    keys = sorted(data.draw(st.sets(pairs, min_size=0, max_size=1500), label="keys"))
    leaf_bytes = data.draw(st.sampled_from([60, 200, 1000, 16 * 1024]), label="leaf bytes")
    fanout = data.draw(st.sampled_from([2, 3, 8, 128]), label="fanout")
    tree, root, pages = build(keys, leaf_bytes, fanout)
    present = data.draw(st.lists(st.sampled_from(keys), max_size=400), label="present") if keys else []
    absent = data.draw(st.lists(pairs, max_size=100), label="absent")  # mostly absent, some present
    edges = [("", ""), ("\x00", ""), ("zz", ""), ("_blobs", ""), ("a", "\uffff")]
    query = present + absent + edges
    got = tree.get_many(root, query, GEN)
    expected = {k: e for k in query if (e := tree.get(root, k[0], k[1], GEN)) is not None}
    assert got == expected
    assert set(got) == set(query) & set(keys)
    # one ordered pass: no page read twice, and never more pages than the tree has
    tree.loads.clear()
    tree.get_many(root, query, GEN)
    assert len(tree.loads) == len(set(tree.loads)) <= len({p.id for p in pages} | ({root.id} if root else set()))


def test_get_many_of_nothing_and_of_an_empty_tree() -> None:
    tree, root, _ = build([("a", str(i)) for i in range(300)], 200, 4)
    assert tree.get_many(root, [], GEN) == {}
    assert tree.loads == []
    assert tree.get_many(None, [("a", "1")], GEN) == {}


def test_get_many_reads_each_page_once_where_per_key_get_reads_a_path_per_key() -> None:
    keys = [("_blobs", f"{i:05x}") for i in range(2000)]
    tree, root, pages = build(keys, 400, 4)
    for ns, k in keys:
        tree.get(root, ns, k, GEN)
    per_key = len(tree.loads)
    tree.loads.clear()
    got = tree.get_many(root, keys, GEN)
    assert len(got) == 2000
    assert len(tree.loads) == len(set(tree.loads)) == len(pages)
    assert per_key > 2000 * 3  # several levels per key: what the batch saves


def test_a_missing_page_raises_blob_missing_naming_it_and_the_generation() -> None:
    keys = [("n", f"{i:04d}") for i in range(600)]
    tree, root, pages = build(keys, 500, 4)
    assert root is not None
    leaf = next(p for p in pages if tree.load(p).level == 0 and tree.load(p).entries[0].key > "0300")
    first = tree.load(leaf).entries[0].key
    tree.store.delete(leaf.id)
    with pytest.raises(BlobMissing) as err:
        tree.get_many(root, [("n", "0001"), ("n", first), ("n", "0599")], GEN)
    assert err.value.blob_id == leaf.id and err.value.generation == GEN
    with pytest.raises(BlobMissing) as err_get:  # exactly what per-key get says
        tree.get(root, "n", first, GEN)
    assert str(err_get.value) == str(err.value)
    # keys under other pages do not need the missing one
    assert set(tree.get_many(root, [("n", "0001"), ("n", "0002")], GEN)) == {("n", "0001"), ("n", "0002")}


def test_a_corrupt_page_raises_blob_corrupt_naming_the_generation() -> None:
    store = BlobStore(MemoryBackend(), cache_entries=0)
    bad = store.put_structured(BlobType.PAGE, [], [0, [["n", "b", b"1", None, []], ["n", "a", b"2", None, []]]]).ref
    body = [1, [["n", "", bad.to_bytes()]]]
    root = store.put_structured(BlobType.PAGE, [bad], body).ref
    with pytest.raises(BlobCorrupt) as err:
        BTree(store).get_many(root, [("n", "a"), ("n", "x")], GEN)
    assert err.value.blob_id == bad.id and err.value.generation == GEN


def test_locate_many_matches_locate(world: Any) -> None:
    _, repo = world
    with repo.transaction("chunks") as txn:
        refs = [txn.put_blob(BlobType.CHUNK, f"chunk {i}".encode() * 40).ref for i in range(700)]
    gen = txn.result
    assert gen is not None
    absent = ["ab" * 32, "0" * 64, "f" * 64]
    ids = [r.id for r in refs[::3]] + absent
    many = repo.locate_many(gen.id, ids)
    assert many == {i: loc for i in ids if (loc := repo.locate(gen.id, i)) is not None}
    assert set(many) == {r.id for r in refs[::3]}
    assert repo.locate_many(gen.id, []) == {}


def test_locate_many_rejects_a_bad_location_entry_naming_the_generation(world: Any) -> None:
    _, repo = world
    blob_id = "c" * 64
    head = repo.load_generation(repo.read_root()[0].generation)
    root, _, _ = repo.index.apply(head.index, [Op(LOCATIONS_NAMESPACE, blob_id,
                                                  Entry(LOCATIONS_NAMESPACE, blob_id, b"\x93", None, ()))])
    gen = repo._write_generation(head.seq + 1, head.id, root, head.entries + 1, "w" * 32, "bad")
    with pytest.raises(BlobCorrupt) as err:
        repo.locate_many(gen.id, [blob_id, "d" * 64])
    assert err.value.blob_id == blob_id and err.value.generation == gen.id


def test_load_generation_reuses_its_parse_only_while_the_store_returns_the_same_body(world: Any) -> None:
    _, repo = world
    gen_id = repo.read_root()[0].generation
    first = repo.load_generation(gen_id)
    assert repo.load_generation(gen_id) is first
    repo.store.clear_cache()
    again = repo.load_generation(gen_id)
    assert again == first and again is not first  # read from storage again, parsed again
    repo.store.delete(gen_id)
    repo.store.clear_cache()
    with pytest.raises(BlobMissing):  # a collected generation is not kept alive by the parse cache
        repo.load_generation(gen_id)


def test_repository_keeps_few_parsed_generations(world: Any) -> None:
    _, repo = world
    from casbackup import repository as repository_module
    for i in range(repository_module.PARSED_GENERATIONS + 10):
        repo.commit([("ns", f"k{i}", b"v")])
        repo.load_generation(repo.read_root()[0].generation)
    assert len(repo._parsed) <= repository_module.PARSED_GENERATIONS
    assert isinstance(repo, Repository)
