"""Streams (FILE blob + CHUNK pieces) in-process: round trips and hostile FILE bodies."""
from __future__ import annotations

import io

import pytest

from casbackup.aptos.storage import AptosStorage
from casbackup.aptos.streams import iter_stream, read_pieces, stream_id, write_stream
from casbackup.codec import BlobType
from casbackup.errors import BlobCorrupt


@pytest.mark.parametrize("size", [1, 1000, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1, 9 * 1024 * 1024])
def test_roundtrip_and_deterministic_id(mem_repo, size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    with mem_repo.transaction() as txn:
        ref, n = write_stream(read_pieces(io.BytesIO(data)), txn.put_blob, txn.put_structured)
    assert n == size and stream_id(read_pieces(io.BytesIO(data))) == (ref.id, size)
    snap = AptosStorage(mem_repo).head()
    assert b"".join(iter_stream(ref, snap.read_structured, snap.read_blob)) == data


def test_hostile_file_bodies_are_corrupt(mem_repo):
    txn = mem_repo.transaction()  # format v2: blobs are stored (and located) by a commit
    piece = txn.put_blob(BlobType.CHUNK, b"abc").ref
    hidden = txn.put_blob(BlobType.CHUNK, b"def").ref
    cases = [
        ([piece], {"size": 6, "chunks": [[bytes.fromhex(piece.id), 3], [bytes.fromhex(hidden.id), 3]]},
         "not among the blob's references"),  # a chunk GC would not see
        ([piece], {"size": 4, "chunks": [[bytes.fromhex(piece.id), 3]]}, "add up"),
        ([piece], {"size": 4, "chunks": [[bytes.fromhex(piece.id), 4]]}, "expects 4"),
        ([piece], {"size": 3, "chunks": [[b"short", 3]]}, "malformed"),
        ([piece], {"size": 3, "chunks": [[bytes.fromhex(piece.id), 2**40]]}, "malformed"),
        ([piece], ["not", "a", "map"], "not a stream"),
    ]
    hostile = [txn.put_structured(BlobType.FILE, refs, body).ref for refs, body, _ in cases]
    txn.commit()
    snap = AptosStorage(mem_repo).head()
    for ref, (refs, body, why) in zip(hostile, cases):
        with pytest.raises(BlobCorrupt, match=why):
            b"".join(iter_stream(ref, snap.read_structured, snap.read_blob))
