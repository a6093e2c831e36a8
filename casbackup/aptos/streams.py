"""Byte streams of any length as one FILE blob listing fixed-size CHUNK blobs.

Aptos chunk files reach 128 MiB, over the 64 MiB blob limit, so a stream is cut into pieces
of STREAM_PIECE bytes. Fixed-size cuts suffice: Aptos files are written once and never edited,
so content-defined chunking would buy no deduplication here.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Callable, Iterator

from ..chunklist import read_full
from ..codec import BlobType, Ref, blob_id, pack_structured
from ..errors import BlobCorrupt

STREAM_PIECE = 4 * 1024 * 1024
WORKERS = 2

PutBlob = Callable[[BlobType, bytes], Any]             # returns something with .ref
PutStructured = Callable[[BlobType, list[Ref], Any], Any]


def read_pieces(src: BinaryIO, piece: int = STREAM_PIECE) -> Iterator[bytes]:
    """Full pieces of `piece` bytes until EOF (the last may be shorter); nothing for empty input."""
    while True:
        data = read_full(src, piece)
        if data:
            yield data
        if len(data) < piece:
            return


def file_body(chunks: list[tuple[str, int]]) -> tuple[list[Ref], dict[str, Any]]:
    """Refs and body of a FILE blob: every chunk is in refs, so GC and check see it."""
    refs = [Ref(BlobType.CHUNK, cid) for cid, _ in chunks]
    body = {"size": sum(n for _, n in chunks), "chunks": [[bytes.fromhex(cid), n] for cid, n in chunks]}
    return refs, body


def write_stream(pieces: Iterator[bytes], put_blob: PutBlob, put_structured: PutStructured,
                 workers: int = WORKERS) -> tuple[Ref, int]:
    """Store every piece, then the FILE blob naming them in order; returns (FILE ref, size).

    Pieces are compressed, hashed and stored on `workers` threads (zstd and BLAKE3 release
    the GIL); at most 2 x workers pieces are in memory at once.
    """
    chunks: list[tuple[str, int]] = []
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[tuple[Future[Any], int]] = deque()
        for data in pieces:
            pending.append((pool.submit(put_blob, BlobType.CHUNK, data), len(data)))
            while len(pending) >= 2 * workers:
                fut, n = pending.popleft()
                chunks.append((fut.result().ref.id, n))
        while pending:
            fut, n = pending.popleft()
            chunks.append((fut.result().ref.id, n))
    refs, body = file_body(chunks)
    res = put_structured(BlobType.FILE, refs, body)
    return res.ref, body["size"]


def stream_id(pieces: Iterator[bytes]) -> tuple[str, int]:
    """The FILE blob ID `write_stream` would produce, without storing anything (import's re-run check)."""
    chunks = [(blob_id(BlobType.CHUNK, data), len(data)) for data in pieces]
    refs, body = file_body(chunks)
    return blob_id(BlobType.FILE, pack_structured(refs, body)), body["size"]


def parse_file_body(ref: Ref, refs: list[Ref], body: Any) -> list[tuple[Ref, int]]:
    """Validate a FILE body against its refs; a body that hides a chunk from GC is corrupt."""
    if not (isinstance(body, dict) and isinstance(body.get("size"), int) and isinstance(body.get("chunks"), list)):
        raise BlobCorrupt(ref.id, "not a stream FILE body")
    known = {r.id for r in refs if r.type == BlobType.CHUNK}
    out: list[tuple[Ref, int]] = []
    total = 0
    for item in body["chunks"]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes) and len(item[0]) == 32
                and isinstance(item[1], int) and 0 < item[1] <= 64 * 1024 * 1024):
            raise BlobCorrupt(ref.id, "malformed chunk entry in stream")
        cid = item[0].hex()
        if cid not in known:
            raise BlobCorrupt(ref.id, f"chunk {cid} is not among the blob's references")
        out.append((Ref(BlobType.CHUNK, cid), item[1]))
        total += item[1]
    if total != body["size"]:
        raise BlobCorrupt(ref.id, f"chunk lengths add up to {total}, the stream declares {body['size']}")
    return out


def iter_stream(ref: Ref, read_structured: Callable[[Ref], tuple[list[Ref], Any]],
                read_blob: Callable[[Ref], bytes], workers: int = WORKERS) -> Iterator[bytes]:
    """Yield the stream piece by piece, in order; each piece is hash-verified before it is yielded.

    The next pieces are fetched and verified ahead on `workers` threads while the caller
    writes out the current one.
    """
    refs, body = read_structured(ref)
    parts = parse_file_body(ref, refs, body)
    with ThreadPoolExecutor(workers) as pool:
        ahead: deque[tuple[Future[bytes], Ref, int]] = deque()
        todo = iter(parts)
        for cref, length in todo:
            ahead.append((pool.submit(read_blob, cref), cref, length))
            if len(ahead) > workers:
                break
        while ahead:
            fut, cref, length = ahead.popleft()
            data = fut.result()
            nxt = next(todo, None)
            if nxt is not None:
                ahead.append((pool.submit(read_blob, nxt[0]), nxt[0], nxt[1]))
            if len(data) != length:
                raise BlobCorrupt(cref.id, f"chunk holds {len(data)} bytes, the stream {ref.id} expects {length}")
            yield data
