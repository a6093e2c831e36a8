"""A repository: open or create it, and the entry points to read and to commit (spec §7-§8).

This module sets a repository up (init, open, the capability self-test), reads and writes
generations, and hands out readers (reader.py) and transactions (transaction.py). The root
record and every other key that changes are owned by root.py. The names other modules and
tests import from here (Reader, Transaction, run_steps, Steps, location) are re-exported.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Union

from .backends.base import Backend, location
from .btree import BTree, Entry
from .codec import BlobType, Ref, is_sealed
from .errors import (
    PasswordMissing,
    RecordCorrupt,
    BackendError,
    BlobCorrupt,
    BlobMissing,
    CapabilityError,
    EtagMismatch,
    KeyMissing,
    RepositoryExists,
    RepositoryNotFound,
    UsageError,
)
from .layout import BLOB_PREFIX, CONFIG_KEY, ROOT_KEY, selftest_key
from .packs import LOCATIONS_NAMESPACE, Location
from .pins import DEFAULT_PIN_TTL
from .reader import (PIN_VALIDATION_ATTEMPTS, VALUE_READ_BYTES, VALUE_READ_REQUESTS, Reader, attach, open_pinned_steps,
                     open_unpinned)
from .keys import KdfParams, Keyring, Unlocked, has_slots, new_slot, unlock, write_new_slot
from .records import Config, Generation, Root, new_write_id
from .rollback import Watermark, forget_location, refuse_downgrade, remember_encrypted
from .root import RootRecord
from .sealedrecords import SealedRecords
from .steps import Step, Steps, run_steps
from .store import BlobStore
from .walk import chain
from .transaction import COMMIT_TIMEOUT, VALUE_BLOB_MAX, VALUE_IN_FLIGHT, VALUE_PIECE, VALUE_WORKERS, Transaction

__all__ = [
    "COMMIT_TIMEOUT", "PIN_VALIDATION_ATTEMPTS", "VALUE_BLOB_MAX", "VALUE_IN_FLIGHT", "VALUE_PIECE", "VALUE_READ_BYTES",
    "VALUE_READ_REQUESTS", "VALUE_WORKERS", "Reader", "Repository", "Step", "Steps", "Transaction", "location",
    "run_steps", "self_test",
]

log = logging.getLogger("casbackup")

# Parsed generations kept by load_generation (each a few hundred bytes): the heads and bases
# of the transactions and readers one process has open.
PARSED_GENERATIONS = 32


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


Password = Union[bytes, str, Callable[[], "bytes | str | None"], None]


def _password_bytes(password: Any) -> bytes | None:
    if callable(password):
        password = password()
    if password is None:
        return None
    return password.encode("utf-8") if isinstance(password, str) else bytes(password)


def _read_config(backend: Backend, keys: Unlocked | None, stored: bytes | None = None) -> Config:
    """The config, which must agree with the keys: an encrypted repository's config is sealed and
    names the keyring's repository; a plaintext config that claims a cipher is refused."""
    config = Config.decode(stored if stored is not None else backend.get(CONFIG_KEY))
    if keys is None and config.cipher != "none":
        raise RecordCorrupt(CONFIG_KEY, f"the config says cipher {config.cipher!r} but is stored unencrypted")
    if keys is not None and config.repo_id != keys.ring.repo_id.hex():
        raise RecordCorrupt(CONFIG_KEY, "the config belongs to another repository than its key slots")
    return config


class Repository:
    """One repository on one backend: the handle every command and library call starts from.

    It knows the config, owns the verified blob store and the entry index, and hands out the
    two ways in: a `reader()` that pins one generation, and a `transaction()` that publishes
    a new one. Opened read-only unless `write=True` (which first runs the self-test)."""

    # False: readers do not write a pin (read-only storage; CLI --no-pin). Transactions always
    # pin their base. Set on an instance: `repo.pin_reads = False`.
    pin_reads = True

    def __init__(self, backend: Backend, config: Config, writable: bool,
                 monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 keys: Unlocked | None = None) -> None:
        # Encrypted (keys given): records are sealed on their way through `backend`, blobs by the store.
        self.keys = keys
        self.raw_backend: Backend = backend.inner if isinstance(backend, SealedRecords) else backend
        if keys is not None and not isinstance(backend, SealedRecords):
            backend = SealedRecords(backend, keys.ring.suite())
        self.backend = backend
        self.config = config
        self.writable = writable
        suite = backend.suite if isinstance(backend, SealedRecords) else None
        self.store = BlobStore(backend, level=config.compression_level, suite=suite)
        self.store.locator = self.locate
        self.index = BTree(self.store)  # the entry B+tree (spec §6.2)
        # Generations parsed from the store's decoded bodies (load_generation), newest last.
        self._parsed: OrderedDict[str, tuple[tuple[list[Ref], Any], Generation]] = OrderedDict()
        self._parsed_lock = threading.Lock()
        self.root = RootRecord(backend, lambda gen_id: self.load_generation(gen_id).parent)
        if keys is not None:
            self.root.watermark = Watermark(config.repo_id, location(backend))
        self.monotonic = monotonic
        self.sleep = sleep

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def encrypted(self) -> bool:
        return self.keys is not None

    @classmethod
    def init(cls, backend: Backend, unsafe_single_writer: bool = False, password: Password = None,
             kdf: KdfParams | None = None, id_key: bytes | None = None, **settings: Any) -> "Repository":
        """Create a repository, or finish an init that crashed before writing any blob.
        With a `password`, an encrypted one (spec §13): its first key slot is made from it;
        `id_key`: another repository's ID key, so that `copy` between the two works by ID.

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
        secret = _password_bytes(password)
        if id_key is not None and secret is None:
            raise UsageError("an ID key is only for an encrypted repository: give a password")
        keys: Unlocked | None = None
        if secret is not None:
            if has_slots(backend, fresh=not config_exists):  # an encrypted init that crashed after its key slot
                keys = unlock(backend, secret)
            else:
                keys = new_slot(Keyring.new(id_key), secret, kdf)
                write_new_slot(backend, keys.slot)
            backend = SealedRecords(backend, keys.ring.suite())
            settings = {**settings, "id_mode": "blake3-keyed", "cipher": "aes-256-gcm"}
        if not config_exists:
            repo_id = keys.ring.repo_id.hex() if keys is not None else secrets.token_hex(16)
            config = Config(repo_id=repo_id, created=backend.now(), **settings)
            if not backend.create(CONFIG_KEY, config.encode()):
                raise RepositoryExists(f"a repository was created at {where} concurrently")
        config = _read_config(backend, keys)
        forget_location(where)
        if keys is not None:
            remember_encrypted(where, config.repo_id)
        repo = cls(backend, config, writable=True, keys=keys)
        write_id = new_write_id()
        gen = repo._write_generation(0, None, None, 0, write_id, "init")
        if not repo.root.swap(None, Root(gen.id, 0, write_id, time=backend.now()), creates_generation=True):
            raise RepositoryExists(f"a repository was created at {where} concurrently")
        return repo

    @classmethod
    def open(cls, backend: Backend, write: bool = False, unsafe_single_writer: bool = False,
             password: Password = None, warn: Callable[[str], None] | None = None) -> "Repository":
        """Open an existing repository; RepositoryNotFound (with the init hint) if there is none.
        An encrypted one needs its `password` (asked only then, when it is a callable; None:
        $CASBACKUP_PASSWORD if set): PasswordMissing without one, WrongPassword / KeyRemoved
        when no slot takes it.

        write=True first proves the storage's conditional writes really are conditional
        (self_test): without them two writers or a gc could lose data."""
        try:
            stored = backend.get(CONFIG_KEY)
        except KeyMissing:
            raise RepositoryNotFound(f"no casbackup repository at {location(backend)} (no config); "
                                     "create one with 'casbackup init'") from None
        keys: Unlocked | None = None
        if is_sealed(stored):
            secret = _password_bytes(password if password is not None else os.environ.get("CASBACKUP_PASSWORD") or None)
            if secret is None:
                raise PasswordMissing(f"the repository at {location(backend)} is encrypted: give its password "
                                      "(CASBACKUP_PASSWORD, --password-file / CASBACKUP_PASSWORD_FILE, --password-command "
                                      "/ CASBACKUP_PASSWORD_COMMAND, or type it on a terminal)")
            keys = unlock(backend, secret, warn)
            sealed = SealedRecords(backend, keys.ring.suite())
            config = _read_config(sealed, keys)
            remember_encrypted(location(backend), config.repo_id)
        else:
            config = _read_config(backend, None, stored)
            refuse_downgrade(location(backend))
        if write:
            self_test(backend, unsafe_single_writer)
        return cls(backend, config, writable=write, keys=keys)

    def close(self) -> None:
        self.backend.close()

    # ---- root and generations ---------------------------------------------------------

    def read_root(self) -> tuple[Root, str]:
        return self.root.read()

    def swap_root(self, etag: str, new_root: Root, creates_generation: bool) -> bool:
        """One compare-and-swap of the root; True if published, False on a real conflict."""
        return self.root.swap(etag, new_root, creates_generation)

    def load_generation(self, gen_id: str) -> Generation:
        """A verified generation. Its blob is always read through the store (and its decode
        cache), so a collected generation still fails; only the parse of a body already parsed is
        skipped (`locate` runs once per packed blob read or deduplicated; Generation is frozen)."""
        decoded = self.store.get_structured(Ref(BlobType.GENERATION, gen_id), gen_id)
        with self._parsed_lock:
            hit = self._parsed.get(gen_id)
        if hit is not None and hit[0] is decoded:
            return hit[1]
        gen = Generation.from_body(gen_id, decoded[0], decoded[1])
        with self._parsed_lock:
            self._parsed[gen_id] = (decoded, gen)
            self._parsed.move_to_end(gen_id)
            while len(self._parsed) > PARSED_GENERATIONS:
                self._parsed.popitem(last=False)
        return gen

    def locate(self, gen_id: str, blob_id: str) -> Location | None:
        """Where generation `gen_id` says a packed blob is (its `_blobs` entry, FORMAT.md §12.4)."""
        gen = self.load_generation(gen_id)
        return location_of(self.index.get(gen.index, LOCATIONS_NAMESPACE, blob_id, gen_id), blob_id, gen_id)

    def locate_many(self, gen_id: str, blob_ids: Iterable[str]) -> dict[str, Location]:
        """`locate` of many blobs at once (the unlocated ones left out): the generation is loaded
        once and its `_blobs` range joined in ID order in one descent (btree.get_many), so a
        commit of 10^5 blobs decodes each location leaf once, not once per blob (§12.5)."""
        gen = self.load_generation(gen_id)
        entries = self.index.get_many(gen.index, [(LOCATIONS_NAMESPACE, b) for b in blob_ids], gen_id)
        out: dict[str, Location] = {}
        for (_, blob_id), entry in entries.items():
            loc = location_of(entry, blob_id, gen_id)
            assert loc is not None
            out[blob_id] = loc
        return out

    def _write_generation(self, seq: int, parent: str | None, index: Ref | None, entries: int, write_id: str,
                          message: str) -> Generation:
        draft = Generation("", seq, parent, index, entries, self.backend.now(), write_id, message)
        res = self.store.put_structured(BlobType.GENERATION, [index] if index else [], draft.body())
        return Generation(res.ref.id, seq, parent, index, entries, draft.time, write_id, message)

    def log(self) -> Iterator[Generation]:
        """Generations newest first, down to what GC has kept."""
        root, _ = self.read_root()

        def collected(gen_id: str, child: Generation | None, below: bool, exc: BlobMissing) -> None:
            if child is None:
                raise exc  # the head itself: damage; older history gc may have collected

        yield from chain(self.load_generation, root.generation, root.retain_floor, on_missing=collected)

    # ---- reading -----------------------------------------------------------------------

    @contextmanager
    def reader(self, purpose: str = "read", ttl: float = DEFAULT_PIN_TTL, pin: bool | None = None) -> Iterator[Reader]:
        """A Reader of the current generation for a `with` block, released at its end.

        The pin is what keeps gc from collecting what the block reads (spec §8); `purpose`
        and `ttl` are recorded in it, so `pins list` can say who holds what."""
        snap = self.open_reader(purpose, ttl, pin=pin)
        try:
            yield snap
        finally:
            snap.close()

    def open_reader(self, purpose: str = "read", ttl: float = DEFAULT_PIN_TTL, renew: bool = True,
                    pin: bool | None = None) -> Reader:
        """Resolve the root once, pin its generation, and validate the pin (spec §8.1); the
        caller closes the Reader (reader() does it for a `with` block).

        pin=False (default: `self.pin_reads`) resolves the root once and writes nothing: for
        storage that refuses writes. A concurrent gc may then remove what it reads (loudly)."""
        if not (self.pin_reads if pin is None else pin):
            return open_unpinned(self)
        return run_steps(self.open_reader_steps(purpose, ttl, renew))

    def open_reader_steps(self, purpose: str = "read", ttl: float = DEFAULT_PIN_TTL,
                          renew: bool = True) -> "Steps[Reader]":
        """open_reader as steps: yields after the first root read and after the pin write."""
        return open_pinned_steps(self, purpose, ttl, renew)

    def attach(self, pin_id: str) -> Reader:
        """Read under an existing live pin (e.g. one a listing process left for later readers)."""
        return attach(self, pin_id)

    # ---- writing -----------------------------------------------------------------------

    def transaction(self, message: str = "", ttl: float = DEFAULT_PIN_TTL) -> Transaction:
        """Stage puts and deletes, published together by one commit (a `with` block commits on
        success and aborts on an exception). Its base generation stays pinned for `ttl`, so
        the blobs it dedups against cannot be collected under it."""
        if not self.writable:
            raise UsageError("repository was opened read-only")
        return Transaction(self, message, ttl)

    def commit(self, puts: Iterable[tuple[str, str, bytes]] = (), deletes: Iterable[tuple[str, str]] = (),
               message: str = "") -> Generation:
        """One transaction in one call: put (namespace, key, value) triples, delete (namespace,
        key) pairs, and return the new generation."""
        with self.transaction(message) as txn:
            for ns, key, value in puts:
                txn.put(ns, key, value)
            for ns, key in deletes:
                txn.delete(ns, key)
        assert txn.result is not None
        return txn.result


def location_of(entry: Entry | None, blob_id: str, gen_id: str) -> Location | None:
    """A `_blobs` entry's location; BlobCorrupt (naming the blob and generation) if it breaks §12.4."""
    if entry is None:
        return None
    if entry.value is None or entry.refs:
        raise BlobCorrupt(blob_id, "its location entry has refs or no inline value", gen_id)
    try:
        return Location.from_value(entry.value, blob_id)
    except BlobCorrupt as exc:
        raise BlobCorrupt(blob_id, exc.reason, gen_id) from None


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
        key, cas_key = selftest_key(token), selftest_key(f"{token}-cas")
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
