"""casbackup: content-addressed, snapshot-based backup storage.

The public API is what `__all__` names:

- `open(location, write=False)` and `init(location, **settings)` give a `Repository` over the
  backend a location names (`open_backend`: a path, file://, memory://, s3://, gs://, az://, cmd:).
  `LocalBackend` and `MemoryBackend` can also be built and passed to `Repository.open` / `init`.
- `Repository.reader()` is a pinned `Reader` of one generation (gc cannot collect what it reads);
  `Repository.transaction()` is a `Transaction`, committed atomically by compare-and-swap.
- `collect` runs the garbage collector and `check_repository` verifies the repository (their
  reports: `GcReport`, `CheckReport`). They are loaded on first use (PEP 562 `__getattr__`):
  a process that only reads or writes, such as one Aptos adapter call, does not import them.
- Every error is a `CasbackupError`; each subclass in `__all__` names one kind of failure.

File backups (backup, restore, snapshots, forget, ...) are `casbackup.files`, imported on its
own because it loads the chunker.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .backends import LocalBackend, MemoryBackend, open_backend  # noqa: E402
from .errors import (  # noqa: E402
    BackendError, BlobCorrupt, BlobMissing, CapabilityError, CasbackupError, CheckFailed, CommitConflict,
    EtagMismatch, GcBusy, KeyMissing, LeaseExpired, LimitExceeded, NotFound, OutcomeUnknown, PackCorrupt, RecordCorrupt,
    RepositoryExists, RepositoryNotFound, UnsupportedFormat, UsageError, WriteRefused, WrongPassword, PasswordMissing,
    KeyRemoved, KeyUnavailable, RollbackDetected,
)
from .repository import Reader, Repository, Transaction  # noqa: E402

if TYPE_CHECKING:
    from .check import CheckReport
    from .check import check as check_repository
    from .gc import GcReport, collect

# name -> (module, attribute): the maintenance half of the API, imported when first used.
_LAZY = {
    "collect": (".gc", "collect"),
    "GcReport": (".gc", "GcReport"),
    "check_repository": (".check", "check"),
    "CheckReport": (".check", "CheckReport"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def open(location: str, write: bool = False, options: dict[str, str] | None = None,  # noqa: A001
         unsafe_single_writer: bool = False, password: Any = None, warn: Any = None) -> Repository:
    """The existing repository at `location` (see `open_backend`; `options` are the backend's,
    e.g. {"endpoint": ...}). Read-only unless `write`: then the storage's self-test runs first.
    An encrypted repository needs `password` (str, bytes, or a callable asked only then)."""
    return Repository.open(open_backend(location, options), write=write, unsafe_single_writer=unsafe_single_writer,
                           password=password, warn=warn)


def init(location: str, options: dict[str, str] | None = None, unsafe_single_writer: bool = False,
         password: Any = None, id_key: bytes | None = None, **settings: Any) -> Repository:
    """Create a repository at `location` (a local directory is created) and return it, writable.
    `settings` are the repository's config (e.g. chunk sizes); RepositoryExists if one is there.
    With a `password`, it is encrypted (spec/FORMAT.md §13); without one, it is not."""
    backend = open_backend(location, options, create=True)
    return Repository.init(backend, unsafe_single_writer=unsafe_single_writer, password=password, id_key=id_key,
                           **settings)


__all__ = [
    "__version__",
    # core: open or create, read pinned, write atomically
    "open", "init", "Repository", "Reader", "Transaction",
    # backends
    "open_backend", "LocalBackend", "MemoryBackend",
    # maintenance (lazy)
    "collect", "GcReport", "check_repository", "CheckReport",
    # errors
    "CasbackupError", "UsageError", "LimitExceeded", "NotFound", "BlobMissing", "BlobCorrupt", "PackCorrupt", "RecordCorrupt",
    "CommitConflict", "LeaseExpired", "BackendError", "WriteRefused", "KeyMissing", "EtagMismatch",
    "OutcomeUnknown", "RepositoryNotFound", "RepositoryExists", "UnsupportedFormat", "CapabilityError", "GcBusy",
    "CheckFailed", "WrongPassword", "PasswordMissing", "KeyRemoved", "KeyUnavailable", "RollbackDetected",
]
