"""The keys that change: the root record, and the lease records (pins, the gc lease).

Everything else in a repository is written once. These keys are only ever replaced by a
compare-and-swap, and every one of those swaps is here, each resolving a lost reply through
the one primitive `cas.resolve` (spec §7.3): the root by its write-id, a lease record by its
own bytes (unique: they carry the write's expiry time).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from .backends.base import Backend, location
from .cas import resolve
from .errors import BlobCorrupt, EtagMismatch, KeyMissing, RepositoryNotFound, UnsupportedFormat
from .layout import ROOT_KEY
from .records import Root

if TYPE_CHECKING:
    from .rollback import Watermark


class RootRecord:
    """The root (spec §5.2, §7): which generation is current, plus gc's state.

    `parent_of(generation id)` walks the chain, which deciding "did our commit land?" needs when
    rivals committed on top of it."""

    def __init__(self, backend: Backend, parent_of: Callable[[str], str | None]) -> None:
        self.backend = backend
        self._parent_of = parent_of
        # An encrypted repository's highest root seen on this machine (rollback detection, §13.8).
        self.watermark: Watermark | None = None

    def read(self) -> tuple[Root, str]:
        """The root and its etag; RepositoryNotFound (with the repair hint) if there is none."""
        try:
            data, etag = self.backend.read_versioned(ROOT_KEY)
        except KeyMissing:
            where = location(self.backend)
            raise RepositoryNotFound(f"the repository at {where} has no root record; run 'casbackup -r {where} "
                                     "repair root' to find and reinstall its newest complete generation") from None
        root = Root.decode(data)
        if self.watermark is not None:
            self.watermark.observe(root.seq, root.generation)
        return root, etag

    def swap(self, etag: str | None, new_root: Root, creates_generation: bool) -> bool:
        """One compare-and-swap of the root. True if it is published, False on a real conflict.

        etag None: only if there is no root yet (init). A lost reply, or a mismatch that may
        answer our own earlier attempt, is resolved by reading back: our write-id, our
        generation on the head's chain, or (for GC, the only writer of gc_epoch while it holds
        the GC lease) an epoch at least ours.

        A mismatch answering the first request of this write is a plain conflict, decided
        without reading anything back: no earlier request carried `new_root` (its write-id is
        fresh), and the storage contract (FORMAT.md §2.1) reports a lost reply as outcome
        unknown, never as a mismatch, so nothing of ours was applied. Only once a request's
        outcome was unknown can a later mismatch be our own earlier request that landed late;
        then, and only then, the chain is walked. That walk can meet history gc has collected
        (the committer's base pin lapsed, so gc no longer keeps the generations between the
        head and ours): it then raises BlobMissing rather than guess, since answering "not
        published" for a commit that did land would let it be made twice; the committer turns
        that into LeaseExpired (Transaction.commit_steps).
        """
        uncertain = False  # a request of this write went out and its outcome is unknown

        def attempt() -> bool:
            try:
                self.backend.compare_and_swap(ROOT_KEY, etag, new_root.encode())
                return True
            except EtagMismatch:
                if not uncertain:
                    return False
                return self._landed(self.read()[0], new_root, creates_generation)

        def landed() -> bool | None:
            nonlocal uncertain
            uncertain = True
            try:
                current, current_etag = self.read()
            except RepositoryNotFound:
                return None if etag is None else False  # no root: an init's create did not apply (yet)
            if self._landed(current, new_root, creates_generation):
                return True
            if current_etag != etag:
                return False
            return None  # not applied (yet): asking again is safe, the same condition still guards it

        published = resolve(attempt, landed, "the root update")
        if published and self.watermark is not None:
            self.watermark.observe(new_root.seq, new_root.generation)
        return published

    def install(self, expected_etag: str | None, new_root: Root) -> bool:
        """Replace a missing (expected_etag None) or unreadable root (repair root, spec §11.1).
        True if installed, False if the root changed meanwhile. Decided like `swap`, by our
        write-id, except that the root read back may itself be missing or corrupt."""
        def read_back() -> tuple[Root | None, str | None]:
            try:
                data, etag = self.backend.read_versioned(ROOT_KEY)
            except KeyMissing:
                return None, None
            try:
                return Root.decode(data), etag
            except (BlobCorrupt, UnsupportedFormat):
                return None, etag

        def ours(current: Root | None) -> bool:
            return current is not None and current.write_id == new_root.write_id

        def attempt() -> bool:
            try:
                self.backend.compare_and_swap(ROOT_KEY, expected_etag, new_root.encode())
                return True
            except EtagMismatch:
                return ours(read_back()[0])

        def landed() -> bool | None:
            current, etag = read_back()
            if ours(current):
                return True
            return None if etag == expected_etag else False

        return resolve(attempt, landed, "the new root")

    def _landed(self, current: Root, ours: Root, creates_generation: bool) -> bool:
        """Whether `ours` was published, judged from `current` (read after it was sent): it is
        the current root, or (a commit) its generation is on the current head's chain at its
        seq, or (gc) the epoch reached ours. BlobMissing if a generation between the head and
        our seq is gone: collected history cannot tell either way (see swap)."""
        if current.write_id == ours.write_id:
            return True
        if not creates_generation:
            return current.gc_epoch >= ours.gc_epoch
        gen_id: str | None = current.generation
        seq = current.seq
        while gen_id is not None and seq > ours.seq:  # a rival may have committed on top of ours
            gen_id = self._parent_of(gen_id)
            seq -= 1
        return seq == ours.seq and gen_id == ours.generation


def swap_record(backend: Backend, key: str, expected_etag: str | None, data: bytes) -> str:
    """Compare-and-swap a lease record (a pin or the gc lease); returns the new etag.

    EtagMismatch if someone else holds or changed the record. A lost reply is resolved by
    reading back our own bytes: they are unique, since they carry this write's expiry time."""
    def landed() -> str | None:
        try:
            current, etag = backend.read_versioned(key)
        except KeyMissing:
            current, etag = None, None
        if current == data and etag is not None:
            return etag
        if etag != expected_etag:
            raise EtagMismatch(f"lease {key} changed while our write's reply was lost")
        return None  # unchanged: our write did not apply (yet); the same condition guards a retry

    return resolve(lambda: backend.compare_and_swap(key, expected_etag, data), landed, f"the write of lease {key}")
