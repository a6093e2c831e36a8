"""Byte streams of any length as one FILE blob (the core codec, spec/FORMAT.md §6.4) listing
fixed-size CHUNK blobs.

Aptos chunk files reach 128 MiB, over the 64 MiB blob limit, so a stream is cut into pieces
of STREAM_PIECE bytes. Fixed-size cuts suffice: Aptos files are written once and never edited,
so content-defined chunking would buy no deduplication here. Streams written before the core
codec served Aptos have a legacy FILE body; chunklist reads it, and `stream_ids` gives both IDs
so a re-run recognises such content as the same.
"""
from __future__ import annotations

from typing import Any, BinaryIO, Callable, Iterator

from ..chunklist import Piece, PutBlob, PutStructured, file_ids, read_full, read_stream, store_stream
from ..codec import BlobType, Ref, blob_id

STREAM_PIECE = 4 * 1024 * 1024
WORKERS = 2


def read_pieces(src: BinaryIO, piece: int = STREAM_PIECE) -> Iterator[bytes]:
    """Full pieces of `piece` bytes until EOF (the last may be shorter); nothing for empty input."""
    while True:
        data = read_full(src, piece)
        if data:
            yield data
        if len(data) < piece:
            return


def write_stream(pieces: Iterator[bytes], put_blob: PutBlob, put_structured: PutStructured,
                 workers: int = WORKERS) -> tuple[Ref, int]:
    """Store every piece, then the FILE blob naming them in order; returns (FILE ref, size).

    Pieces are compressed, hashed and stored on `workers` threads (zstd and BLAKE3 release
    the GIL); at most 2 x workers pieces are in memory at once.
    """
    return store_stream(pieces, put_blob, put_structured, workers, 2 * workers)


def stream_ids(pieces: Iterator[bytes], id_key: bytes | None = None) -> tuple[tuple[str, str], int]:
    """The FILE blob IDs this content has (as `write_stream` stores it, then as older writers
    did) and its size, without storing anything: import's and save's "already there" checks."""
    chunks = [Piece(blob_id(BlobType.CHUNK, data, id_key), len(data)) for data in pieces]
    return file_ids(chunks, id_key), sum(c.size for c in chunks)


def stream_id(pieces: Iterator[bytes], id_key: bytes | None = None) -> tuple[str, int]:
    """The FILE blob ID `write_stream` would produce, and the size, without storing anything."""
    ids, size = stream_ids(pieces, id_key)
    return ids[0], size


def iter_stream(ref: Ref, read_structured: Callable[[Ref], tuple[list[Ref], Any]],
                read_blob: Callable[[Ref], bytes], workers: int = WORKERS,
                expected_size: int | None = None) -> Iterator[bytes]:
    """The stream piece by piece (chunklist.read_stream): `workers` pieces fetched ahead."""
    return read_stream(ref.id, read_structured, read_blob, workers, workers + 1, expected_size=expected_size)
