"""The fixed-key records (config, root, pins, GC lease) and the generation manifest."""
from __future__ import annotations

import secrets
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar

from .codec import BlobType, RecordType, Ref, decode_record, encode_record
from .errors import BlobCorrupt, UnsupportedFormat

CONFIG_KEY = "config"
ROOT_KEY = "root"
PIN_PREFIX = "pins/"
GC_LEASE_KEY = "locks/gc"
REPO_FORMAT = 1
ID_MODES = ("blake3",)  # "blake3-keyed" arrives with encryption


def new_write_id() -> str:
    return secrets.token_hex(16)


def _from_fields(cls: type, raw: dict[str, Any], name: str) -> Any:
    """Build a record dataclass, refusing missing or mistyped fields (unknown extra fields are kept out)."""
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            if f.default is not MISSING:
                continue
            raise BlobCorrupt(name, f"record lacks field {f.name!r}")
        kwargs[f.name] = raw[f.name]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BlobCorrupt(name, f"bad record: {exc}") from None


class _Record:
    """Encode/decode shared by the fixed-key records: one canonical msgpack map in an envelope."""

    KIND: ClassVar[RecordType]

    def encode(self) -> bytes:
        return encode_record(self.KIND, asdict(self))  # type: ignore[call-overload]

    @classmethod
    def decode(cls, stored: bytes, name: str) -> Any:
        return _from_fields(cls, decode_record(stored, cls.KIND, name), name)


@dataclass(frozen=True)
class Config(_Record):
    repo_id: str
    created: float
    format: int = REPO_FORMAT
    id_mode: str = "blake3"
    cipher: str = "none"
    compression_level: int = 3
    chunk_min: int = 256 * 1024
    chunk_avg: int = 1024 * 1024
    chunk_max: int = 4 * 1024 * 1024
    KIND: ClassVar[RecordType] = RecordType.CONFIG

    @classmethod
    def decode(cls, stored: bytes, name: str = CONFIG_KEY) -> "Config":
        raw = decode_record(stored, RecordType.CONFIG, CONFIG_KEY)
        if raw.get("format") != REPO_FORMAT:
            raise UnsupportedFormat(f"repository format {raw.get('format')!r} is not supported (this build reads {REPO_FORMAT}); upgrade casbackup")
        if raw.get("id_mode") not in ID_MODES:
            raise UnsupportedFormat(f"repository ID mode {raw.get('id_mode')!r} is not supported by this build")
        if raw.get("cipher") != "none":
            raise UnsupportedFormat(f"repository cipher {raw.get('cipher')!r} is not supported by this build")
        return _from_fields(cls, raw, name)


@dataclass(frozen=True)
class Root(_Record):
    """The one mutable pointer: the head generation plus GC's in-flight state."""

    generation: str
    seq: int
    write_id: str
    gc_epoch: int = 0
    condemned: str | None = None  # GCSTATE blob: blobs marked for deletion, with mark times
    sweeping: str | None = None   # GCSTATE blob: blobs a sweep is deleting right now
    retain_floor: int = 0         # lowest generation seq GC promises to keep
    time: float = 0.0
    KIND: ClassVar[RecordType] = RecordType.ROOT

    @classmethod
    def decode(cls, stored: bytes, name: str = ROOT_KEY) -> "Root":
        return _from_fields(cls, decode_record(stored, cls.KIND, name), name)

    @property
    def generation_ref(self) -> Ref:
        return Ref(BlobType.GENERATION, self.generation)


@dataclass(frozen=True)
class PinRecord(_Record):
    pin_id: str
    generation: str
    seq: int
    host: str
    pid: int
    purpose: str
    created: float
    expires: float
    KIND: ClassVar[RecordType] = RecordType.PIN


@dataclass(frozen=True)
class LeaseRecord(_Record):
    holder: str
    host: str
    pid: int
    expires: float
    KIND: ClassVar[RecordType] = RecordType.LEASE


@dataclass(frozen=True)
class Generation:
    id: str
    seq: int
    parent: str | None
    tree: Ref | None
    entries: int
    time: float
    write_id: str
    message: str

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "parent": bytes.fromhex(self.parent) if self.parent else None,
            "tree": bytes.fromhex(self.tree.id) if self.tree else None,
            "entries": self.entries,
            "time": self.time,
            "write_id": self.write_id,
            "message": self.message,
        }

    @classmethod
    def from_body(cls, gen_id: str, refs: list[Ref], body: Any) -> "Generation":
        if not isinstance(body, dict):
            raise BlobCorrupt(gen_id, "generation body is not a map")
        try:
            parent = body["parent"]
            tree = body["tree"]
            seq, entries = body["seq"], body["entries"]
            if not (isinstance(seq, int) and isinstance(entries, int) and seq >= 0):
                raise TypeError
            tree_ref = Ref(BlobType.PAGE, tree.hex()) if tree is not None else None
            if tree_ref is not None and tree_ref not in refs:
                raise BlobCorrupt(gen_id, "generation tree is not among its refs")
            return cls(gen_id, seq, parent.hex() if parent is not None else None, tree_ref, entries,
                       float(body["time"]), str(body["write_id"]), str(body["message"]))
        except (KeyError, TypeError, AttributeError, ValueError):
            raise BlobCorrupt(gen_id, "malformed generation body") from None
