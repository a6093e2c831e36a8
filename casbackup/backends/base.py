"""The storage contract every backend implements (spec/FORMAT.md, "Storage contract").

Keys are '/'-separated ASCII paths. Two kinds of key exist:
- immutable keys, written once with `create` (blobs, config);
- mutable keys, changed only with `compare_and_swap` (root, pins, the GC lease).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence, runtime_checkable

import blake3

from ..errors import UsageError

# \Z, not $: `$` also matches before a trailing newline ("root\n" would pass).
_KEY_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*\Z")


def validate_key(key: str) -> str:
    """Refuse keys that could escape a prefix or collide with backend-internal names."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key) or len(key) > 512:
        raise UsageError(f"invalid storage key {key!r}")
    return key


def content_etag(data: bytes) -> str:
    """The etag of a backend that keeps no version of its own (local, memory, command): a short
    hash of the content, one definition so they all hand out the same etags."""
    return blake3.blake3(data).hexdigest(length=16)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch, on the storage's clock


@dataclass(frozen=True)
class Capabilities:
    """What a backend promises; the self-test at open verifies the promise."""

    conditional_create: bool
    conditional_update: bool


@runtime_checkable
class Backend(Protocol):
    capabilities: Capabilities

    def get(self, key: str) -> bytes:
        """Whole object; KeyMissing if absent."""
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes from `start` (fewer at the end); KeyMissing if absent."""
        ...

    def create(self, key: str, data: bytes) -> bool:
        """Atomic create-if-absent. True if this call created it, False if the key existed.

        Never visible half-written. May raise OutcomeUnknown if the reply was lost.
        """
        ...

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """Content and an opaque etag for a mutable key; KeyMissing if absent."""
        ...

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        """Replace `key` only if its etag is `expected_etag` (None: only if absent).

        Returns the new etag; raises EtagMismatch if the current state differs, and
        OutcomeUnknown if the request may or may not have been applied.
        """
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every key under `prefix`; a failure raises, it never yields a short listing silently."""
        ...

    def delete(self, key: str) -> None:
        """Remove a key; deleting an absent key is not an error."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        ...

    def now(self) -> float:
        """Current time on the storage's clock (the clock that sets mtimes)."""
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class TempFileCleaner(Protocol):
    """An optional ability: a backend that leaves temporary files behind after a crash (local
    disk writes to a temp file, then renames) lets gc remove the stale ones."""

    def remove_stale_temp_files(self, older_than: float) -> int:
        """Remove temp files older than `older_than` seconds; returns how many were removed."""
        ...


@runtime_checkable
class BatchDeleter(Protocol):
    """An optional ability: a backend that deletes many keys in one request (S3 DeleteObjects,
    Azure blob batch) says how many it takes at once; gc's sweep deletes through it."""

    delete_batch_size: int

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove every key (at most delete_batch_size); absent keys are not an error. A failure
        raises: some of the keys may then be gone, none is reported deleted that was not."""
        ...


@runtime_checkable
class ParallelLister(Protocol):
    """An optional ability: a backend whose listings pay a round trip per page (object stores)
    lists a fan-out of prefixes with `list_concurrency` listings in flight (backends/listing.py)."""

    list_concurrency: int


LOOP_DELETE_BATCH = 64  # keys per batch where deletes are one call each (gc checks its lease between batches)


def delete_batch_size(backend: Backend) -> int:
    """How many keys one delete_keys() batch holds on this backend."""
    return backend.delete_batch_size if isinstance(backend, BatchDeleter) else LOOP_DELETE_BATCH


def delete_keys(backend: Backend, keys: Iterable[str]) -> None:
    """Delete `keys` in batches of delete_batch_size(backend): one request per batch where the
    backend can (BatchDeleter), one delete per key elsewhere."""
    batch: list[str] = []
    size = delete_batch_size(backend)
    for key in keys:
        batch.append(key)
        if len(batch) >= size:
            _delete_batch(backend, batch)
            batch = []
    if batch:
        _delete_batch(backend, batch)


def _delete_batch(backend: Backend, keys: list[str]) -> None:
    if isinstance(backend, BatchDeleter):
        backend.delete_many(keys)
    else:
        for key in keys:
            backend.delete(key)


def location(backend: Backend) -> str:
    """The path or URL that messages name (every backend sets `location`; wrappers may not)."""
    return str(getattr(backend, "location", None) or backend)
