"""Restore a snapshot under a target directory (spec/files.md §6), pinned for the whole run.

Safety: every name was validated when its TREE was decoded (one plain component, unique);
directories are entered only with O_NOFOLLOW|O_DIRECTORY relative to their parent's fd, so
no path ever passes through a symlink, whatever the snapshot or the target already holds.
Files are written to a temp name in their directory and renamed into place. Chunks are
fetched, verified (hash and length) and decompressed on the one work pipeline
(transfer.Pipeline); the writer applies them in order with a cap on bytes, chunks and files in
flight, and a file's chunk list is
streamed, so memory does not grow with a file's chunk count. Any missing or corrupt chunk stops
the restore with the error that names it and the file being restored.

Interrupts: on any exception the temp files in flight are removed before the pool is waited
for. The CLI does not raise from its SIGINT/SIGTERM handlers (an exception thrown into a thread
pool's lock handling can deadlock it): it sets `opts.cancel`, which the restore checks between
steps and turns into `Interrupted`. Whatever a hard kill leaves (`.casbackup-restore-<16 hex>`
names only) is removed by the next restore from each directory it restores into.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from ..errors import BlobCorrupt, BlobMissing, UsageError
from ..repository import Reader, Repository
from ..transfer import Pipeline
from .progress import Progress
from .reader import TreeReader, in_file
from .snapshots import SnapshotInfo, resolve
from .tree import DEVICES, MAX_DEPTH, SPECIAL_IFMT, Chunk, Node

TEMP_PREFIX = b".casbackup-restore-"
TEMP_NAME = re.compile(rb"\.casbackup-restore-[0-9a-f]{16}\Z")  # exactly what _tmp() makes
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Interrupted(KeyboardInterrupt):
    """The restore saw its cancel request (RestoreOptions.cancel) and stopped cleanly."""


@dataclass
class RestoreOptions:
    target: str
    includes: list[str] = field(default_factory=list)
    progress: bool = False
    workers: int | None = None
    budget: int = 64 * 1024 * 1024
    max_open_files: int = 128
    max_chunks: int = 4096     # chunk reads queued at once, whatever their size (each costs a Future)
    owner: bool | None = None  # restore uid/gid; default: only when running as root
    cancel: threading.Event | None = None  # set it (e.g. from a signal handler) to stop cleanly


@dataclass
class RestoreSummary:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    specials: int = 0          # FIFOs, sockets and (as root) devices created
    specials_skipped: int = 0  # devices in the snapshot, not created: that needs root
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
        job.handles[id(self)] = self

    def release(self) -> None:
        self.refs -= 1
        if self.refs:
            return
        try:
            if self.node is not None:
                self.job.apply_meta(self.fd, self.node, is_dir=True)
        finally:
            self.close()
        if self.parent is not None:
            self.parent.release()

    def close(self) -> None:
        self.job.handles.pop(id(self), None)
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


@dataclass
class FileJob:
    dir: DirHandle
    node: Node
    fd: int
    tmp: bytes
    path: str                   # in the snapshot, for errors
    remaining: int = 0          # chunks queued and not yet written
    listed: bool = False        # every chunk has been queued
    offset: int = 0

    @property
    def target(self) -> str:
        """Where the file lands on disk (what a write error must name)."""
        return f"{self.dir.path}/{os.fsdecode(self.node.name)}"


class Restorer:
    def __init__(self, reader: TreeReader, opts: RestoreOptions, summary: RestoreSummary, progress: Progress) -> None:
        self.reader, self.opts, self.summary, self.progress = reader, opts, summary, progress
        # more threads than cores: fetching a chunk waits on the storage with the GIL released.
        # A chunk's bytes count from its queuing until they are written.
        self.queue: Pipeline[tuple[FileJob, Chunk, bytes]] = Pipeline(
            opts.workers or max(4, 2 * (os.cpu_count() or 2)), max_items=opts.max_chunks, max_bytes=opts.budget,
            name="restore")
        self.jobs: dict[int, FileJob] = {}
        self.handles: dict[int, DirHandle] = {}
        self.owner = opts.owner if opts.owner is not None else os.geteuid() == 0
        self.includes = [[os.fsencode(p) for p in inc.split("/") if p and p != "."] for inc in opts.includes]

    def check_cancel(self) -> None:
        """Stop at a safe point (no lock held, nothing half-registered) when asked to."""
        if self.opts.cancel is not None and self.opts.cancel.is_set():
            raise Interrupted()

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
        try:
            if node.mode & 0o700 != 0o700:
                os.fchmod(fd, 0o700)  # we must write into it; its real mode is applied at the end
        except BaseException:
            os.close(fd)
            raise
        self.summary.dirs += 1
        handle = DirHandle(fd, node, parent, self, path)
        remove_stale_temps(fd)
        return handle

    def directory(self, handle: DirHandle, tree_id: str, parts: list[bytes]) -> None:
        if len(parts) > MAX_DEPTH:
            raise BlobCorrupt(tree_id, f"directory nesting deeper than {MAX_DEPTH} levels",
                              self.reader.snap.generation.id)
        for node in self.reader.nodes(tree_id):
            self.check_cancel()
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
                self.file(handle, node, "/" + b"/".join(p).decode("utf-8", "surrogateescape"))
            elif node.kind == "symlink":
                self.symlink(handle, node)
            else:
                self.special(handle, node)

    def _tmp(self) -> bytes:
        return TEMP_PREFIX + secrets.token_hex(8).encode()

    def symlink(self, handle: DirHandle, node: Node) -> None:
        assert node.target is not None
        tmp = self._tmp()
        os.symlink(node.target, tmp, dir_fd=handle.fd)
        self._place(handle, node, tmp, chmod=False)  # a symlink's mode cannot be set on Linux
        self.summary.symlinks += 1

    def _place(self, handle: DirHandle, node: Node, tmp: bytes, chmod: bool) -> None:
        """Owner, then mode (so setuid/setgid bits survive the chown), then times of a node made
        under a temp name of ours, never following it; then rename it into place."""
        try:
            if self.owner:
                os.chown(tmp, node.uid, node.gid, dir_fd=handle.fd, follow_symlinks=False)
            if chmod:
                os.chmod(tmp, node.mode, dir_fd=handle.fd)  # the name is ours: it was created exclusively
            os.utime(tmp, ns=(node.mtime_ns, node.mtime_ns), dir_fd=handle.fd, follow_symlinks=False)
            os.rename(tmp, node.name, src_dir_fd=handle.fd, dst_dir_fd=handle.fd)
        except BaseException:
            _unlink(tmp, handle.fd)
            raise

    def special(self, handle: DirHandle, node: Node) -> None:
        """A FIFO, socket or device node: created under a temp name, owner before mode (so
        setuid/setgid bits survive), then renamed into place. Devices need root (mknod)."""
        if node.kind in DEVICES and not self.owner:
            self.summary.specials_skipped += 1
            return
        tmp = self._tmp()
        os.mknod(tmp, SPECIAL_IFMT[node.kind] | 0o600, node.rdev, dir_fd=handle.fd)
        self._place(handle, node, tmp, chmod=True)
        self.summary.specials += 1

    def file(self, handle: DirHandle, node: Node, path: str) -> None:
        """Queue a file's chunk reads (streamed from its list, sizes checked by TreeReader.chunks)."""
        chunks: Iterator[Chunk] = self.reader.chunks(node, path, "restoring")
        first = next(chunks, None)  # the list's sizes are checked before anything is created
        tmp = self._tmp()
        job = FileJob(handle, node, -1, tmp, path)
        self.jobs[id(job)] = job  # before the open: abandon() removes the name even if we stop here
        handle.refs += 1
        job.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=handle.fd)
        if first is None:
            if node.data:
                _write_all(job.fd, node.data, 0, job.target)
                self.progress.add(nbytes=len(node.data))
            job.listed = True
            self.finish(job)
            return
        c: Chunk | None = first
        while c is not None:
            self.check_cancel()
            while self.queue and (self.queue.full(c.size) or len(self.jobs) > self.opts.max_open_files):
                self.write_next()
            self.queue.submit(self.fetch, job, c, cost=c.size)
            job.remaining += 1
            c = next(chunks, None)
        job.listed = True
        if job.remaining == 0:  # every queued chunk was written while we listed the rest
            self.finish(job)

    def fetch(self, job: FileJob, chunk: Chunk) -> tuple[FileJob, Chunk, bytes]:
        """On the pool: one chunk, verified; an error names the file being restored."""
        try:
            return job, chunk, self.reader.read_chunk(chunk)
        except (BlobCorrupt, BlobMissing) as exc:
            raise in_file(exc, f"restoring {job.path}") from None

    def write_next(self) -> None:
        self.check_cancel()
        job, chunk, data = self.queue.take()
        if data[:1] == b"\0" and data[-1:] == b"\0" and data.count(0) == len(data):
            job.offset += len(data)  # a hole: keep sparse files sparse (ftruncate sets the size)
        else:
            job.offset = _write_all(job.fd, data, job.offset, job.target)
        self.progress.add(nbytes=len(data))
        job.remaining -= 1
        if job.remaining == 0 and job.listed:
            self.finish(job)

    def finish(self, job: FileJob) -> None:
        """Size, metadata, rename into place. The job stays in self.jobs until the rename, so an
        interrupt anywhere before it still finds (and removes) the temp file."""
        os.ftruncate(job.fd, job.node.size)
        self.apply_meta(job.fd, job.node)
        fd, job.fd = job.fd, -1
        os.close(fd)
        try:
            os.rename(job.tmp, job.node.name, src_dir_fd=job.dir.fd, dst_dir_fd=job.dir.fd)
        except OSError as exc:
            raise UsageError(f"cannot restore {job.dir.path}/{os.fsdecode(job.node.name)}: "
                             f"{exc.strerror or exc}") from None
        del self.jobs[id(job)]
        self.summary.files += 1
        self.summary.bytes += job.node.size
        self.progress.add(files=1)
        job.dir.release()

    def drain(self) -> None:
        while self.queue:
            self.write_next()

    def abandon(self) -> None:
        """After an error or an interrupt: remove every temp file we created, then stop the pool.
        Files first: only this thread writes them, and a second Ctrl-C while the pool drains
        must not leave them behind."""
        self.queue.cancel()
        for job in list(self.jobs.values()):
            if job.fd >= 0:
                try:
                    os.close(job.fd)
                except OSError:
                    pass
                job.fd = -1
            _unlink(job.tmp, job.dir.fd)
        self.jobs.clear()
        for handle in list(self.handles.values()):
            try:
                handle.close()
            except OSError:
                pass
        self.queue.close()


def _write_all(fd: int, data: bytes, offset: int, where: str) -> int:
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            offset += n
            view = view[n:]
    except OSError as exc:
        exc.add_note(f"path: {where}")  # pwrite's error names no file; the CLI reports this one
        raise
    return offset


def _unlink(name: bytes, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def remove_stale_temps(dir_fd: int) -> None:
    """Remove temp files an earlier, killed restore left in this directory: our exact names only
    (`.casbackup-restore-` and 16 lowercase hex digits), and never a directory."""
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return
    for name in names:
        if name.startswith(".casbackup-restore-") and TEMP_NAME.match(os.fsencode(name)):
            try:
                os.unlink(name, dir_fd=dir_fd)  # never follows a symlink; refuses a directory
            except OSError:
                pass


def check_includes(reader: TreeReader, tree: str, includes: list[str]) -> None:
    """Every --include must name a path of the snapshot (NotFound otherwise), checked before
    anything is written."""
    for inc in includes:
        reader.lookup(tree, inc)


def restore_snapshot(snap: Reader, info: SnapshotInfo, opts: RestoreOptions) -> RestoreSummary:
    """Restore through an already pinned Reader."""
    started = time.monotonic()
    summary = RestoreSummary()
    progress = Progress("restore", opts.progress, total_bytes=info.size or None)
    reader = TreeReader(snap)
    check_includes(reader, info.tree, opts.includes)
    os.makedirs(opts.target, exist_ok=True)
    job = Restorer(reader, opts, summary, progress)
    ok = False
    try:
        root_fd = os.open(opts.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        root = DirHandle(root_fd, None, None, job, opts.target.rstrip("/") or "/")
        remove_stale_temps(root_fd)
        job.directory(root, info.tree, [])
        job.drain()
        ok = True
    finally:
        if not ok:
            job.abandon()
        else:
            job.queue.close(cancel=False)
            root.release()
        progress.done()
    summary.duration = time.monotonic() - started
    return summary


def run_restore(repo: Repository, spec: str, opts: RestoreOptions) -> tuple[SnapshotInfo, RestoreSummary]:
    with repo.reader("restore") as snap:
        info = resolve(snap, spec)
        return info, restore_snapshot(snap, info, opts)
