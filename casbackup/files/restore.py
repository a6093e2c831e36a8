"""Restore a snapshot under a target directory (spec/files.md §6), pinned for the whole run.

Safety: every name was validated when its TREE was decoded (one plain component, unique);
directories are entered only with O_NOFOLLOW|O_DIRECTORY relative to their parent's fd, so
no path ever passes through a symlink, whatever the snapshot or the target already holds.
Files are written to a temp name in their directory and renamed into place. Chunks are
fetched, verified (hash and length) and decompressed on a thread pool; the writer applies
them in order with a cap on bytes and files in flight. Any missing or corrupt chunk stops
the restore with the error that names it.
"""
from __future__ import annotations

import errno
import os
import secrets
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import BlobCorrupt, UsageError
from ..repository import Repository
from .progress import Progress
from .reader import TreeReader
from .snapshots import SnapshotInfo, resolve
from .tree import MAX_DEPTH, Chunk, Node

TEMP_PREFIX = b".casbackup-restore-"
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class RestoreOptions:
    target: str
    includes: list[str] = field(default_factory=list)
    progress: bool = False
    workers: int | None = None
    budget: int = 64 * 1024 * 1024
    max_open_files: int = 128
    owner: bool | None = None  # restore uid/gid; default: only when running as root


@dataclass
class RestoreSummary:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["duration"] = round(self.duration, 3)
        return d


class DirHandle:
    """An open directory; its metadata is applied when its walk and all its files are done."""

    def __init__(self, fd: int, node: Node | None, parent: "DirHandle | None", job: "Restorer", path: str) -> None:
        self.fd, self.node, self.parent, self.job, self.path = fd, node, parent, job, path
        self.refs = 1
        if parent is not None:
            parent.refs += 1

    def release(self) -> None:
        self.refs -= 1
        if self.refs:
            return
        try:
            if self.node is not None:
                self.job.apply_meta(self.fd, self.node, is_dir=True)
        finally:
            os.close(self.fd)
            self.fd = -1
        if self.parent is not None:
            self.parent.release()


@dataclass
class FileJob:
    dir: DirHandle
    node: Node
    fd: int
    tmp: bytes
    remaining: int
    offset: int = 0


class Restorer:
    def __init__(self, reader: TreeReader, opts: RestoreOptions, summary: RestoreSummary, progress: Progress) -> None:
        self.reader, self.opts, self.summary, self.progress = reader, opts, summary, progress
        # more threads than cores: fetching a chunk waits on the storage with the GIL released
        self.pool = ThreadPoolExecutor(max_workers=opts.workers or max(4, 2 * (os.cpu_count() or 2)),
                                       thread_name_prefix="restore")
        self.queue: deque[tuple[FileJob, Chunk, Future[bytes]]] = deque()
        self.inflight = 0
        self.jobs: dict[int, FileJob] = {}
        self.owner = opts.owner if opts.owner is not None else os.geteuid() == 0
        self.includes = [[os.fsencode(p) for p in inc.split("/") if p and p != "."] for inc in opts.includes]

    # ---- selection ----
    def selected(self, parts: list[bytes]) -> bool:
        if not self.includes:
            return True
        return any(inc[:len(parts)] == parts or parts[:len(inc)] == inc for inc in self.includes)

    # ---- metadata ----
    def apply_meta(self, fd: int, node: Node, is_dir: bool = False) -> None:
        if self.owner:
            os.fchown(fd, node.uid, node.gid)
        os.fchmod(fd, node.mode)
        os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))

    # ---- walking ----
    def subdir(self, parent: DirHandle, node: Node) -> DirHandle:
        path = f"{parent.path}/{os.fsdecode(node.name)}"
        try:
            os.mkdir(node.name, 0o700, dir_fd=parent.fd)
        except FileExistsError:
            pass
        try:
            fd = os.open(node.name, O_DIR, dir_fd=parent.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UsageError(f"refusing to restore into {path}: it exists in the target and is not a "
                                 "directory (a symlink is never followed)") from None
            raise
        if node.mode & 0o700 != 0o700:
            os.fchmod(fd, 0o700)  # we must write into it; its real mode is applied at the end
        self.summary.dirs += 1
        return DirHandle(fd, node, parent, self, path)

    def directory(self, handle: DirHandle, tree_id: str, parts: list[bytes]) -> None:
        if len(parts) > MAX_DEPTH:
            raise BlobCorrupt(tree_id, f"directory nesting deeper than {MAX_DEPTH} levels",
                              self.reader.snap.generation.id)
        for node in self.reader.nodes(tree_id):
            p = parts + [node.name]
            if not self.selected(p):
                continue
            if node.is_dir:
                child = self.subdir(handle, node)
                try:
                    self.directory(child, node.tree or "", p)
                finally:
                    child.release()
            elif node.kind == "file":
                self.file(handle, node, tree_id)
            else:
                self.symlink(handle, node)

    def _tmp(self) -> bytes:
        return TEMP_PREFIX + secrets.token_hex(8).encode()

    def symlink(self, handle: DirHandle, node: Node) -> None:
        assert node.target is not None
        tmp = self._tmp()
        os.symlink(node.target, tmp, dir_fd=handle.fd)
        try:
            if self.owner:
                os.chown(tmp, node.uid, node.gid, dir_fd=handle.fd, follow_symlinks=False)
            os.utime(tmp, ns=(node.mtime_ns, node.mtime_ns), dir_fd=handle.fd, follow_symlinks=False)
            os.rename(tmp, node.name, src_dir_fd=handle.fd, dst_dir_fd=handle.fd)
        except BaseException:
            _unlink(tmp, handle.fd)
            raise
        self.summary.symlinks += 1

    def file(self, handle: DirHandle, node: Node, tree_id: str) -> None:
        chunks = self.reader.chunks(node) if node.data is None else []
        if node.data is None and sum(c.size for c in chunks) != node.size:
            raise BlobCorrupt(node.file or tree_id, f"chunks of {os.fsdecode(node.name)!r} do not add up to its size",
                              self.reader.snap.generation.id)
        tmp = self._tmp()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=handle.fd)
        job = FileJob(handle, node, fd, tmp, len(chunks))
        handle.refs += 1
        self.jobs[id(job)] = job
        if not chunks:
            if node.data:
                _write_all(fd, node.data, 0)
                self.progress.add(nbytes=len(node.data))
            self.finish(job)
            return
        for c in chunks:
            while self.queue and (self.inflight + c.size > self.opts.budget or len(self.jobs) > self.opts.max_open_files):
                self.write_next()
            self.queue.append((job, c, self.pool.submit(self.reader.read_chunk, c)))
            self.inflight += c.size

    def write_next(self) -> None:
        job, chunk, fut = self.queue.popleft()
        data = fut.result()
        self.inflight -= chunk.size
        if data[:1] == b"\0" and data[-1:] == b"\0" and data.count(0) == len(data):
            job.offset += len(data)  # a hole: keep sparse files sparse (ftruncate sets the size)
        else:
            job.offset = _write_all(job.fd, data, job.offset)
        self.progress.add(nbytes=len(data))
        job.remaining -= 1
        if job.remaining == 0:
            self.finish(job)

    def finish(self, job: FileJob) -> None:
        del self.jobs[id(job)]
        try:
            os.ftruncate(job.fd, job.node.size)
            self.apply_meta(job.fd, job.node)
        except BaseException:
            os.close(job.fd)
            _unlink(job.tmp, job.dir.fd)
            raise
        os.close(job.fd)
        try:
            os.rename(job.tmp, job.node.name, src_dir_fd=job.dir.fd, dst_dir_fd=job.dir.fd)
        except OSError as exc:
            _unlink(job.tmp, job.dir.fd)
            raise UsageError(f"cannot restore {job.dir.path}/{os.fsdecode(job.node.name)}: "
                             f"{exc.strerror or exc}") from None
        self.summary.files += 1
        self.summary.bytes += job.node.size
        self.progress.add(files=1)
        job.dir.release()

    def drain(self) -> None:
        while self.queue:
            self.write_next()

    def abandon(self) -> None:
        """After an error: stop the pool and remove every temp file we left behind."""
        for _, _, fut in self.queue:
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for job in list(self.jobs.values()):
            try:
                os.close(job.fd)
            except OSError:
                pass
            _unlink(job.tmp, job.dir.fd)
        self.queue.clear()
        self.jobs.clear()


def _write_all(fd: int, data: bytes, offset: int) -> int:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        offset += n
        view = view[n:]
    return offset


def _unlink(name: bytes, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def restore_snapshot(snap: Any, info: SnapshotInfo, opts: RestoreOptions) -> RestoreSummary:
    """Restore through an already pinned Snapshot."""
    started = time.monotonic()
    summary = RestoreSummary()
    progress = Progress("restore", opts.progress, total_bytes=info.size or None)
    reader = TreeReader(snap)
    os.makedirs(opts.target, exist_ok=True)
    root_fd = os.open(opts.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    job = Restorer(reader, opts, summary, progress)
    root = DirHandle(root_fd, None, None, job, opts.target.rstrip("/") or "/")
    ok = False
    try:
        job.directory(root, info.tree, [])
        job.drain()
        ok = True
    finally:
        if not ok:
            job.abandon()
            os.close(root_fd)
        else:
            job.pool.shutdown(wait=True)
            root.release()
        progress.done()
    summary.duration = time.monotonic() - started
    return summary


def run_restore(repo: Repository, spec: str, opts: RestoreOptions) -> tuple[SnapshotInfo, RestoreSummary]:
    with repo.reader("restore") as snap:
        info = resolve(snap, spec)
        return info, restore_snapshot(snap, info, opts)
