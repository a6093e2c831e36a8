"""Import a backup folder in the tool's local layout into a repository.

`<root>/<backup_handle>/<file>`, `<root>/metadata/*.meta`, `<root>/metadata_backup/*.meta`.
Data goes in first, one commit per backup folder, and the metadata last in one commit, the
tool's own write order: no imported metadata line can name a file that is not there yet.
Old handles stay valid because data handles keep their `<backup_handle>/<file>` form.
Every file is checked before it goes in; anything half-written, unparsable or unsafe
(symlinks, odd names) is reported and left out, never imported silently. A second run
compares content IDs and imports nothing twice.

The legacy object-store configs pipe every file (data and metadata) through `gzip -c` and
read it back through `gzip -cd`. Such files are stored decompressed, so each handle yields
through `open-for-read` exactly what the legacy read produced. `gzip="auto"` decompresses a
file that starts with the gzip magic bytes (1f 8b 08); no raw Aptos file can: a chunk starts
with a record length below 128 MiB, a manifest or metadata file with `{`. The whole stream
must then be valid gzip (CRC and length checked), else the file is reported and left out.
"""
from __future__ import annotations

import gzip
import os
import stat
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, BinaryIO, Callable, Iterator

from ..codec import packb
from ..errors import UsageError
from ..repository import Reader, Transaction
from .metadata import MetaError, parse_file
from .names import (
    MAX_METADATA_BYTES,
    METADATA_BACKUP_DIR,
    METADATA_DIR,
    NAME_RE,
    NS_BACKUPS,
    NS_FILES,
    NS_METADATA,
    NS_METADATA_BACKUP,
    RESERVED,
    check_lines,
)
from .storage import AptosStorage, FileValue, read_pieces_bytes
from .streams import read_pieces, stream_ids, write_stream


GZIP_MAGIC = b"\x1f\x8b\x08"
GZIP_MODES = ("auto", "always", "never")
# What a damaged gzip stream raises while it is read (BadGzipFile: bad header or trailing junk,
# EOFError: cut short, zlib.error: corrupt deflate data; a wrong CRC or length is a BadGzipFile).
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


class NotGzip(Exception):
    """A file that --gzip always requires to be gzip is not."""


@dataclass
class ImportReport:
    backups: int = 0
    gunzipped: int = 0
    files_imported: int = 0
    files_present: int = 0
    bytes_imported: int = 0
    metadata_imported: int = 0
    metadata_present: int = 0
    replaced_imported: int = 0
    replaced_present: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)

    def reject(self, path: str, reason: str) -> None:
        self.rejected.append({"path": path, "reason": reason})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _open_regular(path: Path) -> BinaryIO:
    """Open without following symlinks, and only a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{path}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


@contextmanager
def _content(path: Path, mode: str) -> Iterator[tuple[BinaryIO, bool]]:
    """The file's content as the legacy open-for-read returns it: (reader, was it gzip)."""
    with _open_regular(path) as f:
        magic = f.read(len(GZIP_MAGIC))
        f.seek(0)
        if mode == "always" and magic != GZIP_MAGIC:
            raise NotGzip("not gzip-compressed (--gzip always)")
        if mode == "never" or magic != GZIP_MAGIC:
            yield f, False
            return
        with gzip.GzipFile(fileobj=f, mode="rb") as g:
            yield g, True  # type: ignore[misc]


@contextmanager
def _committing(txn: Transaction) -> Iterator[Transaction]:
    """Commit only if something was staged: a re-run that finds everything present writes nothing."""
    try:
        yield txn
    except BaseException:
        txn.abort()
        raise
    if txn.ops:
        txn.commit()
    else:
        txn.abort()


class LegacyImporter:
    def __init__(self, storage: AptosStorage, root: Path, progress: Callable[[str], None] | None = None,
                 gzip_mode: str = "auto") -> None:
        if gzip_mode not in GZIP_MODES:
            raise UsageError(f"gzip mode {gzip_mode!r}: expected one of {', '.join(GZIP_MODES)}")
        self.gzip_mode = gzip_mode
        self.storage = storage
        self.repo = storage.repo
        self.root = root
        self.report = ImportReport()
        self.progress = progress or (lambda _m: None)

    def run(self) -> ImportReport:
        if not self.root.is_dir() or self.root.is_symlink():
            raise UsageError(f"{self.root}: not a directory")
        folders: list[Path] = []
        for p in sorted(self.root.iterdir()):
            rel = p.name
            if p.is_symlink():
                self.report.reject(rel, "symbolic link (not followed)")
            elif not p.is_dir():
                self.report.reject(rel, "a file outside any backup folder")
            elif p.name in RESERVED:
                continue
            elif not NAME_RE.match(p.name):
                self.report.reject(rel, "folder name is not a valid backup handle")
            else:
                folders.append(p)
        for folder in folders:
            self._import_backup(folder)
        self._import_metadata()
        return self.report

    # ---- data ----------------------------------------------------------------------------

    def _files_of(self, folder: Path) -> list[Path]:
        out = []
        for p in sorted(folder.iterdir()):
            rel = f"{folder.name}/{p.name}"
            if p.is_symlink():
                self.report.reject(rel, "symbolic link (not followed)")
            elif not p.is_file():
                self.report.reject(rel, "not a regular file (nested folders are not part of the layout)")
            elif not NAME_RE.match(p.name):
                self.report.reject(rel, "file name is not a valid name")
            elif p.stat().st_size == 0:
                self.report.reject(rel, "empty file (an interrupted write?)")
            else:
                out.append(p)
        return out

    def _import_backup(self, folder: Path) -> None:
        backup = folder.name
        files = self._files_of(folder)
        self.progress(f"importing {backup} ({len(files)} files)")
        head = self.storage.head()
        with _committing(self.repo.transaction(f"aptos import {backup}")) as txn:
            if head.entry(NS_BACKUPS, backup) is None:
                txn.put(NS_BACKUPS, backup, packb({"name": backup, "created": self.repo.backend.now(),
                                                   "imported": True}))
                self.report.backups += 1
            for path in files:
                key = f"{backup}/{path.name}"
                try:
                    self._import_file(head, txn, key, path)
                except NotGzip as exc:
                    self.report.reject(key, str(exc))
                except GZIP_ERRORS as exc:
                    self.report.reject(key, f"starts like gzip but is not a valid gzip stream (cut short or "
                                            f"damaged: {exc}); use --gzip never if it is stored raw")

    def _import_file(self, head: Reader, txn: Transaction, key: str, path: Path) -> None:
        existing = head.entry(NS_FILES, key)
        if existing is not None:
            old = FileValue.decode(head.value(existing), f"{NS_FILES}/{key}")
            with _content(path, self.gzip_mode) as (f, _):
                cids, _n = stream_ids(read_pieces(f), txn.repo.store.id_key)  # as stored today, or by an older writer
            if old.file.id in cids:
                self.report.files_present += 1
            else:
                self.report.reject(key, f"differs from the file already imported under this handle "
                                        f"(stored {old.file.id[:16]}, legacy {cids[0][:16]})")
            return
        with _content(path, self.gzip_mode) as (f, was_gzip):
            ref, size = write_stream(read_pieces(f), txn.put_blob, txn.put_structured)
        if size == 0:
            self.report.reject(key, "empty after gunzip (an interrupted write?)")
            return
        txn.put(NS_FILES, key, FileValue(ref, size).encode(), refs=[ref])
        self.report.files_imported += 1
        self.report.bytes_imported += size
        self.report.gunzipped += was_gzip

    # ---- metadata ------------------------------------------------------------------------

    def _read_metadata_dir(self, sub: str) -> list[tuple[str, bytes]]:
        folder = self.root / sub
        if not folder.exists():
            return []
        if folder.is_symlink() or not folder.is_dir():
            self.report.reject(sub, "not a directory")
            return []
        out = []
        for p in sorted(folder.iterdir()):
            rel = f"{sub}/{p.name}"
            if p.is_symlink() or not p.is_file():
                self.report.reject(rel, "not a regular file")
                continue
            if not NAME_RE.match(p.name):
                self.report.reject(rel, "file name is not a valid name (a temporary file?)")
                continue
            if p.stat().st_size > MAX_METADATA_BYTES:
                self.report.reject(rel, f"larger than {MAX_METADATA_BYTES} bytes")
                continue
            try:
                with _content(p, self.gzip_mode) as (f, was_gzip):
                    data = f.read(MAX_METADATA_BYTES + 1)
            except NotGzip as exc:
                self.report.reject(rel, str(exc))
                continue
            except GZIP_ERRORS as exc:
                self.report.reject(rel, f"half-written or damaged gzip, not imported: {exc}")
                continue
            if len(data) > MAX_METADATA_BYTES:
                self.report.reject(rel, f"larger than {MAX_METADATA_BYTES} bytes after gunzip")
                continue
            self.report.gunzipped += was_gzip
            try:
                check_lines(data, rel)
                parse_file(p.name, data)
            except (UsageError, MetaError) as exc:
                reason = str(exc).removeprefix(f"{rel}: ")
                self.report.reject(rel, f"half-written or unparsable metadata, not imported: {reason}")
                continue
            out.append((p.name, data))
        return out

    def _import_metadata(self) -> None:
        live = self._read_metadata_dir(METADATA_DIR)
        replaced = self._read_metadata_dir(METADATA_BACKUP_DIR)
        if not live and not replaced:
            return
        head = self.storage.head()
        live_names = {n for n, _ in live}
        with _committing(self.repo.transaction("aptos import metadata")) as txn:
            for name, data in live:
                if self._present(head, name, data, METADATA_DIR):
                    self.report.metadata_present += 1
                    continue
                ref, size = write_stream(read_pieces_bytes(data), txn.put_blob, txn.put_structured)
                txn.put(NS_METADATA, name, FileValue(ref, size, data.count(b"\n")).encode(), refs=[ref])
                self.report.metadata_imported += 1
            for name, data in replaced:
                if name in live_names:
                    self.report.reject(f"{METADATA_BACKUP_DIR}/{name}", "a live metadata file has the same name; "
                                       "the live one was imported")
                    continue
                if self._present(head, name, data, METADATA_BACKUP_DIR):
                    self.report.replaced_present += 1
                    continue
                ref, size = write_stream(read_pieces_bytes(data), txn.put_blob, txn.put_structured)
                tomb = FileValue(ref, size, data.count(b"\n"), self.repo.backend.now())
                txn.put(NS_METADATA_BACKUP, name, tomb.encode())  # replaced: kept only while pinned or in grace
                self.report.replaced_imported += 1

    def _present(self, head: Reader, name: str, data: bytes, sub: str) -> bool:
        """Already imported (live or since replaced)? A different content under the name is rejected."""
        found = self.storage._existing_metadata(head, name)  # noqa: SLF001 - same package
        if found is None:
            return False
        cids, _ = stream_ids(read_pieces_bytes(data), self.storage.repo.store.id_key)
        if found[1].file.id not in cids:
            self.report.reject(f"{sub}/{name}", "differs from the metadata file already in the repository "
                                                "under this name")
        return True
