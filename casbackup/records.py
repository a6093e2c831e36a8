"""The fixed-key records (config, root, pins, GC lease) and the generation manifest."""
from __future__ import annotations

import secrets
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar

from .codec import ID_LEN, MAX_PAYLOAD, BlobType, RecordType, Ref, decode_record, encode_record, is_blob_id
from .errors import BlobCorrupt, RecordCorrupt, UnsupportedFormat, UsageError
from .packs import DEFAULT_PACK_SIZE, MAX_PACK_SIZE, MIN_PACK_SIZE
from .layout import CONFIG_KEY, GC_LEASE_KEY, PIN_PREFIX, ROOT_KEY  # noqa: F401 - re-exported: keys live in layout
REPO_FORMAT = 2
ID_MODES = ("blake3", "blake3-keyed")
# "aes-256-gcm": every object sealed under a per-session key (spec §13.5); IDs are then keyed.
CIPHERS = {"none": "blake3", "aes-256-gcm": "blake3-keyed"}


def new_write_id() -> str:
    return secrets.token_hex(16)


# Times are storage-clock seconds: finite, not negative, before the year 10000.
MAX_TIME = 253402300799.0
MAX_INT = 2**63 - 1


def _is_hex(text: Any, length: int | None = None) -> bool:
    return (isinstance(text, str) and 0 < len(text) <= 128 and (length is None or len(text) == length)
            and all(c in "0123456789abcdef" for c in text))


def _is_key_part(text: Any) -> bool:
    """A single key component (spec §3), so a record field can never name a path elsewhere."""
    return (isinstance(text, str) and 0 < len(text) <= 128 and text[0] not in "."
            and all(c.isascii() and (c.isalnum() or c in "._-") for c in text))


def _typed(kind: str, value: Any, signed: bool = False) -> tuple[bool, Any]:
    """(ok, normalised value) for the annotation of a record field. Integers are 64-bit and,
    unless `signed`, not negative (counts, sequence numbers, pids, sizes)."""
    if kind == "str":
        return isinstance(value, str), value
    if kind == "str | None":
        return value is None or isinstance(value, str), value
    if kind == "int":
        low = -MAX_INT - 1 if signed else 0
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_INT, value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        value = float(value)
        return 0.0 <= value <= MAX_TIME, value  # NaN fails both comparisons
    return True, value


def _from_fields(cls: type, raw: dict[str, Any], name: str) -> Any:
    """Build a record dataclass, refusing missing, mistyped or out-of-range fields (unknown extra
    fields are kept out). Every field of a record is untrusted: a bad one makes it corrupt."""
    kwargs = {}
    for f in fields(cls):
        if f.name not in raw:
            if f.default is not MISSING:
                continue
            raise RecordCorrupt(name, f"record lacks field {f.name!r}")
        ok, value = _typed(str(f.type), raw[f.name], f.name in getattr(cls, "SIGNED", ()))
        if not ok:
            raise RecordCorrupt(name, f"field {f.name!r} is not a valid {f.type}: {_short(raw[f.name])}")
        kwargs[f.name] = value
    try:
        record = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RecordCorrupt(name, f"bad record: {exc}") from None
    problem = record.problem()
    if problem:
        raise RecordCorrupt(name, problem)
    return record


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Record:
    """Encode/decode shared by the fixed-key records: one canonical msgpack map in an envelope."""

    KIND: ClassVar[RecordType]
    SIGNED: ClassVar[frozenset[str]] = frozenset()  # integer fields that may be negative

    def problem(self) -> str | None:
        """What makes this record invalid beyond its field types, or None (spec §5)."""
        return None

    def encode(self) -> bytes:
        """Refuses to write a record readers would call corrupt (UsageError naming the field)."""
        for f in fields(self):  # type: ignore[arg-type]
            ok, _ = _typed(str(f.type), getattr(self, f.name), f.name in self.SIGNED)
            if not ok:
                raise UsageError(f"refusing to write a {self.KIND.name} record: field {f.name!r} is not a valid "
                                 f"{f.type}: {_short(getattr(self, f.name))}")
        problem = self.problem()
        if problem:
            raise UsageError(f"refusing to write a {self.KIND.name} record: {problem}")
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
    # 512 KiB on average: measured on format 2 (README benchmark), growth after a 1% change is
    # 0.44x restic's (1 MiB: 0.82x) for 1.005x the repository size and 73 objects per GiB.
    chunk_min: int = 128 * 1024
    chunk_avg: int = 512 * 1024
    chunk_max: int = 2 * 1024 * 1024
    pack_size: int = DEFAULT_PACK_SIZE  # the size writers close a pack at (FORMAT.md §12.3)
    KIND: ClassVar[RecordType] = RecordType.CONFIG
    SIGNED: ClassVar[frozenset[str]] = frozenset({"compression_level"})  # zstd has negative levels

    def problem(self) -> str | None:
        if not _is_hex(self.repo_id):
            return "repo_id is not hex"
        if not -(1 << 17) <= self.compression_level <= 22:
            return f"compression_level {self.compression_level} is out of range"
        if not 64 <= self.chunk_min <= self.chunk_avg <= self.chunk_max <= MAX_PAYLOAD:
            return (f"chunk sizes {self.chunk_min}/{self.chunk_avg}/{self.chunk_max} are not "
                    f"64 <= min <= avg <= max <= {MAX_PAYLOAD}")
        if not MIN_PACK_SIZE <= self.pack_size <= MAX_PACK_SIZE:
            return f"pack_size {self.pack_size} is not within {MIN_PACK_SIZE}..{MAX_PACK_SIZE}"
        return None

    @classmethod
    def decode(cls, stored: bytes, name: str = CONFIG_KEY) -> "Config":
        raw = decode_record(stored, RecordType.CONFIG, CONFIG_KEY)
        if raw.get("format") != REPO_FORMAT:
            raise UnsupportedFormat(f"repository format {raw.get('format')!r} is not supported (this build reads {REPO_FORMAT}); upgrade casbackup")
        if raw.get("id_mode") not in ID_MODES:
            raise UnsupportedFormat(f"repository ID mode {raw.get('id_mode')!r} is not supported by this build")
        if raw.get("cipher") not in CIPHERS:
            raise UnsupportedFormat(f"repository cipher {raw.get('cipher')!r} is not supported by this build")
        if CIPHERS[raw["cipher"]] != raw["id_mode"]:
            raise RecordCorrupt(CONFIG_KEY, f"cipher {raw['cipher']!r} goes with ID mode {CIPHERS[raw['cipher']]!r}, "
                                f"not {raw['id_mode']!r}")
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

    def problem(self) -> str | None:
        if not is_blob_id(self.generation):
            return "generation is not a blob ID"
        for name in ("condemned", "sweeping"):
            value = getattr(self, name)
            if value is not None and not is_blob_id(value):
                return f"{name} is not a blob ID"
        if not _is_hex(self.write_id):
            return "write_id is not hex"
        return None

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

    def problem(self) -> str | None:
        if not _is_key_part(self.pin_id):
            return "pin_id is not a plain key component"
        if not is_blob_id(self.generation):
            return "generation is not a blob ID"
        if self.created > self.expires:
            return "it expires before it was created"
        return None

    @classmethod
    def decode(cls, stored: bytes, name: str) -> "PinRecord":
        record: PinRecord = _from_fields(cls, decode_record(stored, cls.KIND, name), name)
        if name.startswith(PIN_PREFIX) and name != f"{PIN_PREFIX}{record.pin_id}":
            raise RecordCorrupt(name, f"it names pin {record.pin_id!r}, not the one at its key")
        return record


@dataclass(frozen=True)
class LeaseRecord(_Record):
    holder: str
    host: str
    pid: int
    expires: float
    KIND: ClassVar[RecordType] = RecordType.LEASE

    def problem(self) -> str | None:
        if not _is_hex(self.holder):
            return "holder is not hex"
        return None


@dataclass(frozen=True)
class Generation:
    id: str
    seq: int
    parent: str | None
    index: Ref | None  # root PAGE of the entry B+tree (stored as field "tree")
    entries: int
    time: float
    write_id: str
    message: str

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "parent": bytes.fromhex(self.parent) if self.parent else None,
            "tree": bytes.fromhex(self.index.id) if self.index else None,
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
            for raw_id in (parent, tree):  # spec §6.3: a 32-byte bin or nil, nothing else
                if raw_id is not None and not (isinstance(raw_id, bytes) and len(raw_id) == ID_LEN):
                    raise TypeError
            tree_ref = Ref(BlobType.PAGE, tree.hex()) if tree is not None else None
            if tree_ref is not None and tree_ref not in refs:
                raise BlobCorrupt(gen_id, "generation tree is not among its refs")
            return cls(gen_id, seq, parent.hex() if parent is not None else None, tree_ref, entries,
                       float(body["time"]), str(body["write_id"]), str(body["message"]))
        except (KeyError, TypeError, AttributeError, ValueError):
            raise BlobCorrupt(gen_id, "malformed generation body") from None
