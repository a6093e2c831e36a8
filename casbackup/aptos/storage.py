"""The six adapter operations on a casbackup repository (normative layout: spec/aptos.md).

- Data files: `<backup_handle>/<file_name>` -> entry in aptos.files naming a FILE blob,
  committed only after the whole stream is stored; the handle is printed first, the content
  is bound to it at commit.
- Metadata files: `metadata/<name>` -> entry in aptos.metadata, all lines in one commit.
- Replaced metadata: entry moved to aptos.metadata_backup as a tombstone that records the
  content ID without referencing it, so GC may reclaim it once no pin protects it, while a
  reader that listed it earlier still resolves the handle to exactly that content.
"""
from __future__ import annotations

import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

from ..btree import Entry
from ..codec import BlobType, Ref, packb, unpackb
from ..errors import BlobCorrupt, BlobMissing, CommitConflict, NotFound, UsageError
from ..pins import MAX_LEASE
from ..repository import Repository, Reader
from .names import (
    NS_BACKUPS,
    NS_FILES,
    NS_METADATA,
    NS_METADATA_BACKUP,
    Handle,
    check_backup_handle,
    check_lines,
    check_name,
    metadata_handle,
    parse_handle,
)
from .streams import STREAM_PIECE, iter_stream, read_pieces, stream_ids, write_stream

DEFAULT_LIST_PIN_TTL = 24 * 3600.0
HEAD_RETRIES = 5


@dataclass(frozen=True)
class FileValue:
    """Decoded value of an aptos.files / aptos.metadata / aptos.metadata_backup entry."""

    file: Ref
    size: int
    lines: int | None = None
    removed: float | None = None

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"file": bytes.fromhex(self.file.id), "size": self.size}
        if self.lines is not None:
            doc["lines"] = self.lines
        if self.removed is not None:
            doc["removed"] = self.removed
        return packb(doc)

    @classmethod
    def decode(cls, raw: bytes, where: str) -> "FileValue":
        doc = unpackb(raw, where)
        if not (isinstance(doc, dict) and isinstance(doc.get("file"), bytes) and len(doc["file"]) == 32
                and isinstance(doc.get("size"), int)):
            raise BlobCorrupt(where, "malformed aptos file entry")
        return cls(Ref(BlobType.FILE, doc["file"].hex()), doc["size"], doc.get("lines"), doc.get("removed"))


class AptosStorage:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    # ---- views ---------------------------------------------------------------------------

    def head(self) -> Reader:
        """The current generation without a pin: for reads that must not write anything."""
        return self.repo.open_reader(pin=False)

    def _on_head(self, fn: Callable[[Reader], Any]) -> Any:
        """Run a short lookup on the head; if GC collected a page of an old head meanwhile, retry."""
        last: BlobMissing | None = None
        for _ in range(HEAD_RETRIES):
            snap = self.head()
            try:
                return fn(snap)
            except BlobMissing as exc:
                last = exc
                if self.repo.read_root()[0].generation == snap.generation.id:
                    raise  # the head itself is damaged: that is not a race
        assert last is not None
        raise last

    @contextmanager
    def view(self, purpose: str, pin: bool, ttl: float = 600.0) -> Iterator[Reader]:
        """A pinned reader (released at the end), or the unpinned head when pins are off."""
        if pin:
            with self.repo.reader(purpose, ttl) as snap:
                yield snap
        else:
            yield self.head()

    # ---- backups -------------------------------------------------------------------------

    def create_backup(self, name: str | None, attempts: int = 8) -> str:
        """Register a backup handle; a taken name (the tool's 16-bit suffix collided) gets a longer one."""
        name = check_backup_handle(name)
        candidate = name
        for _ in range(attempts):
            value = packb({"name": name, "created": self.repo.backend.now()})
            try:
                with self.repo.transaction(f"aptos create-backup {candidate}") as txn:
                    txn.put(NS_BACKUPS, candidate, value, if_absent=True)
                return candidate
            except CommitConflict:
                candidate = check_backup_handle(f"{name}-{secrets.token_hex(4)}")
        raise CommitConflict(f"could not find a free backup handle for {name!r}")

    # ---- data files ----------------------------------------------------------------------

    def prepare_write(self, backup_handle: str | None, file_name: str | None) -> Handle:
        """Validate before the handle is printed, so a bad call fails before the tool sends data."""
        backup = check_backup_handle(backup_handle)
        name = check_name("file name", file_name)
        handle = Handle("data", backup, name)

        def probe(snap: Reader) -> None:
            if snap.entry(NS_BACKUPS, backup) is None:
                raise NotFound(f"unknown backup handle {backup!r}: create it with create-backup first")
            if snap.entry(NS_FILES, handle.key) is not None:
                raise CommitConflict(f"file {handle} already exists; files are written once")

        self._on_head(probe)
        return handle

    def write_file(self, handle: Handle, src: BinaryIO, writer_gone: Callable[[], str | None] = lambda: None) -> FileValue:
        """Store the stream, then publish it under the handle in one commit (create-only)."""
        with self.repo.transaction(f"aptos create-for-write {handle}") as txn:
            ref, size = write_stream(read_pieces(src), txn.put_blob, txn.put_structured)
            if size == 0:
                raise UsageError(f"{handle}: no data was received; refusing to publish an empty file "
                                 "(the writer probably died before sending anything)")
            why = writer_gone()
            if why:
                raise UsageError(f"{handle}: input ended because the writer died ({why}); nothing was published")
            value = FileValue(ref, size)
            txn.put(NS_FILES, handle.key, value.encode(), refs=[ref], if_absent=True)
        return value

    # ---- reading -------------------------------------------------------------------------

    def resolve(self, handle: Handle, snap: Reader | None = None) -> FileValue:
        """The content a handle denotes: live entry first, then a replaced metadata file's tombstone."""
        if handle.kind == "data":
            spaces = [NS_FILES]
        elif handle.kind == "metadata":
            spaces = [NS_METADATA, NS_METADATA_BACKUP]
        else:
            spaces = [NS_METADATA_BACKUP]

        def lookup(view: Reader) -> FileValue:
            for ns in spaces:
                e = view.entry(ns, handle.key)
                if e is not None:
                    return FileValue.decode(view.value(e), f"{ns}/{handle.key}")
            raise NotFound(f"no file with handle {str(handle)!r} (generation {view.generation.seq})")

        return lookup(snap) if snap is not None else self._on_head(lookup)

    def read_file(self, value: FileValue, snap: Reader | None = None) -> Iterator[bytes]:
        """Verified pieces of a file, in order; the total length is checked too."""
        view = snap or self.head()
        seen = 0
        for piece in iter_stream(value.file, view.read_structured, view.read_blob, expected_size=value.size):
            seen += len(piece)
            yield piece
        if seen != value.size:
            raise BlobCorrupt(value.file.id, f"stream holds {seen} bytes, its entry declares {value.size}")

    def read_all(self, handle: str, snap: Reader | None = None) -> bytes:
        h = parse_handle(handle)
        return b"".join(self.read_file(self.resolve(h, snap), snap))

    # ---- metadata ------------------------------------------------------------------------

    def prepare_metadata(self, name: str | None) -> str:
        return metadata_handle(check_name("metadata file name", name))

    def save_metadata(self, name: str, data: bytes, writer_gone: Callable[[], str | None] = lambda: None) -> FileValue:
        """Commit all lines as one entry, or nothing. A name always denotes one content."""
        lines = check_lines(data, name)
        why = writer_gone()
        if why:
            raise UsageError(f"metadata {name}: input ended because the writer died ({why}); nothing was saved")
        cids, _ = stream_ids(read_pieces_bytes(data), self.repo.store.id_key)  # today's ID, and the one an older writer gave it
        txn = self.repo.transaction(f"aptos save-metadata-line {name}")
        try:
            existing = self._existing_metadata(txn.base, name)
            if existing is not None:
                ns, old = existing
                if old.file.id not in cids:
                    raise CommitConflict(f"metadata file {name} already exists with different content "
                                         f"({'live' if ns == NS_METADATA else 'replaced by compaction'}); "
                                         "a metadata name always denotes one content")
                if ns == NS_METADATA:
                    txn.abort()
                    return old  # a retry of a save that landed: nothing to do
                txn.delete(NS_METADATA_BACKUP, name)  # saved again after it was replaced: live again
            ref, size = write_stream(read_pieces_bytes(data), txn.put_blob, txn.put_structured)
            value = FileValue(ref, size, lines)
            txn.put(NS_METADATA, name, value.encode(), refs=[ref], if_absent=True)
            txn.commit()
            return value
        except CommitConflict:
            txn.abort()
            existing = self._on_head(lambda s: self._existing_metadata(s, name))
            if existing is not None and existing[0] == NS_METADATA and existing[1].file.id in cids:
                return existing[1]  # a concurrent identical save won: same content, same handle
            raise
        except BaseException:
            txn.abort()
            raise

    @staticmethod
    def _existing_metadata(snap: Reader, name: str) -> tuple[str, FileValue] | None:
        for ns in (NS_METADATA, NS_METADATA_BACKUP):
            e = snap.entry(ns, name)
            if e is not None:
                return ns, FileValue.decode(snap.value(e), f"{ns}/{name}")
        return None

    def list_metadata(self, pin_ttl: float | None) -> tuple[list[str], str | None]:
        """Handles of one generation's live metadata files; that generation stays pinned for `pin_ttl`.

        The pin outlives this process on purpose: the tool reads the listed files in later
        processes, and GC must keep their content until then. None: no pin (read-only storage).
        """
        if pin_ttl is None:
            return self._on_head(lambda s: [metadata_handle(e.key) for e in s.list(NS_METADATA)]), None
        if not 0 < pin_ttl <= MAX_LEASE:
            raise UsageError(f"pin TTL {pin_ttl:g}s is out of range (0, {MAX_LEASE:g}s]")
        snap = self.repo.open_reader("aptos list-metadata-files", pin_ttl, renew=False)
        try:
            handles = [metadata_handle(e.key) for e in snap.list(NS_METADATA)]
        except BaseException:
            snap.close()
            raise
        return handles, snap.pin_id

    def backup_metadata_file(self, name: str | None) -> bool:
        """Move a live metadata file to the replaced set; True if moved, False if already moved."""
        name = check_name("metadata file name", name)
        txn = self.repo.transaction(f"aptos backup-metadata-file {name}")
        try:
            e = txn.base.entry(NS_METADATA, name)
            if e is None:
                if txn.base.entry(NS_METADATA_BACKUP, name) is not None:
                    txn.abort()
                    return False
                raise NotFound(f"no metadata file {name!r} to back up")
            old = FileValue.decode(txn.base.value(e), f"{NS_METADATA}/{name}")
            tomb = FileValue(old.file, old.size, old.lines, self.repo.backend.now())
            txn.delete(NS_METADATA, name)
            txn.put(NS_METADATA_BACKUP, name, tomb.encode())  # no refs: GC may reclaim it once unpinned
            txn.commit()
            return True
        except BaseException:
            txn.abort()
            raise

    def metadata_files(self, snap: Reader, namespace: str = NS_METADATA) -> Iterator[tuple[str, bytes]]:
        """(name, content) of every metadata file in a generation, content verified."""
        entries: list[Entry] = list(snap.list(namespace))
        for e in entries:
            value = FileValue.decode(snap.value(e), f"{namespace}/{e.key}")
            yield e.key, b"".join(self.read_file(value, snap))


def read_pieces_bytes(data: bytes) -> Iterator[bytes]:
    for off in range(0, len(data), STREAM_PIECE):
        yield data[off:off + STREAM_PIECE]
