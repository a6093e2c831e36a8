"""Reading one generation: the pinned view `Reader` and the leases a reader holds (spec §8).

A reader resolves the root once and pins that generation (a renewing `pins.Lease`), borrows
a pin another process left (`_AttachedLease`), or, on storage that refuses writes, pins
nothing (`_NullLease`). Every read checks the lease first, so a lapsed lease is reported as
such, never as data that silently vanished.
"""
from __future__ import annotations

import builtins
import io
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Union

from .btree import Entry
from .chunklist import read_stream
from .codec import BlobType, Ref
from .errors import BlobCorrupt, BlobMissing, CommitConflict, KeyMissing, LeaseExpired, NotFound, WriteRefused
from .layout import PIN_PREFIX, pin_id_of, pin_key
from .packs import LOCATIONS_NAMESPACE, PACKED_TYPES, Location
from .pins import Lease, _margin, new_pin, read_pin
from .records import Generation, Root
from .steps import Step, Steps

if TYPE_CHECKING:
    from .repository import Repository

PIN_VALIDATION_ATTEMPTS = 50
VALUE_READ_REQUESTS = 4      # downloads ahead of the consumer
VALUE_READ_BYTES = 32 * 1024 * 1024
# A generation with at most this many entries has its blob locations read by one scan into memory
# (about 300 bytes each: at most ~80 MB) when a long read asks for them; in a bigger one they are
# looked up a batch at a time (locations()).
PRELOAD_LOCATIONS = 262_144


class _NullLease:
    """The lease of an unpinned reader (--no-pin): writes nothing, never expires.

    Nothing protects what it reads from a concurrent gc; a blob gc removed is still a loud
    BlobMissing, never skipped."""

    key = PIN_PREFIX
    released = False
    remaining = float("inf")

    def check(self) -> None:
        pass

    def release(self) -> None:
        self.released = True


class _AttachedLease:
    """A borrowed pin: we check its deadline but neither renew nor release it."""

    def __init__(self, key: str, deadline: float, monotonic: Callable[[], float]) -> None:
        self.key = key
        self._deadline = deadline
        self._monotonic = monotonic
        self.released = False

    def check(self) -> None:
        if self._monotonic() > self._deadline:
            raise LeaseExpired(f"pin {self.key} expired; list again to get a fresh pin")

    def release(self) -> None:
        self.released = True

    @property
    def remaining(self) -> float:
        return self._deadline - self._monotonic()


# What a Reader checks before every read (all three answer check/release/key/remaining).
ReaderLease = Union[Lease, _AttachedLease, _NullLease]


class Reader:
    """A pinned, read-only view of one generation; every read checks the lease first."""

    def __init__(self, repo: "Repository", generation: Generation, lease: ReaderLease,
                 gc_epoch: int | None = None) -> None:
        self.repo = repo
        self.generation = generation
        self.lease = lease
        self.gc_epoch = gc_epoch  # the root's gc_epoch when it was resolved, before the pin
        self._locations: dict[str, Location] | None = None

    @property
    def pin_id(self) -> str:
        return pin_id_of(self.lease.key)

    def _guard(self) -> None:
        self.lease.check()

    def _on_missing(self, exc: BlobMissing) -> BlobMissing:
        self._guard()  # a lapsed lease explains a missing blob better than the blob does
        return exc

    def entry(self, namespace: str, key: str) -> Entry | None:
        """The entry itself (its refs and how its value is stored), or None: for callers that
        need more than the bytes, e.g. to stream a large value or to reuse its refs."""
        self._guard()
        try:
            return self.repo.index.get(self.generation.index, namespace, key, self.generation.id)
        except BlobMissing as exc:
            raise self._on_missing(exc) from None

    def get(self, namespace: str, key: str) -> bytes:
        """The value of one key in this generation, whole; NotFound if absent. The common read:
        the key's value as the pinned generation had it, however large or however stored."""
        e = self.entry(namespace, key)
        if e is None:
            raise NotFound(f"no key {key!r} in namespace {namespace!r} (generation {self.generation.seq})")
        return self.value(e)

    def value(self, e: Entry) -> bytes:
        """An entry's whole value in memory, wherever it is stored (inline, a VALUE blob, a FILE of
        chunks), verified; use iter_value/open_value to stream values of any size."""
        if e.value is not None:
            return e.value
        assert e.value_ref is not None
        if e.value_ref.type == BlobType.VALUE:
            return self.read_blob(e.value_ref)
        return b"".join(self.iter_value(e))

    def iter_value(self, e: Entry) -> Iterator[bytes]:
        """The value piece by piece, each hash-verified; a FILE value's pieces are checked
        against the sizes its chunk list gives (a short list or chunk is corrupt, never silent).
        Memory: a few pieces (VALUE_READ_BYTES) ahead of the consumer."""
        if e.value is not None:
            yield e.value
            return
        ref = e.value_ref
        assert ref is not None
        if ref.type == BlobType.VALUE:
            yield self.read_blob(ref)
            return
        if ref.type != BlobType.FILE:
            raise BlobCorrupt(ref.id, f"a value cannot be a {ref.type.name} blob", self.generation.id)
        self._guard()
        try:  # read_blob guards the lease before every fetch; a missing chunk names this reader's generation
            for data in read_stream(ref.id, self.read_structured, self.read_blob, VALUE_READ_REQUESTS,
                                    2 * VALUE_READ_REQUESTS, VALUE_READ_BYTES):
                self._guard()
                yield data
        except BlobCorrupt as exc:
            raise exc if exc.generation else BlobCorrupt(exc.blob_id, exc.reason, self.generation.id) from None

    def open_value(self, e: Entry) -> IO[bytes]:
        """A read-only binary stream of the value (streams; never holds it whole)."""
        return io.BufferedReader(_PieceReader(self.iter_value(e)), buffer_size=1024 * 1024)

    def list(self, namespace: str | None = None, prefix: str = "") -> Iterator[Entry]:
        """Entries in key order, lazily (a generation may hold millions): all of them but the
        blob locations (`_blobs`), one namespace's, or its keys under `prefix`. Page fetches keep
        checking the lease."""
        self._guard()
        start = (namespace or "", prefix if namespace is not None else "")
        try:
            for n, e in enumerate(self.repo.index.iterate(self.generation.index, start, self.generation.id)):
                if namespace is not None and (e.namespace != namespace or not e.key.startswith(prefix)):
                    break
                if namespace is None and e.namespace == LOCATIONS_NAMESPACE:
                    continue  # the index's own (FORMAT.md §12.4): listed only when asked by name
                if not n & 1023:  # every page fetch is guarded too: a missing blob checks the lease
                    self._guard()
                yield e
        except BlobMissing as exc:
            raise self._on_missing(exc) from None

    def preload_locations(self, limit: int = PRELOAD_LOCATIONS) -> bool:
        """Read this generation's blob locations by one scan of `_blobs` (each page once) instead
        of one index descent per blob, if it has at most `limit` entries: for reads of many blobs
        (restore). False, and nothing held, for a bigger generation."""
        from .repository import location_of  # the repository imports this module

        if self._locations is not None:
            return True
        if self.generation.entries > limit:
            return False
        self._guard()
        gen = self.generation
        packs: dict[str, str] = {}
        found: dict[str, Location] = {}
        try:
            for n, e in enumerate(self.repo.index.scan_namespace(gen.index, LOCATIONS_NAMESPACE, gen.id, set())):
                loc = location_of(e, e.key, gen.id)
                if loc is not None:
                    found[e.key] = Location(loc.type, packs.setdefault(loc.pack, loc.pack), loc.offset, loc.length)
                if not n & 1023:
                    self._guard()
        except BlobMissing as exc:
            raise self._on_missing(exc) from None
        self._locations = found
        return True

    def locations(self, refs: Iterable[Ref]) -> dict[str, Location]:
        """Where this generation stores these packed blobs: from the preloaded locations, else by
        one ordered pass over `_blobs`. Loose blobs and blobs it does not locate are left out
        (reading one then raises the error that says so)."""
        ids = [r.id for r in refs if r.type in PACKED_TYPES]
        if self._locations is not None:
            return {i: self._locations[i] for i in ids if i in self._locations}
        self._guard()
        try:
            return self.repo.locate_many(self.generation.id, ids) if ids else {}
        except BlobMissing as exc:
            raise self._on_missing(exc) from None

    def read_blob(self, ref: Ref) -> bytes:
        self._guard()
        loc = self._locations.get(ref.id) if self._locations is not None else None
        try:
            if loc is not None:
                return self.repo.store.get_run([(ref, loc)], self.generation.id)[0]
            return self.repo.store.get(ref, self.generation.id)
        except BlobMissing as exc:
            raise self._on_missing(exc) from None

    def read_run(self, run: builtins.list[tuple[Ref, Location]]) -> builtins.list[bytes]:
        """Verified payloads of blobs of one pack, with one ranged read spanning them (§12.5)."""
        self._guard()
        try:
            return self.repo.store.get_run(run, self.generation.id)
        except BlobMissing as exc:
            raise self._on_missing(exc) from None

    def read_structured(self, ref: Ref) -> tuple[builtins.list[Ref], Any]:
        self._guard()
        try:
            return self.repo.store.get_structured(ref, self.generation.id)
        except BlobMissing as exc:
            raise self._on_missing(exc) from None

    def close(self) -> None:
        self.lease.release()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _PieceReader(io.RawIOBase):
    """A raw binary stream over an iterator of byte pieces."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, out: Any) -> int:
        while not self._buf:
            nxt = next(self._pieces, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(out), len(self._buf))
        out[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        super().close()



def open_unpinned(repo: "Repository", root: Root | None = None) -> Reader:
    """A reader of `root`'s generation (default: the current root) that writes nothing, for
    storage that refuses writes. A concurrent gc may remove what it reads (loudly)."""
    if root is None:
        root, _ = repo.read_root()
    return Reader(repo, repo.load_generation(root.generation), _NullLease(), gc_epoch=root.gc_epoch)


def open_pinned_steps(repo: "Repository", purpose: str, ttl: float, renew: bool = True) -> "Steps[Reader]":
    """Resolve the root, pin its generation, and validate the pin (spec §8.1), as steps: yields
    after the first root read and after the pin write. The pin holds unless gc moved between
    the two root reads, when the pinned generation may already be condemned: then it retries.
    It also never holds on a generation below the second read's retain floor: gc does not
    honour such a pin (FORMAT.md §9.1). The rule above already implies it (a validated pin never
    falls below the floor, §9.6); checking it too keeps the reader's side of that bargain local."""
    for _ in range(PIN_VALIDATION_ATTEMPTS):
        first, _ = repo.read_root()
        yield Step.ROOT_READ
        try:
            lease = new_pin(repo.backend, first.generation, first.seq, purpose, ttl, renew=renew,
                            monotonic=repo.monotonic)
        except WriteRefused as exc:
            raise WriteRefused(f"cannot write a reader pin: {exc}; to read without a pin, pass --no-pin "
                               "(or set CASBACKUP_NO_PIN=1; library: reader(pin=False))") from None
        try:
            yield Step.PINNED
            second, _ = repo.read_root()
            unchanged_head = second.generation == first.generation
            no_gc_transition = (first.gc_epoch == second.gc_epoch and first.sweeping is None and second.sweeping is None)
            honoured = first.seq >= second.retain_floor
            if (unchanged_head or no_gc_transition) and honoured:
                return Reader(repo, repo.load_generation(first.generation), lease, gc_epoch=first.gc_epoch)
        except BaseException:
            lease.release()
            raise
        lease.release()
    raise CommitConflict("could not pin a generation: the root kept changing under gc; try again")


def attach(repo: "Repository", pin_id: str) -> Reader:
    """Read under an existing live pin (e.g. one a listing process left for later readers).
    Refused for a pin below the root's retain floor, which gc does not honour (§9.1)."""
    key = pin_key(pin_id)
    try:
        # stat before get: if the holder renews in between, the clamp errs on the early side
        state = read_pin(repo.backend, key, repo.backend.stat(key).mtime)
    except KeyMissing:
        raise LeaseExpired(f"pin {pin_id} does not exist (expired and cleaned up?)") from None
    record = state.record
    if record is None:
        raise LeaseExpired(f"pin {pin_id} is unreadable ({state.error}); list again to get a fresh pin")
    root, _ = repo.read_root()
    if record.seq < root.retain_floor:
        # A late pin (FORMAT.md §9.1): its own reader refuses it and gc does not honour it.
        raise LeaseExpired(f"pin {pin_id} is on generation {record.seq}, below the retain floor "
                           f"{root.retain_floor}: gc no longer keeps it; list again to get a fresh pin")
    started = repo.monotonic()
    left = state.expires - repo.backend.now()  # clamped to mtime + MAX_LEASE, as gc counts it
    if left <= _margin(record.expires - record.created):
        raise LeaseExpired(f"pin {pin_id} has expired; list again to get a fresh pin")
    lease = _AttachedLease(key, started + left - _margin(record.expires - record.created), repo.monotonic)
    return Reader(repo, repo.load_generation(record.generation), lease)
