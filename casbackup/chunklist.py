"""FILE blobs: an ordered list of chunks forming one byte stream (spec/FORMAT.md §6.4).

The one codec for every stream any layer stores (large metadata values, file content, Aptos
files). A list longer than PART_CHUNKS is split into FILE parts under an index FILE, so no
FILE payload ever exceeds codec.MAX_STRUCTURED_PAYLOAD, whatever the stream's length.

Leaf body:  {"v": 1, "chunks": [[chunk id (32-byte bin), size], ...]}   refs: the CHUNK blobs
Index body: {"v": 1, "parts":  [[FILE id (32-byte bin), size], ...]}    refs: the FILE parts
Legacy leaf {"size": total, "chunks": [[chunk id, size], ...]}: what Aptos streams were written
as before this codec served them. It is read (and checked) like a leaf, never written, and its
ID is still computed, so content stored that way is recognised as the same content.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any, Callable, Collection, Iterable, Iterator

from .codec import ID_LEN, BlobType, Ref, blob_id, pack_structured
from .errors import BlobCorrupt
from .transfer import ordered_map

FILE_VERSION = 1
# One [id, size] item costs ~75 payload bytes (33 in refs, ~42 in the body): 32768 of them keep
# a FILE payload near 2.4 MiB, well under the 4 MiB structured limit.
PART_CHUNKS = 32768
MAX_FILE_DEPTH = 4         # 32768^4 chunks: more than any stream can have
MAX_PIECE = 64 * 1024 * 1024

PutBlob = Callable[[BlobType, bytes], Any]                  # returns something with .ref
PutStructured = Callable[[BlobType, list[Ref], Any], Any]   # returns something with .ref
ReadStructured = Callable[[Ref], tuple[list[Ref], Any]]


@dataclass(frozen=True, slots=True)
class Piece:
    """One item of a FILE list: a chunk (leaf) or a FILE part (index), with its byte size."""

    id: str
    size: int

    @property
    def ref(self) -> Ref:
        return Ref(BlobType.CHUNK, self.id)


@dataclass(frozen=True, slots=True)
class FileBody:
    """A validated FILE body: exactly one of `chunks` (a leaf) or `parts` (an index)."""

    chunks: list[Piece] | None
    parts: list[Piece] | None

    @property
    def size(self) -> int:
        return sum(p.size for p in (self.chunks if self.chunks is not None else self.parts or []))


def leaf_body(chunks: list[Piece]) -> tuple[list[Ref], dict[str, Any]]:
    return [c.ref for c in chunks], {"v": FILE_VERSION, "chunks": [[bytes.fromhex(c.id), c.size] for c in chunks]}


def index_body(parts: list[Piece]) -> tuple[list[Ref], dict[str, Any]]:
    return ([Ref(BlobType.FILE, p.id) for p in parts],
            {"v": FILE_VERSION, "parts": [[bytes.fromhex(p.id), p.size] for p in parts]})


def write_file(put_structured: PutStructured, chunks: list[Piece]) -> tuple[Ref, int]:
    """Store the FILE blob(s) naming `chunks` in order; returns (top FILE ref, total size)."""
    level: list[Piece] = list(chunks)
    make: Callable[[list[Piece]], tuple[list[Ref], dict[str, Any]]] = leaf_body
    while True:
        groups = [level[i:i + PART_CHUNKS] for i in range(0, len(level), PART_CHUNKS)] or [[]]
        written = []
        for group in groups:
            refs, body = make(group)
            res = put_structured(BlobType.FILE, refs, body)
            written.append(Piece(res.ref.id, sum(p.size for p in group)))
        if len(written) == 1:
            return Ref(BlobType.FILE, written[0].id), written[0].size
        level, make = written, index_body


def store_stream(pieces: Iterable[bytes], put_blob: PutBlob, put_structured: PutStructured, workers: int,
                 in_flight: int) -> tuple[Ref, int]:
    """Store each piece as a CHUNK (compressed, hashed and uploaded on `workers` threads, at most
    `in_flight` pieces held at once), then the FILE naming them; returns (FILE ref, size)."""
    def put_chunk(data: bytes) -> Piece:
        return Piece(put_blob(BlobType.CHUNK, data).ref.id, len(data))

    chunks = list(ordered_map(put_chunk, pieces, workers, in_flight, name="casbackup-stream"))
    return write_file(put_structured, chunks)


@dataclass(frozen=True, slots=True)
class _Computed:
    ref: Ref


def _id_computer(id_key: bytes | None) -> Callable[[BlobType, list[Ref], Any], _Computed]:
    def compute(blob_type: BlobType, refs: list[Ref], body: Any) -> _Computed:
        return _Computed(Ref(blob_type, blob_id(blob_type, pack_structured(refs, body, blob_type), id_key)))
    return compute


def legacy_body(chunks: list[Piece]) -> tuple[list[Ref], dict[str, Any]]:
    """(refs, body) of the legacy Aptos leaf: only to compute the ID older writers gave a list."""
    return [c.ref for c in chunks], {"size": sum(c.size for c in chunks),
                                     "chunks": [[bytes.fromhex(c.id), c.size] for c in chunks]}


def file_ids(chunks: list[Piece], id_key: bytes | None = None) -> tuple[str, str]:
    """The FILE IDs this chunk list has, stored by write_file or by an older Aptos writer
    (legacy body), computed without storing anything: the same bytes are the same content."""
    compute = _id_computer(id_key)
    top, _ = write_file(compute, chunks)
    return top.id, compute(BlobType.FILE, *legacy_body(chunks)).ref.id


def _items(raw: Any, limit: int, where: str, smallest: int = 0) -> list[Piece]:
    if not isinstance(raw, list):
        raise BlobCorrupt(where, "FILE list is not an array")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes) and len(item[0]) == ID_LEN
                and type(item[1]) is int and smallest <= item[1] <= limit):
            raise BlobCorrupt(where, "malformed FILE item")
        out.append(Piece(item[0].hex(), item[1]))
    return out


def _listed(items: list[Piece], blob_type: BlobType, refs: Collection[Ref], where: str) -> list[Piece]:
    """A blob that names another outside its refs would hide it from GC and check: corrupt."""
    for p in items:
        if Ref(blob_type, p.id) not in refs:
            raise BlobCorrupt(where, f"{'chunk' if blob_type == BlobType.CHUNK else 'FILE part'} {p.id} "
                                     "is not among the blob's references")
    return items


def decode_chunks(raw: Any, refs: Collection[Ref], where: str, limit: int = MAX_PIECE) -> list[Piece]:
    """A `[[chunk id, size], ...]` list (a leaf's, or one inlined in a TREE entry), validated,
    each chunk among `refs` (pass a set)."""
    return _listed(_items(raw, limit, where), BlobType.CHUNK, refs, where)


def _legacy(file_id: str, refs: set[Ref], body: dict[str, Any]) -> FileBody:
    """The legacy Aptos leaf: pieces of 1 byte to MAX_PIECE whose sizes add up to `size`."""
    chunks = _listed(_items(body["chunks"], MAX_PIECE, file_id, smallest=1), BlobType.CHUNK, refs, file_id)
    total = sum(c.size for c in chunks)
    if total != body["size"]:
        raise BlobCorrupt(file_id, f"chunk lengths add up to {total}, the stream declares {body['size']}")
    return FileBody(chunks, None)


def decode_file(file_id: str, refs: list[Ref], body: Any) -> FileBody:
    """Validate one FILE blob of any form on its own: shape, sizes, and every named blob among
    its refs. A legacy Aptos body decodes as the leaf it is."""
    refset = set(refs)
    if isinstance(body, dict) and "v" not in body and type(body.get("size")) is int and "chunks" in body:
        return _legacy(file_id, refset, body)
    if not isinstance(body, dict) or body.get("v") != FILE_VERSION or ("chunks" in body) == ("parts" in body):
        raise BlobCorrupt(file_id, "not a stream FILE body (neither version 1 nor the legacy size/chunks form)")
    if "chunks" in body:
        return FileBody(decode_chunks(body["chunks"], refset, file_id), None)
    return FileBody(None, _listed(_items(body["parts"], 2**62, file_id), BlobType.FILE, refset, file_id))


def iter_chunks(read_structured: ReadStructured, file_id: str, expected_size: int | None = None) -> Iterator[Piece]:
    """The chunks of a FILE in order, reading index parts lazily (memory: one part per level).

    Sizes are checked at every level: a part must hold the bytes its index says, and the whole
    the `expected_size` the caller knows (a TREE entry's size), so a short list is never silent.
    """
    stack: list[tuple[Iterator[Piece], bool]] = []  # (items, is an index level)

    def push(fid: str, size: int | None) -> None:
        if len(stack) >= MAX_FILE_DEPTH:
            raise BlobCorrupt(fid, f"FILE parts nested deeper than {MAX_FILE_DEPTH} levels")
        refs, body = read_structured(Ref(BlobType.FILE, fid))
        fb = decode_file(fid, refs, body)
        if size is not None and fb.size != size:
            raise BlobCorrupt(fid, f"FILE lists {fb.size} bytes, {size} were expected")
        if fb.chunks is not None:
            stack.append((iter(fb.chunks), False))
        else:
            stack.append((iter(fb.parts or []), True))

    push(file_id, expected_size)
    while stack:
        items, is_index = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
        elif is_index:
            push(item.id, item.size)
        else:
            yield item


def read_stream(file_id: str, read_structured: ReadStructured, read_blob: Callable[[Ref], bytes], workers: int,
                in_flight: int, max_bytes: int | None = None, expected_size: int | None = None) -> Iterator[bytes]:
    """A FILE's content piece by piece, in order, each hash-verified (by `read_blob`) and
    length-checked against its list before it is yielded; the next pieces are fetched ahead on
    `workers` threads (at most `in_flight` pieces, `max_bytes` bytes) while the caller consumes."""
    def fetch(c: Piece) -> bytes:
        data = read_blob(c.ref)
        if len(data) != c.size:
            raise BlobCorrupt(c.id, f"chunk holds {len(data)} bytes, FILE {file_id} expects {c.size}")
        return data

    yield from ordered_map(fetch, iter_chunks(read_structured, file_id, expected_size), workers, in_flight,
                           max_bytes, cost=lambda c: max(c.size, 1), name="casbackup-read")


def read_full(stream: IO[bytes], size: int) -> bytes:
    """Up to `size` bytes, fewer only at end of stream: pipes return short reads, and a stream's
    pieces must be full so that the same bytes always cut into the same chunks."""
    buf = bytearray(size)
    view = memoryview(buf)
    filled = 0
    while filled < size:
        n = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not n:
            break
        filled += n
    del view
    if filled < size:
        del buf[filled:]
    return bytes(buf)
