"""Open, read (pinned) and commit (compare-and-swap with rebase) — spec/FORMAT.md §7-§8."""
from __future__ import annotations

import builtins
import io
import logging
import random
import secrets
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO, Any, Callable, Generator, Iterable, Iterator, TypeVar

from .backends.base import Backend
from .btree import INLINE_VALUE_MAX, MAX_ENTRY_REFS, BTree, Entry, Op
from .chunklist import Piece, iter_chunks, read_full, write_file
from .codec import BlobType, Ref
from .errors import (
    BackendError,
    BlobCorrupt,
    BlobMissing,
    CapabilityError,
    CommitConflict,
    EtagMismatch,
    KeyMissing,
    LeaseExpired,
    NotFound,
    OutcomeUnknown,
    RepositoryExists,
    RepositoryNotFound,
    UsageError,
    WriteRefused,
)
from .gcstate import load_gcstate, write_gcstate
from .pins import DEFAULT_PIN_TTL, Lease, _margin, new_pin, read_pin
from .records import CONFIG_KEY, PIN_PREFIX, ROOT_KEY, Config, Generation, Root, new_write_id
from .store import BLOB_PREFIX, BlobStore, PutResult
from .transfer import get_many

log = logging.getLogger("casbackup")

COMMIT_TIMEOUT = 300.0
PIN_VALIDATION_ATTEMPTS = 50
ROOT_REASK_LIMIT = 8

# Values: up to INLINE_VALUE_MAX inline in the page; up to VALUE_BLOB_MAX one VALUE blob;
# larger, a FILE (chunklist.py) of VALUE_PIECE-byte CHUNK blobs, so any size round-trips.
VALUE_BLOB_MAX = 4 * 1024 * 1024
VALUE_PIECE = 4 * 1024 * 1024
VALUE_WORKERS = 2            # upload threads for a large value
VALUE_IN_FLIGHT = 4          # pieces queued or uploading at once (bounded memory)
VALUE_READ_REQUESTS = 4      # downloads ahead of the consumer
VALUE_READ_BYTES = 32 * 1024 * 1024

T = TypeVar("T")
Steps = Generator[str, None, T]


def run_steps(steps: "Steps[T]") -> T:
    """Drive a step generator to completion (production path; tests interleave the steps)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def location(backend: Backend) -> str:
    """The path or URL that messages name (every backend sets `location`; wrappers may not)."""
    return str(getattr(backend, "location", None) or backend)


def _holds_blobs(backend: Backend, fresh: bool) -> bool:
    """Whether any blob is stored. `fresh` (no config, no root): a location some backends cannot
    list yet because it does not exist (rclone on a new path) counts as empty."""
    try:
        for _ in backend.list(BLOB_PREFIX):
            return True
    except BackendError:
        if not fresh:
            raise
    return False


def _validate_name(kind: str, text: str) -> str:
    try:
        size = len(text.encode()) if isinstance(text, str) else 0
    except UnicodeEncodeError:  # undecodable bytes from argv or a file name (surrogates)
        size = 0
    if not size or size > 1024 or "\x00" in text:
        raise UsageError(f"invalid {kind} {text!r}: it must be 1-1024 bytes of UTF-8 with no NUL")
    return text




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


class Repository:
    # False: readers do not write a pin (read-only storage; CLI --no-pin). Transactions always
    # pin their base. Set on an instance: `repo.pin_reads = False`.
    pin_reads = True

    def __init__(self, backend: Backend, config: Config, writable: bool,
                 monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.backend = backend
        self.config = config
        self.writable = writable
        self.store = BlobStore(backend, level=config.compression_level)
        self.index = BTree(self.store)  # the entry B+tree (spec §6.2)
        self.monotonic = monotonic
        self.sleep = sleep

    # ---- lifecycle ---------------------------------------------------------------------

    @classmethod
    def init(cls, backend: Backend, unsafe_single_writer: bool = False, **settings: Any) -> "Repository":
        """Create a repository, or finish an init that crashed before writing any blob.

        A location that holds any blob is never initialised: with its root lost, a fresh empty
        generation 0 would make the next gc delete every backup (spec §7.1)."""
        where = location(backend)
        try:
            backend.stat(CONFIG_KEY)
            config_exists = True
        except KeyMissing:
            config_exists = False
        root_exists = True
        try:
            backend.stat(ROOT_KEY)
        except KeyMissing:
            root_exists = False
        if root_exists:
            raise RepositoryExists(f"a repository already exists at {where}")
        if _holds_blobs(backend, fresh=not config_exists):
            raise RepositoryExists(
                f"{where} already holds casbackup data but has no root record; refusing to initialise it "
                f"(that would hide every backup from gc). Run 'casbackup -r {where} repair root' to reinstall "
                "its newest complete generation")
        self_test(backend, unsafe_single_writer)
        if not config_exists:
            config = Config(repo_id=secrets.token_hex(16), created=backend.now(), **settings)
            if not backend.create(CONFIG_KEY, config.encode()):
                raise RepositoryExists(f"a repository was created at {where} concurrently")
        config = Config.decode(backend.get(CONFIG_KEY))
        repo = cls(backend, config, writable=True)
        write_id = new_write_id()
        gen = repo._write_generation(0, None, None, 0, write_id, "init")
        try:
            backend.compare_and_swap(ROOT_KEY, None, Root(gen.id, 0, write_id, time=backend.now()).encode())
        except EtagMismatch:
            raise RepositoryExists(f"a repository was created at {where} concurrently") from None
        return repo

    @classmethod
    def open(cls, backend: Backend, write: bool = False, unsafe_single_writer: bool = False) -> "Repository":
        try:
            config = Config.decode(backend.get(CONFIG_KEY))
        except KeyMissing:
            raise RepositoryNotFound(f"no casbackup repository at {location(backend)} (no config); "
                                     "create one with 'casbackup init'") from None
        if write:
            self_test(backend, unsafe_single_writer)
        return cls(backend, config, writable=write)

    def close(self) -> None:
        self.backend.close()

    # ---- root and generations ---------------------------------------------------------

    def read_root(self) -> tuple[Root, str]:
        try:
            data, etag = self.backend.read_versioned(ROOT_KEY)
        except KeyMissing:
            where = location(self.backend)
            raise RepositoryNotFound(f"the repository at {where} has no root record; run 'casbackup -r {where} "
                                     "repair root' to find and reinstall its newest complete generation") from None
        return Root.decode(data), etag

    def load_generation(self, gen_id: str) -> Generation:
        refs, body = self.store.get_structured(Ref(BlobType.GENERATION, gen_id), gen_id)
        gen = Generation.from_body(gen_id, refs, body)
        return gen

    def _write_generation(self, seq: int, parent: str | None, index: Ref | None, entries: int, write_id: str,
                          message: str) -> Generation:
        draft = Generation("", seq, parent, index, entries, self.backend.now(), write_id, message)
        res = self.store.put_structured(BlobType.GENERATION, [index] if index else [], draft.body())
        return Generation(res.ref.id, seq, parent, index, entries, draft.time, write_id, message)

    def log(self) -> Iterator[Generation]:
        """Generations newest first, down to what GC has kept."""
        root, _ = self.read_root()
        gen_id: str | None = root.generation
        while gen_id is not None:
            try:
                gen = self.load_generation(gen_id)
            except BlobMissing:
                if gen_id != root.generation:
                    return  # older history was collected by gc
                raise
            yield gen
            if gen.seq <= root.retain_floor and gen.parent and not self.store.exists(gen.parent):
                return
            gen_id = gen.parent

    def swap_root(self, etag: str, new_root: Root, creates_generation: bool) -> bool:
        """One compare-and-swap of the root. True if it is published, False on a real conflict.

        A lost reply, or a mismatch that may answer our own earlier attempt, is resolved by
        reading back (spec §7.3): our write-id, our generation on the head's chain, or (for
        GC, the only writer of gc_epoch while it holds the GC lease) an epoch at least ours.
        """
        for _ in range(ROOT_REASK_LIMIT):
            try:
                self.backend.compare_and_swap(ROOT_KEY, etag, new_root.encode())
                return True
            except EtagMismatch:
                return self._landed(self.read_root()[0], new_root, creates_generation)
            except OutcomeUnknown:
                current, current_etag = self.read_root()
                if self._landed(current, new_root, creates_generation):
                    return True
                if current_etag != etag:
                    return False
                # Not applied (yet): asking again is safe, the same condition still guards it.
        raise BackendError("could not learn whether the root update was applied (replies kept getting lost); "
                           "check the storage and run the command again")

    def _landed(self, current: Root, ours: Root, creates_generation: bool) -> bool:
        if current.write_id == ours.write_id:
            return True
        if not creates_generation:
            return current.gc_epoch >= ours.gc_epoch
        gen_id: str | None = current.generation
        seq = current.seq
        while gen_id is not None and seq > ours.seq:  # a rival may have committed on top of ours
            gen_id = self.load_generation(gen_id).parent
            seq -= 1
        return seq == ours.seq and gen_id == ours.generation

    # ---- reading -----------------------------------------------------------------------

    @contextmanager
    def reader(self, purpose: str = "read", ttl: float = DEFAULT_PIN_TTL, pin: bool | None = None) -> Iterator["Reader"]:
        snap = self.open_reader(purpose, ttl, pin=pin)
        try:
            yield snap
        finally:
            snap.close()

    def open_reader(self, purpose: str = "read", ttl: float = DEFAULT_PIN_TTL, renew: bool = True,
                      pin: bool | None = None) -> "Reader":
        """Resolve the root once, pin its generation, and validate the pin (spec §8.2).

        pin=False (default: `self.pin_reads`) resolves the root once and writes nothing: for
        storage that refuses writes. A concurrent gc may then remove what it reads (loudly)."""
        if not (self.pin_reads if pin is None else pin):
            root, _ = self.read_root()
            return Reader(self, self.load_generation(root.generation), _NullLease(), gc_epoch=root.gc_epoch)
        return run_steps(self.open_reader_steps(purpose, ttl, renew))

    def open_reader_steps(self, purpose: str = "read", ttl: float = DEFAULT_PIN_TTL,
                            renew: bool = True) -> "Steps[Reader]":
        """open_reader as steps: yields after the first root read and after the pin write."""
        for _ in range(PIN_VALIDATION_ATTEMPTS):
            first, _ = self.read_root()
            yield "root-read"
            try:
                lease = new_pin(self.backend, first.generation, first.seq, purpose, ttl, renew=renew,
                                monotonic=self.monotonic)
            except WriteRefused as exc:
                raise WriteRefused(f"cannot write a reader pin: {exc}; to read without a pin, pass --no-pin "
                                   "(or set CASBACKUP_NO_PIN=1; library: reader(pin=False))") from None
            try:
                yield "pinned"
                second, _ = self.read_root()
                unchanged_head = second.generation == first.generation
                no_gc_transition = (first.gc_epoch == second.gc_epoch and first.sweeping is None and second.sweeping is None)
                if unchanged_head or no_gc_transition:
                    return Reader(self, self.load_generation(first.generation), lease, gc_epoch=first.gc_epoch)
            except BaseException:
                lease.release()
                raise
            lease.release()
        raise CommitConflict("could not pin a generation: the root kept changing under gc; try again")

    def attach(self, pin_id: str) -> "Reader":
        """Read under an existing live pin (e.g. one a listing process left for later readers)."""
        key = f"{PIN_PREFIX}{pin_id}"
        try:
            # stat before get: if the holder renews in between, the clamp errs on the early side
            state = read_pin(self.backend, key, self.backend.stat(key).mtime)
        except KeyMissing:
            raise LeaseExpired(f"pin {pin_id} does not exist (expired and cleaned up?)") from None
        record = state.record
        if record is None:
            raise LeaseExpired(f"pin {pin_id} is unreadable ({state.error}); list again to get a fresh pin")
        started = self.monotonic()
        left = state.expires - self.backend.now()  # clamped to mtime + MAX_LEASE, as gc counts it
        if left <= _margin(record.expires - record.created):
            raise LeaseExpired(f"pin {pin_id} has expired; list again to get a fresh pin")
        lease = _AttachedLease(key, started + left - _margin(record.expires - record.created), self.monotonic)
        return Reader(self, self.load_generation(record.generation), lease)

    # ---- writing -----------------------------------------------------------------------

    def transaction(self, message: str = "", ttl: float = DEFAULT_PIN_TTL) -> "Transaction":
        if not self.writable:
            raise UsageError("repository was opened read-only")
        return Transaction(self, message, ttl)

    def commit(self, puts: Iterable[tuple[str, str, bytes]] = (), deletes: Iterable[tuple[str, str]] = (),
               message: str = "") -> Generation:
        with self.transaction(message) as txn:
            for ns, key, value in puts:
                txn.put(ns, key, value)
            for ns, key in deletes:
                txn.delete(ns, key)
        assert txn.result is not None
        return txn.result


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


class Reader:
    """A pinned, read-only view of one generation; every read checks the lease first."""

    def __init__(self, repo: Repository, generation: Generation, lease: Lease | _AttachedLease | _NullLease,
                 gc_epoch: int | None = None) -> None:
        self.repo = repo
        self.generation = generation
        self.lease = lease
        self.gc_epoch = gc_epoch  # the root's gc_epoch when it was resolved, before the pin

    @property
    def pin_id(self) -> str:
        return self.lease.key[len(PIN_PREFIX):]

    def _guard(self) -> None:
        self.lease.check()

    def _on_missing(self, exc: BlobMissing) -> BlobMissing:
        self._guard()  # a lapsed lease explains a missing blob better than the blob does
        return exc

    def entry(self, namespace: str, key: str) -> Entry | None:
        self._guard()
        try:
            return self.repo.index.get(self.generation.index, namespace, key, self.generation.id)
        except BlobMissing as exc:
            raise self._on_missing(exc) from None

    def get(self, namespace: str, key: str) -> bytes:
        e = self.entry(namespace, key)
        if e is None:
            raise NotFound(f"no key {key!r} in namespace {namespace!r} (generation {self.generation.seq})")
        return self.value(e)

    def value(self, e: Entry) -> bytes:
        """The whole value in memory; use iter_value/open_value for values of any size."""
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
        sizes: deque[Piece] = deque()

        def chunks() -> Iterator[tuple[Ref, int]]:
            for piece in iter_chunks(self.read_structured, ref.id):
                sizes.append(piece)
                yield piece.ref, piece.size

        try:
            for data in get_many(self.repo.store, chunks(), requests=VALUE_READ_REQUESTS,
                                 max_bytes=VALUE_READ_BYTES, generation=self.generation.id):
                piece = sizes.popleft()
                if len(data) != piece.size:
                    raise BlobCorrupt(piece.id, f"chunk holds {len(data)} bytes, value FILE {ref.id} lists {piece.size}",
                                      self.generation.id)
                self._guard()
                yield data
        except BlobMissing as exc:
            raise self._on_missing(exc) from None

    def open_value(self, e: Entry) -> IO[bytes]:
        """A read-only binary stream of the value (streams; never holds it whole)."""
        return io.BufferedReader(_PieceReader(self.iter_value(e)), buffer_size=1024 * 1024)

    def list(self, namespace: str | None = None, prefix: str = "") -> Iterator[Entry]:
        self._guard()
        start = (namespace or "", prefix if namespace is not None else "")
        try:
            for n, e in enumerate(self.repo.index.iterate(self.generation.index, start, self.generation.id)):
                if namespace is not None and (e.namespace != namespace or not e.key.startswith(prefix)):
                    break
                if not n & 1023:  # every page fetch is guarded too: a missing blob checks the lease
                    self._guard()
                yield e
        except BlobMissing as exc:
            raise self._on_missing(exc) from None

    def read_blob(self, ref: Ref) -> bytes:
        self._guard()
        try:
            return self.repo.store.get(ref, self.generation.id)
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


class Transaction:
    """Puts and deletes applied atomically by one root compare-and-swap (spec §8.3).

    The base generation stays pinned until the commit, so blobs found through it (dedup) are
    protected; every blob the transaction uploads or reuses is "touched" and takes part in the
    GC rescue rule at commit time.
    """

    def __init__(self, repo: Repository, message: str, ttl: float) -> None:
        self.repo = repo
        self.message = message
        self.base = repo.open_reader("commit", ttl, pin=True)
        # GC epoch before anything was touched: if it moved by commit time, a sweep may have
        # deleted a blob this transaction found present (dedup), so presence is checked again.
        self._gc_epoch = self.base.gc_epoch
        self.ops: dict[tuple[str, str], Op] = {}
        self.expect_absent: set[tuple[str, str]] = set()
        self.expect_present: set[tuple[str, str]] = set()  # replace-style updates (files `tag`)
        self.touched: set[Ref] = set()
        self.result: Generation | None = None
        self._done = False

    # -- staging --
    def put_blob(self, blob_type: BlobType, payload: bytes) -> PutResult:
        self.base._guard()
        res = self.repo.store.put(blob_type, payload)
        self.touched.add(res.ref)
        return res

    def put_structured(self, blob_type: BlobType, refs: list[Ref], body: Any) -> PutResult:
        self.base._guard()
        res = self.repo.store.put_structured(blob_type, refs, body)
        self.touched.add(res.ref)
        self.touched.update(refs)
        return res

    def use(self, refs: Iterable[Ref]) -> None:
        """Declare blobs this transaction references without uploading them (dedup)."""
        self.touched.update(refs)

    def put(self, namespace: str, key: str, value: bytes, refs: Iterable[Ref] = (), if_absent: bool = False) -> None:
        """Stage a value of any size (inline, one VALUE blob, or a FILE of chunks; spec §6.1)."""
        if len(value) > VALUE_BLOB_MAX:
            self.put_stream(namespace, key, io.BytesIO(value), refs, if_absent)
            return
        refs = self._check_entry(namespace, key, refs)
        if len(value) > INLINE_VALUE_MAX:
            vref = self.put_blob(BlobType.VALUE, bytes(value)).ref
            entry = Entry(namespace, key, None, vref, refs)
        else:
            entry = Entry(namespace, key, bytes(value), None, refs)
        self._stage(entry, if_absent)

    def put_stream(self, namespace: str, key: str, stream: IO[bytes], refs: Iterable[Ref] = (),
                   if_absent: bool = False) -> int:
        """Stage a value read from a binary stream until EOF, never holding it whole: pieces of
        VALUE_PIECE bytes are uploaded (and touched) as CHUNK blobs, at most VALUE_IN_FLIGHT at
        a time, and listed by a FILE blob. Returns the value's size."""
        refs = self._check_entry(namespace, key, refs)
        first = read_full(stream, VALUE_BLOB_MAX + 1)
        if len(first) <= VALUE_BLOB_MAX:  # small: the same entry put() would make
            if len(first) > INLINE_VALUE_MAX:
                entry = Entry(namespace, key, None, self.put_blob(BlobType.VALUE, first).ref, refs)
            else:
                entry = Entry(namespace, key, first, None, refs)
            self._stage(entry, if_absent)
            return len(first)
        pieces: list[Piece] = []
        carry = first[VALUE_PIECE:]
        head = first[:VALUE_PIECE]
        del first

        def read_pieces() -> Iterator[bytes]:
            yield head
            rest = carry + read_full(stream, VALUE_PIECE - len(carry))
            while rest:
                yield rest
                if len(rest) < VALUE_PIECE:
                    return
                rest = read_full(stream, VALUE_PIECE)

        with ThreadPoolExecutor(VALUE_WORKERS, thread_name_prefix="casbackup-value") as pool:
            pending: deque[tuple[Future[PutResult], int]] = deque()
            try:
                for data in read_pieces():
                    pending.append((pool.submit(self.put_blob, BlobType.CHUNK, data), len(data)))
                    del data
                    while len(pending) >= VALUE_IN_FLIGHT:
                        fut, n = pending.popleft()
                        pieces.append(Piece(fut.result().ref.id, n))
                while pending:
                    fut, n = pending.popleft()
                    pieces.append(Piece(fut.result().ref.id, n))
            finally:
                for fut, _ in pending:
                    fut.cancel()
        file_ref, size = write_file(self.put_structured, pieces)
        self._stage(Entry(namespace, key, None, file_ref, refs), if_absent)
        return size

    @staticmethod
    def _check_entry(namespace: str, key: str, refs: Iterable[Ref]) -> tuple[Ref, ...]:
        _validate_name("namespace", namespace)
        _validate_name("key", key)
        out = tuple(sorted(set(refs)))
        if len(out) > MAX_ENTRY_REFS:
            raise UsageError(f"entry {key!r} in namespace {namespace!r} names {len(out)} refs, over the limit of "
                             f"{MAX_ENTRY_REFS}: keep many blobs alive through one structured blob (a FILE or TREE) "
                             "and reference that")
        return out

    def _stage(self, entry: Entry, if_absent: bool) -> None:
        namespace, key, refs = entry.namespace, entry.key, entry.refs
        self.touched.update(refs)
        self.ops[(namespace, key)] = Op(namespace, key, entry)
        if if_absent:
            self.expect_absent.add((namespace, key))

    def delete(self, namespace: str, key: str) -> None:
        self.ops[(namespace, key)] = Op(namespace, key, None)

    def get(self, namespace: str, key: str) -> bytes:
        op = self.ops.get((namespace, key))
        if op is not None:
            if op.entry is None:
                raise NotFound(f"no key {key!r} in namespace {namespace!r}")
            return self.base.value(op.entry)
        return self.base.get(namespace, key)

    # -- publishing --
    def commit(self) -> Generation:
        deadline = self.repo.monotonic() + COMMIT_TIMEOUT
        steps = self.commit_steps()
        attempt = 0
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if step.startswith("wait:"):
                try:
                    attempt = self._backoff(attempt, deadline, step[len("wait:"):].strip())
                except BaseException:
                    steps.close()
                    raise

    def commit_steps(self) -> "Steps[Generation]":
        """commit as steps: yields "cas" just before each root swap and "wait: why" when it must
        back off (the root changed under it, or a sweep is deleting blobs it uses)."""
        if self._done:
            raise UsageError("transaction already finished")
        repo = self.repo
        waited_for_sweep: set[str] = set()
        try:
            while True:
                self.base._guard()
                root, etag = repo.read_root()
                head = repo.load_generation(root.generation)
                for k in self.expect_absent:
                    if repo.index.get(head.index, k[0], k[1], head.id) is not None:
                        raise CommitConflict(f"key {k[1]!r} in namespace {k[0]!r} already exists")
                for k in self.expect_present:
                    if repo.index.get(head.index, k[0], k[1], head.id) is None:
                        raise CommitConflict(f"key {k[1]!r} in namespace {k[0]!r} was removed by a concurrent commit")
                new_index, delta, pages = repo.index.apply(head.index, list(self.ops.values()))
                touched = {r.id for r in self.touched} | {r.id for r in pages}
                sweeping = load_gcstate(repo.store, root.sweeping)
                blocked = touched & sweeping.keys()
                if blocked:
                    waited_for_sweep |= blocked
                    yield "wait: a gc sweep is deleting blobs this commit uses"
                    continue
                if waited_for_sweep:
                    gone = [i for i in sorted(waited_for_sweep) if not repo.store.exists(i)]
                    if gone:
                        raise CommitConflict(f"blob {gone[0]} was deleted by a concurrent gc sweep before this commit; "
                                             "run the command again (it re-uploads what is missing)")
                    waited_for_sweep = set()
                if root.gc_epoch != self._gc_epoch:
                    # The fossil race: a blob touched earlier (uploaded, or found present and not
                    # uploaded) may have been swept since. Any sweep that starts after this root
                    # read changes the root, so the swap below fails and we come back here.
                    gone = [r.id for r in sorted(self.touched) if not repo.store.exists(r.id)]
                    if gone:
                        raise CommitConflict(f"blob {gone[0]} was deleted by a concurrent gc sweep before this commit; "
                                             "run the command again (it re-uploads what is missing)")
                    self._gc_epoch = root.gc_epoch
                condemned_id = root.condemned
                if root.condemned is not None:
                    condemned = load_gcstate(repo.store, root.condemned)
                    rescued = touched & condemned.keys()
                    if rescued:
                        condemned_id = write_gcstate(repo.store, "condemned",
                                                     {r: t for r, t in condemned.items() if r not in rescued})
                write_id = new_write_id()
                gen = repo._write_generation(root.seq + 1, root.generation, new_index, head.entries + delta, write_id,
                                             self.message)
                new_root = Root(gen.id, gen.seq, write_id, root.gc_epoch, condemned_id, root.sweeping,
                                root.retain_floor, repo.backend.now())
                yield "cas"
                if repo.swap_root(etag, new_root, creates_generation=True):
                    self.result = gen
                    return gen
                yield "wait: the root kept changing under concurrent commits"
        finally:
            self._done = True
            self.base.close()

    def _backoff(self, attempt: int, deadline: float, why: str) -> int:
        if self.repo.monotonic() > deadline:
            raise CommitConflict(f"commit gave up after {COMMIT_TIMEOUT:g}s: {why}")
        self.repo.sleep(random.uniform(0, min(0.002 * (2 ** attempt), 0.5)))
        return attempt + 1

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.base.close()

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def self_test(backend: Backend, unsafe_single_writer: bool = False) -> None:
    """Prove create-if-absent and CAS are really conditional before anyone writes (spec §2.3)."""
    caps = backend.capabilities
    missing = []
    if not caps.conditional_create:
        missing.append("create-if-absent")
    if not caps.conditional_update:
        missing.append("conditional update (compare-and-swap)")
    if not missing:
        token = secrets.token_hex(8)
        key, cas_key = f"selftest/{token}", f"selftest/{token}-cas"
        try:
            if not backend.create(key, b"first") or backend.create(key, b"second") or backend.get(key) != b"first":
                missing.append("create-if-absent (a second create of the same key succeeded)")
            etag = backend.compare_and_swap(cas_key, None, b"one")
            for stale in (None, "0" * 32):
                try:
                    backend.compare_and_swap(cas_key, stale, b"intruder")
                    missing.append("conditional update (a stale compare-and-swap succeeded)")
                    break
                except EtagMismatch:
                    pass
            backend.compare_and_swap(cas_key, etag, b"two")
            if backend.get(cas_key) != b"two":
                missing.append("conditional update (a compare-and-swap was lost)")
        except EtagMismatch:
            missing.append("conditional update (a valid compare-and-swap was refused)")
        finally:
            for k in (key, cas_key):
                try:
                    backend.delete(k)
                except BackendError:
                    pass
    if missing:
        if unsafe_single_writer:
            log.warning("UNSAFE: storage lacks %s; writing anyway because --unsafe-single-writer was given. "
                        "Two concurrent writers or a gc can now lose data.", "; ".join(missing))
            return
        raise CapabilityError(f"the storage does not support {'; '.join(missing)}: refusing to write. "
                              "Reading still works. Only if exactly one process ever writes, pass --unsafe-single-writer.")
