"""FILE chunk lists: one codec, split into parts past PART_CHUNKS, read lazily with sizes checked."""
from __future__ import annotations

import pytest

from casbackup import chunklist
from casbackup.backends import MemoryBackend
from casbackup.chunklist import Piece, decode_file, iter_chunks, write_file
from casbackup.codec import MAX_STRUCTURED_PAYLOAD, BlobType, Ref, pack_structured
from casbackup.errors import BlobCorrupt
from casbackup.codec import unpack_structured
from casbackup.store import PutResult


class BlobStore:
    """The FILE codec's two functions over a dict: what it stores and reads, nothing else
    (format v2 keeps FILE blobs in packs, which only transactions write)."""

    def __init__(self, _backend: object = None) -> None:
        self.blobs: dict[str, bytes] = {}

    def put_structured(self, blob_type: BlobType, refs: list[Ref], body: object) -> PutResult:
        from casbackup.codec import blob_id
        payload = pack_structured(refs, body, blob_type)
        bid = blob_id(blob_type, payload)
        self.blobs[bid] = payload
        return PutResult(Ref(blob_type, bid), True, len(payload))

    def get_structured(self, ref: Ref, _generation: object = None) -> tuple[list[Ref], object]:
        return unpack_structured(self.blobs[ref.id], ref.id)


def _pieces(n: int) -> list[Piece]:
    return [Piece(f"{i:064x}", 1 + i % 7) for i in range(n)]


def test_short_list_is_one_leaf_and_round_trips() -> None:
    store = BlobStore(MemoryBackend())
    chunks = _pieces(10)
    ref, size = write_file(store.put_structured, chunks)
    assert size == sum(c.size for c in chunks)
    refs, body = store.get_structured(ref)
    assert decode_file(ref.id, refs, body).chunks == chunks
    assert list(iter_chunks(store.get_structured, ref.id, size)) == chunks


@pytest.mark.slow
def test_long_list_splits_into_parts_under_the_structured_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    store = BlobStore(MemoryBackend())
    chunks = _pieces(3 * chunklist.PART_CHUNKS + 5)
    sizes: list[int] = []
    put = store.put_structured

    def recording(t: BlobType, refs: list[Ref], body: object):
        sizes.append(len(pack_structured(refs, body)))
        return put(t, refs, body)

    ref, size = write_file(recording, chunks)
    assert len(sizes) == 5  # four leaves and one index
    assert max(sizes) <= MAX_STRUCTURED_PAYLOAD
    refs, body = store.get_structured(ref)
    assert decode_file(ref.id, refs, body).parts is not None
    assert list(iter_chunks(store.get_structured, ref.id, size)) == chunks


def test_sizes_are_checked_at_every_level() -> None:
    store = BlobStore(MemoryBackend())
    ref, size = write_file(store.put_structured, _pieces(4))
    with pytest.raises(BlobCorrupt, match="expected"):
        list(iter_chunks(store.get_structured, ref.id, size + 1))
    leaf = write_file(store.put_structured, _pieces(3))[0]
    refs, body = chunklist.index_body([Piece(leaf.id, 999)])
    top = store.put_structured(BlobType.FILE, refs, body).ref
    with pytest.raises(BlobCorrupt):
        list(iter_chunks(store.get_structured, top.id))


@pytest.mark.parametrize("body", [
    {"v": 1}, {"v": 2, "chunks": []}, {"v": 1, "chunks": [], "parts": []}, {"v": 1, "chunks": [[b"x", 1]]},
    {"v": 1, "chunks": [[b"\x00" * 32, -1]]}, {"v": 1, "chunks": [[b"\x00" * 32, 1]]},
])
def test_hostile_bodies_are_corrupt(body: object) -> None:
    with pytest.raises(BlobCorrupt):
        decode_file("f" * 64, [], body)
