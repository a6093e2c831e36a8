"""FILE blobs: an ordered list of chunks forming one byte stream (spec/FORMAT.md §6.4).

One codec for every stream the core and the files layer store (large metadata values, file
content). A list longer than PART_CHUNKS is split into FILE parts under an index FILE, so no
FILE payload ever exceeds codec.MAX_STRUCTURED_PAYLOAD, whatever the stream's length.

Leaf body:  {"v": 1, "chunks": [[chunk id (32-byte bin), size], ...]}   refs: the CHUNK blobs
Index body: {"v": 1, "parts":  [[FILE id (32-byte bin), size], ...]}    refs: the FILE parts
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator

from .codec import ID_LEN, BlobType, Ref
from .errors import BlobCorrupt

FILE_VERSION = 1
# One [id, size] item costs ~75 payload bytes (33 in refs, ~42 in the body): 32768 of them keep
# a FILE payload near 2.4 MiB, well under the 4 MiB structured limit.
PART_CHUNKS = 32768
MAX_FILE_DEPTH = 4         # 32768^4 chunks: more than any stream can have
MAX_PIECE = 64 * 1024 * 1024

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


def _items(raw: Any, limit: int, where: str) -> list[Piece]:
    if not isinstance(raw, list):
        raise BlobCorrupt(where, "FILE list is not an array")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes) and len(item[0]) == ID_LEN
                and type(item[1]) is int and 0 <= item[1] <= limit):
            raise BlobCorrupt(where, "malformed FILE item")
        out.append(Piece(item[0].hex(), item[1]))
    return out


def decode_file(file_id: str, refs: list[Ref], body: Any) -> FileBody:
    """Validate one FILE blob on its own: shape, sizes, and every named blob among its refs."""
    if not isinstance(body, dict) or body.get("v") != FILE_VERSION or ("chunks" in body) == ("parts" in body):
        raise BlobCorrupt(file_id, "not a version-1 FILE blob")
    refset = set(refs)
    if "chunks" in body:
        chunks = _items(body["chunks"], MAX_PIECE, file_id)
        for c in chunks:
            if c.ref not in refset:
                raise BlobCorrupt(file_id, f"chunk {c.id} is not among the blob's refs")
        return FileBody(chunks, None)
    parts = _items(body["parts"], 2**62, file_id)
    for p in parts:
        if Ref(BlobType.FILE, p.id) not in refset:
            raise BlobCorrupt(file_id, f"FILE part {p.id} is not among the blob's refs")
    return FileBody(None, parts)


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
