"""Blob envelope, blob IDs, canonical msgpack and zstd with decode limits (spec/FORMAT.md §3-§4).

Everything that reads stored bytes goes through here, so every limit lives in one place.
"""
from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import blake3
import msgpack
import zstandard

from .errors import BlobCorrupt, KeyUnavailable, LimitExceeded, RecordCorrupt, UnsupportedFormat
from .sealing import CIPHER_AES256GCM, SEAL_OVERHEAD, EpochUnavailable, SealError

if TYPE_CHECKING:
    from .sealing import Suite

MAGIC = b"CASB"
FORMAT_VERSION = 2
HEADER_LEN = 8
ID_DOMAIN = b"casbackup/v1/blob\x00"
ID_LEN = 32
# Every stored object ends in BLAKE3-128(CHECKSUM_DOMAIN || header || body): the blob ID covers
# only the plaintext, and some compressed-byte flips (e.g. zstd's window descriptor) decompress
# to the same plaintext; records have no ID at all. The checksum covers every stored byte.
CHECKSUM_DOMAIN = b"casbackup/v1/envelope\x00"
CHECKSUM_LEN = 16

# Decode limits: hostile input must fail fast with bounded memory.
MAX_PAYLOAD = 64 * 1024 * 1024
# Structured (msgpack) payloads decode into Python objects that can take ~20-70x their size, so
# they get a lower limit than raw data; writers split anything larger (spec §4.5).
MAX_STRUCTURED_PAYLOAD = 4 * 1024 * 1024
MAX_STR = 1 * 1024 * 1024
MAX_ARRAY = 4 * 1024 * 1024
MAX_MAP = 1024 * 1024
# Records (config, root, pins, gc lease) are small maps.
MAX_RECORD = 1024 * 1024
# Decoded containers (arrays + maps) per payload. One payload byte can be one empty container
# (~70-80 bytes of Python memory), so payloads longer than this many bytes are decoded with
# counting hooks; shorter ones are bounded by their length and decode without hooks (hot path).
MAX_CONTAINERS = 512 * 1024


class BlobType(IntEnum):
    """Content-addressed types; the type byte is hashed into the ID so types never alias."""

    CHUNK = 1       # raw: a piece of file data
    VALUE = 2       # raw: a metadata value too large to keep inline in a page
    PAGE = 3        # structured: a B-tree page of metadata entries
    GENERATION = 4  # structured: a generation manifest
    TREE = 5        # structured: a directory listing of a file snapshot
    GCSTATE = 6     # structured: a condemned/sweeping set written by GC (refs MUST be empty)
    FILE = 7        # structured: an ordered list of chunks forming one stream


RAW_TYPES = frozenset({BlobType.CHUNK, BlobType.VALUE})


class RecordType(IntEnum):
    """Mutable or fixed-key records: same envelope, not content-addressed."""

    CONFIG = 0x10
    ROOT = 0x11
    PIN = 0x12
    LEASE = 0x13
    KEYSLOT = 0x15  # keys/<slot-id>: a key slot (spec §13.2); never sealed, its secrets are


RECORD_TYPES = frozenset(int(t) for t in RecordType)


def payload_limit(kind: int | None) -> int:
    """The largest plaintext payload a reader accepts for a type byte (spec §4.5); None:
    a structured payload of any type."""
    if kind in RAW_TYPES:
        return MAX_PAYLOAD
    if kind in RECORD_TYPES:
        return MAX_RECORD
    return MAX_STRUCTURED_PAYLOAD


def _kind_name(kind: int | None) -> str:
    if kind is None:
        return "structured"
    for enum in (BlobType, RecordType):
        try:
            return enum(kind).name
        except ValueError:
            continue
    return f"type {kind}"


class Compression(IntEnum):
    NONE = 0
    ZSTD = 1


class Cipher(IntEnum):
    NONE = 0
    AES256GCM = CIPHER_AES256GCM  # AES-256-GCM under a per-session key (spec §13.5)


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    comp = cache.get(level)
    if comp is None:
        comp = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def blob_id(blob_type: int, payload: bytes | memoryview, key: bytes | None = None) -> str:
    """BLAKE3-256 over domain || type byte || plaintext payload, as 64 lowercase hex digits;
    keyed by the repository's ID key (`key`) in an encrypted repository (spec §13.3)."""
    h = blake3.blake3(ID_DOMAIN, key=key) if key is not None else blake3.blake3(ID_DOMAIN)
    h.update(bytes([blob_type]))
    h.update(payload)
    return h.hexdigest()


def is_blob_id(text: str) -> bool:
    return len(text) == 2 * ID_LEN and all(c in "0123456789abcdef" for c in text)


def checksum(header_and_body: bytes | memoryview) -> bytes:
    """The 16-byte trailer of a stored object: BLAKE3-128 over domain || header || body."""
    h = blake3.blake3(CHECKSUM_DOMAIN)
    h.update(header_and_body)
    return h.digest(CHECKSUM_LEN)


def seal(header_and_body: bytes) -> bytes:
    """Append the envelope checksum. Public so tests can hand-craft hostile objects (bad
    frames, bombs, wrong types) that still reach the check they mean to exercise."""
    return header_and_body + checksum(header_and_body)


def envelope(kind: int, payload: bytes, level: int | None, suite: Suite | None = None, name: str = "") -> bytes:
    """Header || payload || checksum, zstd-compressed when `level` is given and it saves space;
    with a `suite`, header || sealed body instead, bound to `name` (spec §13.5).
    Low level: no limit is enforced here (encode_blob / encode_record do that)."""
    compression = Compression.NONE
    body = payload
    if level is not None and len(payload) >= 64:
        packed = _compressor(level).compress(payload)
        if len(packed) < len(payload):
            compression, body = Compression.ZSTD, packed
    if suite is not None:
        header = MAGIC + bytes([FORMAT_VERSION, kind, compression, Cipher.AES256GCM])
        return header + suite.seal(header, body, name)
    header = MAGIC + bytes([FORMAT_VERSION, kind, compression, Cipher.NONE])
    h = blake3.blake3(CHECKSUM_DOMAIN)  # seal()'s checksum without first copying header + body
    h.update(header)
    h.update(body)
    return b"".join((header, body, h.digest(CHECKSUM_LEN)))


def _version_message(name: str, version: int) -> str:
    if version == 1:
        return (f"{name}: written in storage format 1, which this build does not read (it reads format "
                f"{FORMAT_VERSION}); no migration exists, since no release wrote format 1: back up again into a new repository")
    return f"{name}: envelope format version {version} is not supported (this build reads {FORMAT_VERSION})"


def _verify_checksum(stored: bytes, name: str) -> None:
    """Checked before anything in the header is believed. A mismatch with an unknown version
    byte is an unsupported format (another version may lay out or protect its bytes
    differently), unless the object verifies with the version byte put back to ours: then
    that byte itself was damaged."""
    view = memoryview(stored)
    if checksum(view[:-CHECKSUM_LEN]) == stored[-CHECKSUM_LEN:]:
        return
    version = stored[4]
    if version != FORMAT_VERSION:
        restored = stored[:4] + bytes([FORMAT_VERSION]) + stored[5:-CHECKSUM_LEN]
        if checksum(restored) != stored[-CHECKSUM_LEN:]:
            raise UnsupportedFormat(_version_message(name, version))
    raise BlobCorrupt(name, "checksum mismatch")


def open_envelope(stored: bytes, name: str, max_payload: int | None = None,
                  suite: Suite | None = None) -> tuple[int, bytes]:
    """Verify the checksum (or, sealed, the AEAD tag), check the header, and decompress with the
    frame's declared size checked first against the limit of the object's type (or `max_payload`)."""
    if len(stored) < HEADER_LEN + CHECKSUM_LEN:
        raise BlobCorrupt(name, f"truncated: {len(stored)} bytes is shorter than the header and checksum")
    if stored[:4] != MAGIC:
        raise BlobCorrupt(name, "bad magic bytes")
    if suite is not None or is_sealed(stored):
        return _open_sealed(stored, name, max_payload, suite)
    _verify_checksum(stored, name)
    version, kind, compression, cipher = stored[4], stored[5], stored[6], stored[7]
    if version != FORMAT_VERSION:
        raise UnsupportedFormat(_version_message(name, version))
    if cipher != Cipher.NONE:
        raise UnsupportedFormat(f"{name}: cipher {cipher} is not supported by this build")
    limit = payload_limit(kind) if max_payload is None else max_payload
    return kind, _decompress(name, compression, stored[HEADER_LEN:-CHECKSUM_LEN], limit)


def is_sealed(stored: bytes) -> bool:
    """Whether an object is sealed (cipher byte 1), and not a plaintext one whose cipher byte
    was flipped: that one still verifies with the byte put back to 0, and is corrupt."""
    if len(stored) < HEADER_LEN + CHECKSUM_LEN or stored[7] != Cipher.AES256GCM:
        return False
    restored = stored[:7] + bytes([Cipher.NONE]) + stored[HEADER_LEN:-CHECKSUM_LEN]
    return checksum(restored) != stored[-CHECKSUM_LEN:]


def sealed_epoch(stored: bytes) -> int | None:
    """The key epoch a sealed object names (§13.5), or None for a plaintext one. Its first 12
    bytes are enough (a pack's TOC is asked by a ranged read of them)."""
    if len(stored) < HEADER_LEN + 4 or stored[:4] != MAGIC or stored[7] != Cipher.AES256GCM:
        return None
    return int.from_bytes(stored[HEADER_LEN:HEADER_LEN + 4], "big")


def _open_sealed(stored: bytes, name: str, max_payload: int | None, suite: Suite | None) -> tuple[int, bytes]:
    """An encrypted repository reads only sealed objects, and a sealed one only with its keys."""
    version, kind, compression, cipher = stored[4], stored[5], stored[6], stored[7]
    if cipher == Cipher.NONE:
        raise BlobCorrupt(name, "stored unencrypted in an encrypted repository (a store may not substitute plaintext)")
    if cipher != Cipher.AES256GCM:
        raise UnsupportedFormat(f"{name}: cipher {cipher} is not supported by this build")
    if suite is None:
        raise UnsupportedFormat(f"{name} is encrypted: open the repository with its password")
    if len(stored) < HEADER_LEN + SEAL_OVERHEAD:
        raise BlobCorrupt(name, f"truncated: {len(stored)} bytes cannot hold a sealed object")
    body = _opened_body(stored, name, suite)
    if version != FORMAT_VERSION:  # authentic, so the version byte is what the writer wrote
        raise UnsupportedFormat(_version_message(name, version))
    limit = payload_limit(kind) if max_payload is None else max_payload
    return kind, _decompress(name, compression, body, limit)


def _opened_body(stored: bytes, name: str, suite: Suite) -> bytes:
    """The body of a sealed object; BlobCorrupt (KeyUnavailable for an epoch not held) naming it."""
    try:
        return suite.open(stored[:HEADER_LEN], memoryview(stored)[HEADER_LEN:], name)
    except EpochUnavailable as exc:
        raise KeyUnavailable(name, f"{exc.reason} (a key epoch newer than this key's, or a damaged header: open "
                             "the repository again with a current key; if it persists, the object is damaged)") from None
    except SealError as exc:
        raise BlobCorrupt(name, exc.reason) from None


def _decompress(name: str, compression: int, body: bytes, limit: int) -> bytes:
    if compression == Compression.NONE:
        if len(body) > limit:
            raise BlobCorrupt(name, f"payload of {len(body)} bytes exceeds the limit of {limit}")
        return body
    if compression != Compression.ZSTD:
        raise BlobCorrupt(name, f"unknown compression {compression}")
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise BlobCorrupt(name, f"bad zstd frame header: {exc}") from None
    if declared < 0:
        raise BlobCorrupt(name, "zstd frame does not declare its content size")
    if declared > limit:
        raise BlobCorrupt(name, f"zstd frame declares {declared} bytes, over the limit of {limit}")
    try:
        out = _decompressor().decompress(body, max_output_size=declared)
    except zstandard.ZstdError as exc:
        raise BlobCorrupt(name, f"zstd: {exc}") from None
    if len(out) != declared:
        raise BlobCorrupt(name, f"zstd frame produced {len(out)} bytes, declared {declared}")
    return out


def seal_envelope(plain: bytes, name: str, suite: Suite) -> bytes:
    """The sealed form of a plaintext envelope (the records of an encrypted repository)."""
    _verify_checksum(plain, name)
    header = plain[:7] + bytes([Cipher.AES256GCM])
    return header + suite.seal(header, memoryview(plain)[HEADER_LEN:-CHECKSUM_LEN], name)


def unseal_envelope(stored: bytes, name: str, suite: Suite) -> bytes:
    """The plaintext envelope a sealed one holds, checksum restored: what `seal_envelope` was given."""
    if len(stored) < HEADER_LEN + SEAL_OVERHEAD or stored[:4] != MAGIC:
        raise BlobCorrupt(name, f"truncated or not an envelope ({len(stored)} bytes)")
    if stored[7] != Cipher.AES256GCM:
        _open_sealed(stored, name, None, suite)  # raises: plaintext or an unknown cipher
    return seal(stored[:7] + bytes([Cipher.NONE]) + _opened_body(stored, name, suite))



@dataclass(frozen=True)
class EncodedBlob:
    id: str
    type: BlobType
    stored: bytes
    plain_size: int


def check_payload_size(kind: int | None, size: int) -> None:
    """Writers refuse what readers would refuse: LimitExceeded names the limit."""
    limit = payload_limit(kind)
    if size > limit:
        what = "raw-payload limit (MAX_PAYLOAD)" if kind in RAW_TYPES else (
            "record limit (MAX_RECORD)" if kind in RECORD_TYPES else "structured-payload limit (MAX_STRUCTURED_PAYLOAD)")
        raise LimitExceeded(f"{_kind_name(kind)} payload of {size} bytes exceeds the {what} of {limit} bytes; "
                            "the writer must split it")


def encode_blob(blob_type: BlobType, payload: bytes, level: int | None = 3, suite: Suite | None = None) -> EncodedBlob:
    """Encode a blob; LimitExceeded if its payload is over the reader's limit for its type.
    (Structured content limits are enforced where it is packed: pack_structured.)"""
    check_payload_size(blob_type, len(payload))
    bid = blob_id(blob_type, payload, suite.id_key if suite is not None else None)
    return EncodedBlob(bid, blob_type, envelope(blob_type, payload, level, suite, bid), len(payload))


def decode_blob(expected_id: str, stored: bytes, expected_type: BlobType | None = None,
                suite: Suite | None = None) -> tuple[BlobType, bytes]:
    """Verify a stored blob against its ID; BlobCorrupt on any mismatch."""
    kind, payload = open_envelope(stored, expected_id, suite=suite)
    try:
        blob_type = BlobType(kind)
    except ValueError:
        raise BlobCorrupt(expected_id, f"unknown blob type {kind}") from None
    if expected_type is not None and blob_type != expected_type:
        raise BlobCorrupt(expected_id, f"expected a {expected_type.name} blob, found {blob_type.name}")
    actual = blob_id(blob_type, payload, suite.id_key if suite is not None else None)
    if actual != expected_id:
        raise BlobCorrupt(expected_id, f"hash mismatch (content hashes to {actual})")
    return blob_type, payload


# ---- canonical msgpack -------------------------------------------------------------------


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def packb(obj: Any) -> bytes:
    """Canonical msgpack: maps with sorted keys, arrays, bin for bytes, smallest int forms."""
    return msgpack.packb(_canonical(obj), use_bin_type=True)


class _TooManyContainers(Exception):
    pass


def _counting_hook() -> Any:
    """A list_hook/object_hook that aborts the decode after MAX_CONTAINERS containers."""
    left = MAX_CONTAINERS

    def hook(obj: Any) -> Any:
        nonlocal left
        left -= 1
        if left < 0:
            raise _TooManyContainers
        return obj

    return hook


# A value this short (a `_blobs` location, a small record field) holds too few objects for the
# cyclic collector's pause to pay: unpackb decodes it directly (the same limits apply).
_SMALL_MSGPACK = 256


def _unpack_small(data: bytes, name: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, max_bin_len=MAX_PAYLOAD,
                               max_str_len=MAX_STR, max_array_len=MAX_ARRAY, max_map_len=MAX_MAP, max_ext_len=0)
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.StackError, UnicodeDecodeError, TypeError) as exc:
        raise BlobCorrupt(name, f"msgpack: {_msgpack_failure(exc)}") from None


def _msgpack_failure(exc: Exception) -> str:
    return "too deeply nested" if isinstance(exc, msgpack.exceptions.StackError) else str(exc) or type(exc).__name__


def unpackb(data: bytes, name: str) -> Any:
    """Decode one msgpack value within every limit of spec §4.5; BlobCorrupt otherwise."""
    if len(data) <= _SMALL_MSGPACK:
        return _unpack_small(data, name)
    extra: dict[str, Any] = {}
    if len(data) > MAX_CONTAINERS:
        # Only a payload this long can hold more containers than the cap; the hooks cost
        # a Python call per container, so the (small) pages of the listing path skip them.
        hook = _counting_hook()
        extra = {"list_hook": hook, "object_hook": hook}
    # Decoding builds many small, acyclic containers; pausing the cyclic collector meanwhile
    # (as msgpack's documentation suggests) roughly halves the time to list a large generation.
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=MAX_PAYLOAD,
            max_str_len=MAX_STR,
            max_array_len=MAX_ARRAY,
            max_map_len=MAX_MAP,
            max_ext_len=0,
            **extra,
        )
    except _TooManyContainers:
        raise BlobCorrupt(name, f"msgpack: more than {MAX_CONTAINERS} arrays and maps") from None
    except (ValueError, msgpack.exceptions.ExtraData, msgpack.exceptions.StackError, UnicodeDecodeError, TypeError) as exc:
        raise BlobCorrupt(name, f"msgpack: {_msgpack_failure(exc)}") from None
    finally:
        if paused:
            gc.enable()


def _pack_checked(obj: Any, kind: int | None) -> bytes:
    """Canonical bytes that a reader accepts, or LimitExceeded: the size limit of `kind`, and
    for payloads long enough to break one, the msgpack limits (checked by decoding them back
    with the reader's own decoder, so the two sides cannot disagree)."""
    try:
        data = packb(obj)
    except (RecursionError, ValueError) as exc:
        raise LimitExceeded(f"{_kind_name(kind)} payload cannot be encoded within the decode limits: {exc}") from None
    check_payload_size(kind, len(data))
    if len(data) > MAX_CONTAINERS:
        try:
            unpackb(data, _kind_name(kind))
        except BlobCorrupt as exc:
            raise LimitExceeded(f"{_kind_name(kind)} payload exceeds a decode limit ({exc.reason}); "
                                "the writer must split it") from None
    return data


@dataclass(frozen=True, order=True)
class Ref:
    """A typed reference: the type tells GC whether to descend without reading the blob."""

    type: BlobType
    id: str

    def to_bytes(self) -> bytes:
        return bytes([self.type]) + bytes.fromhex(self.id)

    @classmethod
    def from_bytes(cls, raw: Any, name: str) -> "Ref":
        if not (isinstance(raw, bytes) and len(raw) == ID_LEN + 1):
            raise BlobCorrupt(name, "malformed reference")
        try:
            return cls(BlobType(raw[0]), raw[1:].hex())
        except ValueError:
            raise BlobCorrupt(name, f"reference to unknown blob type {raw[0]}") from None


def pack_structured(refs: list[Ref], body: Any, blob_type: BlobType | None = None) -> bytes:
    """Payload of a structured blob: [sorted unique refs as 33-byte bins, body]. GC walks refs only.
    LimitExceeded if a reader would refuse it (size, container count, string length, nesting)."""
    return _pack_checked([[r.to_bytes() for r in sorted(set(refs))], body], blob_type)


def unpack_structured(payload: bytes, name: str) -> tuple[list[Ref], Any]:
    if len(payload) > MAX_STRUCTURED_PAYLOAD:
        raise BlobCorrupt(name, f"structured payload of {len(payload)} bytes exceeds the limit of {MAX_STRUCTURED_PAYLOAD}")
    obj = unpackb(payload, name)
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], list)):
        raise BlobCorrupt(name, "structured payload is not [refs, body]")
    return [Ref.from_bytes(r, name) for r in obj[0]], obj[1]


def encode_record(kind: RecordType, fields: dict[str, Any]) -> bytes:
    """A record envelope (never compressed); LimitExceeded if a reader would refuse it."""
    return envelope(kind, _pack_checked(fields, kind), None)


def decode_record(stored: bytes, kind: RecordType, name: str) -> dict[str, Any]:
    """The record's map; RecordCorrupt naming the key (e.g. "root is corrupt: checksum mismatch")."""
    try:
        found, payload = open_envelope(stored, name)
        if found != kind:
            raise BlobCorrupt(name, f"expected a {kind.name} record, found {_kind_name(found)}")
        obj = unpackb(payload, name)
    except BlobCorrupt as exc:
        raise RecordCorrupt(name, exc.reason) from None
    if not isinstance(obj, dict):
        raise RecordCorrupt(name, "record is not a map")
    return obj
