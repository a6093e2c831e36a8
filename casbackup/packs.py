"""Pack files and blob locations (spec/FORMAT.md §12.3, §12.4): the format v2 building block.

A pack holds many blob envelopes back to back, then its table of contents (TOC) and a trailer,
so a writer pays one create per ~16 MiB instead of one per blob, and `repair index` can rebuild
locations from packs alone. This module only encodes and decodes; the store reads locations,
transactions fill packs.
"""
from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Iterator

from .backends.base import Backend
from .codec import (
    CHECKSUM_LEN,
    HEADER_LEN,
    ID_LEN,
    MAX_PAYLOAD,
    BlobType,
    EncodedBlob,
    envelope,
    is_blob_id,
    open_envelope,
    packb,
    sealed_epoch,
    unpackb,
)
from .errors import BlobCorrupt, PackCorrupt, UsageError
from .layout import pack_key

if TYPE_CHECKING:
    from .sealing import Suite

PACK_MAGIC = b"CASP"
PACK_VERSION = 2
PACK_HEADER_LEN = 8
TRAILER_MAGIC = b"CASPTOC2"
TRAILER_LEN = 4 + len(TRAILER_MAGIC)
PACKTOC_TYPE = 0x14            # the TOC's envelope type byte (never a blob or ref type)
MAX_PACK_BLOBS = 65536         # readers refuse more
WRITE_PACK_BLOBS = 32768       # writers close a pack at this many blobs
DEFAULT_PACK_SIZE = 16 * 1024 * 1024
LOCATIONS_NAMESPACE = "_blobs"  # the index entries that locate packed blobs (§12.4)
MIN_PACK_SIZE, MAX_PACK_SIZE = 1024 * 1024, 1024 * 1024 * 1024
MIN_BLOB_LEN = HEADER_LEN + CHECKSUM_LEN
MAX_BLOB_LEN = MAX_PAYLOAD + MIN_BLOB_LEN + 1024  # a raw payload stored uncompressed, plus framing


class PackClass(IntEnum):
    """Data and metadata never share a pack, so listings never fetch file data."""

    DATA = 1
    METADATA = 2


PACKED_TYPES: dict[BlobType, PackClass] = {
    BlobType.CHUNK: PackClass.DATA,
    BlobType.VALUE: PackClass.DATA,
    BlobType.TREE: PackClass.METADATA,
    BlobType.FILE: PackClass.METADATA,
}
# Location.from_wire runs once per `_blobs` entry a scan tests (10^7 in one gc): no enum call.
_PACKED_BY_NUMBER: dict[int, BlobType] = {int(t): t for t in PACKED_TYPES}


def new_pack_id() -> str:
    """Random, not a content hash: no second pass over the pack, and nothing about plaintext."""
    return secrets.token_hex(ID_LEN)


@dataclass(frozen=True)
class Location:
    """Where a packed blob's envelope is: the value of its `_blobs` index entry (§12.4)."""

    type: BlobType
    pack: str
    offset: int
    length: int

    def to_value(self) -> bytes:
        return packb([int(self.type), bytes.fromhex(self.pack), self.offset, self.length])

    @classmethod
    def from_value(cls, raw: bytes, name: str) -> "Location":
        """Decode an entry value; BlobCorrupt naming `name` (the blob) if it breaks §12.4."""
        return cls.from_wire(unpackb(raw, name), name)

    @classmethod
    def from_wire(cls, obj: Any, name: str, pack: str | None = None) -> "Location":
        """From `[type, pack, offset, length]` (an index value) or `[type, id, offset, length]`
        (a TOC item, with `pack` given): the same four checks either way."""
        if not (isinstance(obj, list) and len(obj) == 4):
            raise BlobCorrupt(name, "location is not [type, pack, offset, length]")
        kind, second, offset, length = obj
        blob_type = _PACKED_BY_NUMBER.get(kind) if type(kind) is int else None
        if blob_type is None:
            raise BlobCorrupt(name, f"location type {kind!r} is not a packed blob type")
        if not (isinstance(second, bytes) and len(second) == ID_LEN):
            raise BlobCorrupt(name, "location does not name a 32-byte pack or blob ID")
        if type(offset) is not int or offset < PACK_HEADER_LEN:
            raise BlobCorrupt(name, f"location offset {offset!r} is before the first blob")
        if type(length) is not int or not MIN_BLOB_LEN <= length <= MAX_BLOB_LEN:
            raise BlobCorrupt(name, f"location length {length!r} is out of range")
        return cls(blob_type, pack if pack is not None else second.hex(), offset, length)


@dataclass(frozen=True)
class TocItem:
    id: str
    location: Location


class PackBuilder:
    """Collects encoded blobs of one class into one pack; `finish` gives its bytes and TOC."""

    def __init__(self, pack_class: PackClass, pack_id: str | None = None) -> None:
        self.pack_class = pack_class
        self.pack_id = pack_id or new_pack_id()
        self._parts: list[bytes] = [PACK_MAGIC + bytes([PACK_VERSION, pack_class, 0, 0])]
        self._items: list[TocItem] = []
        self._ids: dict[str, Location] = {}
        self.size = PACK_HEADER_LEN

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._ids

    def full(self, target: int) -> bool:
        return self.size >= target or len(self._items) >= WRITE_PACK_BLOBS

    def add(self, blob: EncodedBlob) -> Location:
        """Append a blob (once: a second add of the same ID returns its first location)."""
        if PACKED_TYPES.get(blob.type) != self.pack_class:
            raise UsageError(f"a {blob.type.name} blob does not belong in a {self.pack_class.name.lower()} pack")
        known = self._ids.get(blob.id)
        if known is not None:
            return known
        loc = Location(blob.type, self.pack_id, self.size, len(blob.stored))
        self._parts.append(blob.stored)
        self._items.append(TocItem(blob.id, loc))
        self._ids[blob.id] = loc
        self.size += len(blob.stored)
        return loc

    def items(self) -> list[TocItem]:
        return list(self._items)

    def finish(self, level: int | None = 3, suite: Suite | None = None) -> bytes:
        """The whole pack: header, blobs, TOC envelope, trailer (§12.3); with a `suite`, the TOC
        is sealed and bound to the pack's key (§13.5)."""
        if not self._items:
            raise UsageError("an empty pack is never written")
        toc = envelope(PACKTOC_TYPE, packb({
            "v": 1, "pack": bytes.fromhex(self.pack_id), "class": int(self.pack_class),
            "blobs": [[int(i.location.type), bytes.fromhex(i.id), i.location.offset, i.location.length]
                      for i in self._items],
        }), level, suite, pack_key(self.pack_id))
        data = b"".join(self._parts + [toc, struct.pack("<I", len(toc)), TRAILER_MAGIC])
        self._parts = []  # the joined copy is all that is needed now: do not hold the pack twice
        return data


def _pack_name(pack_id: str) -> str:
    return f"pack {pack_id}"


def toc_span(pack_id: str, trailer: bytes, size: int) -> tuple[int, int]:
    """(offset, length) of the TOC envelope from the pack's last TRAILER_LEN bytes."""
    if size < PACK_HEADER_LEN + MIN_BLOB_LEN + TRAILER_LEN or len(trailer) != TRAILER_LEN:
        raise PackCorrupt(pack_id, f"truncated: {size} bytes cannot hold a pack")
    if trailer[4:] != TRAILER_MAGIC:
        raise PackCorrupt(pack_id, "bad trailer magic")
    (toc_len,) = struct.unpack("<I", trailer[:4])
    start = size - TRAILER_LEN - toc_len
    if toc_len < MIN_BLOB_LEN or start < PACK_HEADER_LEN:
        raise PackCorrupt(pack_id, f"TOC length {toc_len} does not fit a pack of {size} bytes")
    return start, toc_len


def parse_toc(pack_id: str, stored_toc: bytes, toc_start: int, suite: Suite | None = None) -> tuple[PackClass, list[TocItem]]:
    """Verify and decode a TOC envelope; every layout rule of §12.3 is checked here (PackCorrupt)."""
    try:
        return _parse_toc(pack_id, stored_toc, toc_start, suite)
    except PackCorrupt:
        raise
    except BlobCorrupt as exc:
        raise PackCorrupt(pack_id, exc.reason) from None


def _parse_toc(pack_id: str, stored_toc: bytes, toc_start: int, suite: Suite | None) -> tuple[PackClass, list[TocItem]]:
    name = _pack_name(pack_id)
    if suite is not None:
        try:
            kind, payload = open_envelope(stored_toc, pack_key(pack_id), suite=suite)
        except BlobCorrupt as exc:
            raise BlobCorrupt(name, f"TOC: {exc.reason}") from None
    else:
        kind, payload = open_envelope(stored_toc, name)
    if kind != PACKTOC_TYPE:
        raise BlobCorrupt(name, f"TOC envelope has type {kind}, not {PACKTOC_TYPE}")
    body = unpackb(payload, name)
    if not (isinstance(body, dict) and body.get("v") == 1):
        raise BlobCorrupt(name, "TOC is not a map with v = 1")
    if body.get("pack") != bytes.fromhex(pack_id):
        raise BlobCorrupt(name, "TOC names another pack (stored under the wrong name)")
    raw_class = body.get("class")
    try:
        pack_class = PackClass(raw_class if type(raw_class) is int else -1)
    except ValueError:
        raise BlobCorrupt(name, f"unknown pack class {raw_class!r}") from None
    raw = body.get("blobs")
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_PACK_BLOBS:
        raise BlobCorrupt(name, "TOC blob list is missing, empty or too long")
    return pack_class, _toc_items(pack_id, pack_class, raw, toc_start)


def _toc_items(pack_id: str, pack_class: PackClass, raw: list[Any], toc_start: int) -> list[TocItem]:
    name = _pack_name(pack_id)
    items: list[TocItem] = []
    seen: set[str] = set()
    expected = PACK_HEADER_LEN
    for obj in raw:
        loc = Location.from_wire(obj, name, pack=pack_id)
        blob_id = obj[1].hex()
        if PACKED_TYPES[loc.type] != pack_class:
            raise BlobCorrupt(name, f"{loc.type.name} blob {blob_id} in a {pack_class.name.lower()} pack")
        if loc.offset != expected:
            raise BlobCorrupt(name, f"blob {blob_id} starts at {loc.offset}, expected {expected} (gap or overlap)")
        if blob_id in seen:
            raise BlobCorrupt(name, f"blob {blob_id} is listed twice")
        seen.add(blob_id)
        expected = loc.offset + loc.length
        items.append(TocItem(blob_id, loc))
    if expected != toc_start:
        raise BlobCorrupt(name, f"blobs end at {expected} but the TOC starts at {toc_start}")
    return items


def read_toc(backend: Backend, pack_id: str, size: int, suite: Suite | None = None) -> tuple[PackClass, list[TocItem]]:
    """The TOC of a stored pack of known `size` (from a listing) with two ranged reads."""
    key = pack_key(pack_id)
    start, length = toc_span(pack_id, backend.get_range(key, size - TRAILER_LEN, TRAILER_LEN), size)
    return parse_toc(pack_id, backend.get_range(key, start, length), start, suite)


def toc_epoch(backend: Backend, pack_id: str, size: int) -> int | None:
    """The key epoch a pack's TOC is sealed under (None: not sealed), from two small ranged reads:
    a pack's blobs are sealed in the same writer session as its TOC (§13.6)."""
    key = pack_key(pack_id)
    start, _ = toc_span(pack_id, backend.get_range(key, size - TRAILER_LEN, TRAILER_LEN), size)
    return sealed_epoch(backend.get_range(key, start, HEADER_LEN + 4))


def split_pack(pack_id: str, data: bytes, suite: Suite | None = None) -> tuple[PackClass, Iterator[tuple[TocItem, bytes]]]:
    """A whole pack's class and its (item, stored envelope) pairs, every layout rule checked;
    each envelope still needs decode_blob (check --read-data does both)."""
    if data[:4] != PACK_MAGIC or len(data) < PACK_HEADER_LEN:
        raise PackCorrupt(pack_id, "bad pack magic")
    if data[4] != PACK_VERSION:
        raise PackCorrupt(pack_id, f"pack version {data[4]} is not {PACK_VERSION}")
    if data[6:8] != b"\0\0":
        raise PackCorrupt(pack_id, "reserved header bytes are not zero")
    start, length = toc_span(pack_id, data[-TRAILER_LEN:], len(data))
    pack_class, items = parse_toc(pack_id, data[start:start + length], start, suite)
    if data[5] != pack_class:
        raise PackCorrupt(pack_id, f"header class {data[5]} differs from the TOC's {int(pack_class)}")
    view = memoryview(data)
    return pack_class, ((i, bytes(view[i.location.offset:i.location.offset + i.location.length])) for i in items)


def read_blob(backend: Backend, blob_id: str, loc: Location) -> bytes:
    """The stored envelope at a location (one ranged read); KeyMissing if the pack is gone."""
    data = backend.get_range(pack_key(loc.pack), loc.offset, loc.length)
    if len(data) != loc.length:
        raise BlobCorrupt(blob_id, f"pack {loc.pack} ends inside the blob ({len(data)} of {loc.length} bytes)")
    return data


def location_key(blob_id: str) -> str:
    """The `_blobs` entry key of a blob: its ID, so entries sort by ID (§12.4)."""
    if not is_blob_id(blob_id):
        raise UsageError(f"{blob_id!r} is not a blob ID")
    return blob_id


__all__ = [
    "DEFAULT_PACK_SIZE", "LOCATIONS_NAMESPACE", "Location", "PACKED_TYPES", "PackBuilder", "PackClass", "TocItem",
    "location_key", "new_pack_id", "parse_toc", "read_blob", "read_toc", "split_pack", "toc_span",
]
