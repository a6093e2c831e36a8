"""Local-disk backend: temp file + fsync + link/rename + directory fsync; flock for CAS.

obstore's local store is not used: it never fsyncs and has no update-by-etag.
"""
from __future__ import annotations

import builtins
import errno
import fcntl
import os
import secrets
import time
from pathlib import Path
from typing import Iterator

from ..errors import BackendError, EtagMismatch, KeyMissing, RepositoryNotFound, WriteRefused
from .base import Capabilities, ObjectInfo, content_etag, validate_key

TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
# Errors that mean the storage refuses writes (a read-only mount, permissions): readers may
# still read, e.g. without a pin (--no-pin).
_REFUSED = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _fail(op: str, path: Path | str, exc: OSError, write: bool = True) -> BackendError:
    """An OSError as a storage error naming the path (CLI exit 8), not a bare errno (exit 1)."""
    cls = WriteRefused if write and exc.errno in _REFUSED else BackendError
    reason = exc.strerror or str(exc)
    return cls(f"{op} {path}: {reason}")


class LocalBackend:
    def __init__(self, root: str | os.PathLike[str], create: bool = False) -> None:
        self.root = Path(root).absolute()
        self.location = str(self.root)  # what messages name: the repository's path
        self.capabilities = Capabilities(conditional_create=True, conditional_update=True)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root.parent)
        elif not self.root.is_dir():
            raise RepositoryNotFound(f"no repository at {self.root} (run 'casbackup -r {self.root} init')")
        self._known_dirs: set[Path] = set()

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _ensure_dir(self, directory: Path) -> None:
        """Create a directory chain and fsync each parent, so new entries survive power loss."""
        if directory in self._known_dirs:
            return
        missing = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            d = d.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                pass
            _fsync_dir(d.parent)
        self._known_dirs.add(directory)

    def _write_temp(self, directory: Path, data: bytes) -> Path:
        self._ensure_dir(directory)
        tmp = directory / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quiet(tmp)
            raise
        os.close(fd)
        return tmp

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyMissing(f"no such key: {key}") from None
        except OSError as exc:
            raise _fail("reading", path, exc, write=False) from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read(length)
        except FileNotFoundError:
            raise KeyMissing(f"no such key: {key}") from None
        except OSError as exc:
            raise _fail("reading", path, exc, write=False) from exc

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if path.exists():
            return False
        try:
            return self._create(path, data)
        except OSError as exc:
            raise _fail("writing", getattr(exc, "filename", None) or path, exc) from exc

    def _create(self, path: Path, data: bytes) -> bool:
        tmp = self._write_temp(path.parent, data)
        try:
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = False
        finally:
            _unlink_quiet(tmp)
        _fsync_dir(path.parent)
        return created

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, content_etag(data)

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        path = self._path(key)
        try:
            return self._compare_and_swap(key, path, expected_etag, data)
        except OSError as exc:
            raise _fail("writing", getattr(exc, "filename", None) or path, exc) from exc

    def _compare_and_swap(self, key: str, path: Path, expected_etag: str | None, data: bytes) -> str:
        self._ensure_dir(path.parent)
        # One lock per folder, never deleted: per-key lock files would pile up (one per pin), and
        # deleting a lock file lets two processes lock two different inodes of the same name.
        lock_path = path.parent / LOCK_NAME
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                try:
                    current: str | None = content_etag(path.read_bytes())
                except FileNotFoundError:
                    current = None
                if current != expected_etag:
                    raise EtagMismatch(f"{key} changed (expected {expected_etag}, found {current})")
                tmp = self._write_temp(path.parent, data)
                try:
                    os.replace(tmp, path)
                except BaseException:
                    _unlink_quiet(tmp)
                    raise
                _fsync_dir(path.parent)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        return content_etag(data)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix names (listing pins/ must not walk every blob).
        directory = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        start = self.root / validate_key(directory.rstrip("/")) if directory else self.root
        try:
            # sorted whole (the listing's order), so keep three fields, not each stat_result
            entries = sorted((rel, st.st_size, st.st_mtime) for rel, st in self._walk(start, directory))
        except OSError as exc:
            raise _fail(f"listing {prefix!r} in", start, exc, write=False) from exc
        for rel, size, mtime in entries:
            if rel.startswith(prefix):
                yield ObjectInfo(rel, size, mtime)

    def _walk(self, directory: Path, rel: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            it = os.scandir(directory)
        except FileNotFoundError:
            return  # absent (nothing stored under it yet) or removed while we walked
        with it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                name = f"{rel}{entry.name}"
                try:
                    if entry.is_dir(follow_symlinks=False):
                        yield from self._walk(Path(entry.path), name + "/")
                    elif entry.is_file(follow_symlinks=False):
                        yield name, entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted concurrently (a released pin, a swept blob): not listed

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _fail("deleting", path, exc) from exc
        # No folder fsync: a delete lost to a power cut only brings back an orphan blob or a dead
        # pin, which gc handles; an fsync per delete made the sweep ~5x slower.

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise KeyMissing(f"no such key: {key}") from None
        except OSError as exc:
            raise _fail("reading", path, exc, write=False) from exc
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def now(self) -> float:
        return time.time()

    def close(self) -> None:
        pass

    def stale_temp_files(self, older_than: float) -> builtins.list[Path]:
        """Temp files a crashed writer left behind (older than `older_than` seconds)."""
        cutoff = time.time() - older_than
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TEMP_PREFIX):
                    p = Path(dirpath) / name
                    try:
                        if p.stat().st_mtime < cutoff:
                            found.append(p)
                    except FileNotFoundError:
                        pass
        return found

    def remove_stale_temp_files(self, older_than: float) -> int:
        stale = self.stale_temp_files(older_than)
        for p in stale:
            _unlink_quiet(p)
        return len(stale)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
