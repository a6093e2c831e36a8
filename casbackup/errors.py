"""One exception hierarchy; the CLI maps each class to a one-line message and an exit code."""
from __future__ import annotations


class CasbackupError(Exception):
    """Root of every error casbackup raises on purpose."""

    exit_code = 1


class UsageError(CasbackupError):
    """A bad argument or option value from the user."""

    exit_code = 2


class NotFound(CasbackupError):
    """A requested key, snapshot or path does not exist in the generation."""

    exit_code = 3


class BlobMissing(CasbackupError):
    """A blob that a generation references is not in the store."""

    exit_code = 4

    def __init__(self, blob_id: str, generation: str | None = None, detail: str = "") -> None:
        self.blob_id = blob_id
        self.generation = generation
        where = f" (referenced by generation {generation})" if generation else ""
        extra = f": {detail}" if detail else ""
        super().__init__(f"blob {blob_id} is missing{where}{extra}")


class BlobCorrupt(CasbackupError):
    """Stored bytes fail their hash, their envelope or a decode limit."""

    exit_code = 5

    def __init__(self, blob_id: str, reason: str, generation: str | None = None) -> None:
        self.blob_id = blob_id
        self.generation = generation
        self.reason = reason
        where = f" (referenced by generation {generation})" if generation else ""
        super().__init__(f"blob {blob_id} is corrupt{where}: {reason}")


class PackCorrupt(BlobCorrupt):
    """A pack's layout, table of contents or trailer is damaged (format v2); named by the pack as
    gc and check name it, `pack:<id>`. A damaged blob inside an intact pack is a BlobCorrupt."""

    def __init__(self, pack_id: str, reason: str) -> None:
        CasbackupError.__init__(self, f"pack {pack_id} is corrupt: {reason}")
        self.blob_id = f"pack:{pack_id}"
        self.generation = None
        self.reason = reason


class RecordCorrupt(BlobCorrupt):
    """A fixed-key record (config, root, a pin, the gc lease) fails its checksum, its envelope,
    a decode limit or its field rules; named by its key, not a blob ID."""

    def __init__(self, key: str, reason: str) -> None:
        CasbackupError.__init__(self, f"{key} is corrupt: {reason}")
        self.blob_id = key
        self.generation = None
        self.reason = reason


class LimitExceeded(UsageError):
    """A writer was asked to store something a reader's decode limits would refuse (spec §4.5):
    refused before anything is written, so nothing unreadable is ever stored."""


class CommitConflict(CasbackupError):
    """A commit could not be published after bounded retries, or its precondition failed."""

    exit_code = 6


class LeaseExpired(CasbackupError):
    """A pin or GC lease lapsed (or was about to); reading on could see collected data."""

    exit_code = 7


class BackendError(CasbackupError):
    """The storage failed or answered something the storage contract does not allow."""

    exit_code = 8


class WriteRefused(BackendError):
    """The storage refuses writes (read-only mount, permission denied, 403); reads may still work."""


class KeyMissing(BackendError):
    """A backend key does not exist (raised by backends; the store turns it into BlobMissing)."""

    exit_code = 4


class EtagMismatch(BackendError):
    """A compare-and-swap found a different current value than expected."""

    exit_code = 6


class RepositoryNotFound(CasbackupError):
    exit_code = 9


class RepositoryExists(CasbackupError):
    exit_code = 9


class UnsupportedFormat(CasbackupError):
    """The repository uses a format version or mode this build does not know."""

    exit_code = 10


class CapabilityError(CasbackupError):
    """The storage lacks an ability (e.g. create-if-absent) that safe writing requires."""

    exit_code = 11


class GcBusy(CasbackupError):
    """Another GC holds the live GC lease."""

    exit_code = 12


class CheckFailed(CasbackupError):
    """`check` found dangling references or corrupt blobs."""

    exit_code = 13


class OutcomeUnknown(BackendError):
    """A conditional write was sent but its reply was lost; the caller must read back to decide."""


class WrongPassword(CasbackupError):
    """No key slot of an encrypted repository opens with the password given."""

    exit_code = 17


class PasswordMissing(UsageError):
    """An encrypted repository (or an init) needs a password and none was given."""

    exit_code = 18


class KeyRemoved(CasbackupError):
    """The password opens a key slot that `key remove` emptied: that key no longer opens anything."""

    exit_code = 19


class KeyUnavailable(BlobCorrupt):
    """An object is sealed under a key epoch the unlocked key does not hold: a newer epoch than
    the keyring read at open, or a damaged epoch field (which no check can tell apart without
    that key), so it is a corrupt object (exit 5) whose message says both."""

    def __init__(self, name: str, reason: str, generation: str | None = None, record: bool = False) -> None:
        super().__init__(name, reason, generation)
        if record:
            CasbackupError.__init__(self, f"{name} is unreadable: {reason}")


class RollbackDetected(CasbackupError):
    """The store serves a root older than one this machine has already seen (spec §13.8)."""

    exit_code = 21
