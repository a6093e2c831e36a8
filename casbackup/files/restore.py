"""Restore a snapshot under a target directory (spec/files.md §6), pinned for the whole run.

Safety: every name was validated when its TREE was decoded (one plain component, unique);
directories are entered only with O_NOFOLLOW|O_DIRECTORY relative to their parent's fd, so
no path ever passes through a symlink, whatever the snapshot or the target already holds.
Files are written to a temp name in their directory and renamed into place. Chunks are
fetched, verified (hash and length), decompressed and written (pwrite at the chunk's known
offset) on the one work pipeline's threads (transfer.Pipeline): no byte of a chunk is written
before the store verified all of it. The walking thread takes the results back in order, with a
cap on bytes, chunks and files in flight, and finishes a file (size, metadata, rename) once its
last chunk is written; a file's chunk list is streamed, so memory does not grow with a file's
chunk count. Hard-linked entries after the first of their inode are made as links to it
(files/fidelity.py); extended attributes are applied after owner and mode, before times. Any
missing or corrupt chunk stops the restore with the error that names it and the file being
restored.

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
import shutil
import stat as statmod
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from ..codec import BlobType
from ..errors import BlobCorrupt, BlobMissing, NotFound, UsageError
from ..packs import Location
from ..repository import Reader, Repository
from ..transfer import DEFAULT_BYTES, DEFAULT_REQUESTS, Pipeline
from .fidelity import LinkKey, apply_xattrs, link_key, path_at
from .patterns import Pattern, child_match, list_match, split_path
from .progress import Display, Progress
from .reader import TreeReader, in_file
from .snapshots import SnapshotInfo, resolve
from .tree import DEVICES, MAX_DEPTH, SPECIAL_IFMT, Chunk, Node

TEMP_PREFIX = b".casbackup-restore-"
# Restore looks at a file's chunks WINDOW_BYTES at a time and reads those near each other in a
# pack together: one ranged read spans at most RUN_BYTES of the pack, skipping gaps of at most
# RUN_GAP (other files' chunks, read and dropped).
WINDOW_BYTES = 32 * 1024 * 1024
RUN_BYTES = 8 * 1024 * 1024
RUN_GAP = 256 * 1024
# A chunk, where the generation locates it (None: not located), and its offset in the file.
Piece = tuple[Chunk, Optional[Location], int]
TEMP_NAME = re.compile(rb"\.casbackup-restore-[0-9a-f]{16}(-[0-9]+)?\Z")  # what _tmp() makes (and made)
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
OVERWRITE_MODES = ("always", "if-changed", "if-newer", "never")
SPARSE_BLOCK = 4096  # --sparse: a zero-filled, aligned run this long becomes a hole
ZERO_BLOCK = bytes(SPARSE_BLOCK)


class Interrupted(KeyboardInterrupt):
    """The restore saw its cancel request (RestoreOptions.cancel) and stopped cleanly."""


@dataclass
class RestoreOptions:
    target: str
    includes: list[str] = field(default_factory=list)    # restic patterns (restic 0.17 restore --include)
    excludes: list[str] = field(default_factory=list)
    iincludes: list[str] = field(default_factory=list)   # case-insensitive
    iexcludes: list[str] = field(default_factory=list)
    subpath: str = ""           # SNAPSHOT:subpath: restore only this directory's content into target
    dry_run: bool = False       # walk and count; write nothing
    list_paths: bool = False    # with dry_run: collect the paths that would be restored
    overwrite: str = "always"   # always | if-changed (size+mtime) | if-newer (mtime) | never
    delete: bool = False        # afterwards, remove target entries the snapshot does not have
    verify: bool = False        # afterwards, read the restored files back against their chunk ids
    progress: bool | Display = False
    workers: int | None = None
    budget: int = DEFAULT_BYTES
    max_open_files: int = 128
    max_chunks: int = 4096     # chunk reads queued at once, whatever their size (each costs a Future)
    owner: bool | None = None  # restore uid/gid; default: only when running as root
    sparse: bool = False       # zero-filled 4 KiB blocks become holes (all-zero chunks always do)
    cancel: threading.Event | None = None  # set it (e.g. from a signal handler) to stop cleanly


@dataclass
class RestoreSummary:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    specials: int = 0          # FIFOs, sockets and (as root) devices created
    specials_skipped: int = 0  # devices in the snapshot, not created: that needs root
    bytes: int = 0
    skipped: int = 0           # existing entries kept by --overwrite
    deleted: int = 0           # entries --delete removed
    verified: int = 0          # files --verify read back and found equal
    hardlinks: int = 0         # entries made as a hard link to an earlier one (counted in files etc. too)
    xattrs_skipped: int = 0    # extended attributes the target refused (no support, or not root)
    dry_run: bool = False
    duration: float = 0.0
    verify_failed: list[str] = field(default_factory=list)  # snapshot paths whose restored bytes differ
    paths: list[str] | None = None  # --dry-run with list_paths: what would be restored

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["duration"] = round(self.duration, 3)
        if d["paths"] is None:
            del d["paths"]
        return d


class Selector:
    """restic 0.17's restore filter: selected when an include matches (or there are none) and no
    exclude does; a directory is entered when it is selected or an include may match below it."""

    def __init__(self, opts: RestoreOptions) -> None:
        self.inc = [Pattern.parse(p) for p in opts.includes if p]
        self.iinc = [Pattern.parse(p, fold=True) for p in opts.iincludes if p]
        self.exc = [Pattern.parse(p) for p in opts.excludes if p]
        self.iexc = [Pattern.parse(p, fold=True) for p in opts.iexcludes if p]
        self.has_includes = bool(self.inc or self.iinc)
        self.active = self.has_includes or bool(self.exc or self.iexc)
        self.hits: dict[str, bool] = {p.original: False for p in self.inc + self.iinc if not p.negated}

    def select(self, path: str, is_dir: bool) -> tuple[bool, bool]:
        """(selected, a child may be selected) for an absolute path below the restore root."""
        if not self.active:
            return True, is_dir
        comps, low = split_path(path), split_path(path.lower())
        if list_match(self.exc, comps, is_dir) or list_match(self.iexc, low, is_dir):
            return False, False
        if not self.has_includes:
            return True, is_dir
        sel = list_match(self.inc, comps, is_dir) or list_match(self.iinc, low, is_dir)
        if sel:
            for group, c in ((self.inc, comps), (self.iinc, low)):
                for p in group:
                    if not p.negated and not self.hits[p.original] and list_match([p], c, is_dir):
                        self.hits[p.original] = True
        child = is_dir and (sel or any(child_match(p, comps) for p in self.inc if not p.negated)
                            or any(child_match(p, low) for p in self.iinc if not p.negated))
        return sel, child


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
    sized: bool = False         # the file's last byte is written (no ftruncate needed)

    @property
    def target(self) -> str:
        """Where the file lands on disk (what a write error must name)."""
        return f"{self.dir.path}/{os.fsdecode(self.node.name)}"


class Restorer:
    def __init__(self, reader: TreeReader, opts: RestoreOptions, summary: RestoreSummary, progress: Progress) -> None:
        self.reader, self.opts, self.summary, self.progress = reader, opts, summary, progress
        # more threads than cores: fetching a chunk waits on the storage with the GIL released.
        # A chunk's bytes count from its queuing until they are written.
        self.queue: Pipeline[tuple[FileJob, int]] = Pipeline(
            opts.workers or max(DEFAULT_REQUESTS, 2 * (os.cpu_count() or 2)), max_items=opts.max_chunks, max_bytes=opts.budget,
            name="restore")
        self.jobs: dict[int, FileJob] = {}
        self.handles: dict[int, DirHandle] = {}
        self._tmp_tag = secrets.token_hex(8).encode()
        self._tmp_count = 0
        self.owner = opts.owner if opts.owner is not None else os.geteuid() == 0
        self.selector = Selector(opts)
        self.needed: set[str] | None = None  # with includes: the directories that hold selected entries
        self.deletions: list[tuple[list[bytes], bytes, Node | None]] = []  # --delete: (dir, name, dir's node)
        self.written: list[tuple[str, Node]] = []  # --verify: the files this run wrote
        self.root_fd = -1  # the target, for hard links to an entry restored earlier
        # hard-linked inode -> its first restored path, and id() of its FileJob (a file: it may be in flight)
        self.linked: dict[LinkKey, tuple[list[bytes], int | None]] = {}

    def check_cancel(self) -> None:
        """Stop at a safe point (no lock held, nothing half-registered) when asked to."""
        if self.opts.cancel is not None and self.opts.cancel.is_set():
            raise Interrupted()

    # ---- selection ----
    def wanted(self, path: str, node: Node) -> bool:
        sel, child = self.selector.select(path, node.is_dir)
        if not node.is_dir:
            return sel
        return (sel or child) and (self.needed is None or path in self.needed)

    def keep_existing(self, handle: DirHandle, node: Node) -> bool:
        """--overwrite: whether an entry already in the target stays as it is (counted as skipped)."""
        mode = self.opts.overwrite
        if mode == "always":
            return False
        try:
            st = os.stat(node.name, dir_fd=handle.fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if mode == "never":
            keep = True
        elif mode == "if-newer":
            keep = st.st_mtime_ns >= node.mtime_ns
        elif node.kind == "file":
            keep = statmod.S_ISREG(st.st_mode) and st.st_size == node.size and st.st_mtime_ns == node.mtime_ns
        elif node.kind == "symlink":
            keep = statmod.S_ISLNK(st.st_mode) and os.readlink(node.name, dir_fd=handle.fd) == node.target
        else:
            keep = False
        if keep:
            self.summary.skipped += 1
        return keep

    def collect_extra(self, handle: DirHandle, names: set[bytes], parts: list[bytes]) -> None:
        """--delete: entries of this target directory that the snapshot does not have and the
        filters select; removed after the restore succeeded (never our temp files)."""
        for entry in os.listdir(handle.fd):
            name = os.fsencode(entry)
            if name in names or TEMP_NAME.match(name):
                continue
            try:
                st = os.stat(name, dir_fd=handle.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if self.selector.select(_path(parts + [name]), statmod.S_ISDIR(st.st_mode))[0]:
                self.deletions.append((parts, name, handle.node))

    # ---- metadata ----
    def apply_meta(self, fd: int, node: Node, is_dir: bool = False) -> None:
        """Owner, mode, xattrs, times, in that order (see set_xattrs)."""
        if self.owner:
            os.fchown(fd, node.uid, node.gid)
        self.set_xattrs(fd, node, before_mode=True)
        os.fchmod(fd, node.mode)
        self.set_xattrs(fd, node, before_mode=False)
        os.utime(fd, ns=(node.mtime_ns, node.mtime_ns))

    def set_xattrs(self, target: int | bytes, node: Node, before_mode: bool) -> None:
        """Xattrs go after the owner (chown clears security.capability) and, as root, after the
        mode; without owners they go before it, as a read-only mode would refuse user.* ones."""
        if node.xattrs and before_mode != self.owner:
            self.summary.xattrs_skipped += apply_xattrs(target, node.xattrs)

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
        nodes = self.reader.nodes(tree_id)
        for node in nodes:
            self.check_cancel()
            p = parts + [node.name]
            if not self.wanted(_path(p), node):
                continue
            if not node.is_dir and self.keep_existing(handle, node):
                continue
            if node.is_dir:
                child = self.subdir(handle, node)
                try:
                    self.directory(child, node.tree or "", p)
                finally:
                    child.release()
            else:
                self.non_dir(handle, node, p)
        if self.opts.delete:
            self.collect_extra(handle, {n.name for n in nodes}, parts)

    def non_dir(self, handle: DirHandle, node: Node, parts: list[bytes]) -> None:
        """A file, symlink or special entry; a later occurrence of a hard-linked inode becomes a
        link to the first one restored (or, if linking fails, a copy of it)."""
        key = link_key(node)
        if key is not None and key in self.linked and self.link(handle, node, key):
            return
        job: FileJob | None = None
        if node.kind == "file":
            job = self.file(handle, node, _path(parts))
        elif node.kind == "symlink":
            self.symlink(handle, node)
        else:
            self.special(handle, node)
        if key is not None and key not in self.linked:
            self.linked[key] = (parts, id(job) if job is not None else None)

    def link(self, handle: DirHandle, node: Node, key: LinkKey) -> bool:
        """Hard-link `node` to the first restored path of its inode (once that file is complete);
        False when the file system refuses (EXDEV, EMLINK, a target made unreachable...)."""
        parts, job_id = self.linked[key]
        while job_id in self.jobs and self.queue:
            self.write_next()  # its chunks are ahead in the queue: taking them finishes it
            # (an id reused by a newer job only makes this wait for that one too)
        tmp = self._tmp()
        try:
            src = _open_dir(self.root_fd, parts[:-1])
        except OSError:
            return False
        try:
            os.link(parts[-1], tmp, src_dir_fd=src, dst_dir_fd=handle.fd, follow_symlinks=False)
        except OSError:
            return False
        finally:
            os.close(src)
        try:
            os.rename(tmp, node.name, src_dir_fd=handle.fd, dst_dir_fd=handle.fd)
        except BaseException:
            _unlink(tmp, handle.fd)
            raise
        self.summary.hardlinks += 1
        counter = {"file": "files", "symlink": "symlinks"}.get(node.kind, "specials")
        setattr(self.summary, counter, getattr(self.summary, counter) + 1)
        self.progress.add(files=1)
        return True

    def _tmp(self) -> bytes:
        """A fresh temp name: this restore's random tag and a counter (one urandom per restore,
        not per file: it cost ~60 µs a call here); O_EXCL still refuses any clash."""
        self._tmp_count += 1
        return b"%s%s-%d" % (TEMP_PREFIX, self._tmp_tag, self._tmp_count)

    def symlink(self, handle: DirHandle, node: Node) -> None:
        assert node.target is not None
        tmp = self._tmp()
        os.symlink(node.target, tmp, dir_fd=handle.fd)
        self._place(handle, node, tmp, chmod=False)  # a symlink's mode cannot be set on Linux
        self.summary.symlinks += 1

    def _place(self, handle: DirHandle, node: Node, tmp: bytes, chmod: bool) -> None:
        """Owner, then mode (so setuid/setgid bits survive the chown), xattrs, then times of a node
        made under a temp name of ours, never following it; then rename it into place."""
        try:
            if self.owner:
                os.chown(tmp, node.uid, node.gid, dir_fd=handle.fd, follow_symlinks=False)
            self.set_xattrs(path_at(handle.fd, tmp), node, before_mode=True)
            if chmod:
                os.chmod(tmp, node.mode, dir_fd=handle.fd)  # the name is ours: it was created exclusively
            self.set_xattrs(path_at(handle.fd, tmp), node, before_mode=False)
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

    def file(self, handle: DirHandle, node: Node, path: str) -> FileJob:
        """Queue a file's chunk reads and writes (streamed from its list, sizes checked by
        TreeReader.chunks); each chunk's offset is the sum of the sizes before it."""
        chunks: Iterator[Chunk] = self.reader.chunks(node, path, "restoring")
        first = next(chunks, None)  # the list's sizes are checked before anything is created
        tmp = self._tmp()
        self.progress.working_on(path)
        job = FileJob(handle, node, -1, tmp, path)
        self.jobs[id(job)] = job  # before the open: abandon() removes the name even if we stop here
        handle.refs += 1
        job.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=handle.fd)
        if first is None:
            if node.data:
                _write_all(job.fd, node.data, 0, job.target)
                self.progress.add(nbytes=len(node.data))
                job.sized = len(node.data) == node.size
            job.listed = True
            self.finish(job)
            return job
        window: list[tuple[Chunk, int]] = []
        window_bytes = 0
        c: Chunk | None = first
        while c is not None:
            window.append((c, job.offset))
            job.offset += c.size
            window_bytes += c.size
            if window_bytes >= WINDOW_BYTES:
                self._queue_window(job, window)
                window, window_bytes = [], 0
            c = next(chunks, None)
        if window:
            self._queue_window(job, window)
        job.listed = True
        if job.remaining == 0:  # every queued chunk was written while we listed the rest
            self.finish(job)
        return job

    def _queue_window(self, job: FileJob, window: list[tuple[Chunk, int]]) -> None:
        """Queue a stretch of a file's chunks (and their offsets in it) as ranged reads: located
        together, then by pack, in pack order, nearby ones (gaps up to RUN_GAP, spans up to
        RUN_BYTES) in one read (§12.5: one GET, not one per chunk; parallel compression appends a
        file's chunks nearly, not exactly, in order). Runs are queued, and read, in file order,
        so an error names the first bad chunk of the file, as a chunk-by-chunk read would."""
        locs = self.reader.located([c for c, _ in window])
        runs: list[list[Piece]] = []
        by_pack: dict[str, list[Piece]] = {}
        for piece in ((c, locs.get(c.id), offset) for c, offset in window):
            if piece[1] is None:
                runs.append([piece])  # not located: read alone, which says what is wrong
            else:
                by_pack.setdefault(piece[1].pack, []).append(piece)
        for pieces in by_pack.values():
            pieces.sort(key=lambda p: p[1].offset)  # type: ignore[union-attr]
            run: list[Piece] = []
            for piece in pieces:
                loc = piece[1]
                assert loc is not None
                if run:
                    first, last = run[0][1], run[-1][1]
                    assert first is not None and last is not None
                    if (loc.offset - (last.offset + last.length) > RUN_GAP
                            or loc.offset + loc.length - first.offset > RUN_BYTES):
                        runs.append(run)
                        run = []
                run.append(piece)
            if run:
                runs.append(run)
        for run in runs:
            run.sort(key=lambda p: p[2])
        for run in sorted(runs, key=lambda r: r[0][2]):
            self._queue(job, run)

    def _queue(self, job: FileJob, run: list[Piece]) -> None:
        cost = sum(c.size for c, _, _ in run)
        self.check_cancel()
        while self.queue and (self.queue.full(cost) or len(self.jobs) > self.opts.max_open_files):
            self.write_next()
        self.queue.submit(self.fetch_write, job, run, cost=cost)
        job.remaining += 1

    def fetch_write(self, job: FileJob, run: list[Piece]) -> tuple[FileJob, int]:
        """On the pool: a run of chunks, verified, each written at its offset in the file (the
        fd stays open until the walking thread has taken this result); an error names the file."""
        try:
            datas = self.reader.read_chunks([(c, loc) for c, loc, _ in run])
        except (BlobCorrupt, BlobMissing) as exc:
            raise in_file(exc, f"restoring {job.path}") from None
        total = 0
        for (_, _, offset), data in zip(run, datas):
            if data[:1] == b"\0" and data[-1:] == b"\0" and data.count(0) == len(data):
                pass  # a hole: keep sparse files sparse (ftruncate sets the size)
            elif self.opts.sparse:
                _write_sparse(job.fd, data, offset, job.target)
            else:
                _write_all(job.fd, data, offset, job.target)
                if offset + len(data) == job.node.size:
                    job.sized = True
            total += len(data)
        return job, total

    def write_next(self) -> None:
        """Take the oldest chunk result (its bytes are on disk); finish its file if it was the last."""
        self.check_cancel()
        job, size = self.queue.take()
        self.progress.add(nbytes=size)
        job.remaining -= 1
        if job.remaining == 0 and job.listed:
            self.finish(job)

    def finish(self, job: FileJob) -> None:
        """Size, metadata, rename into place. The job stays in self.jobs until the rename, so an
        interrupt anywhere before it still finds (and removes) the temp file."""
        if job.node.size and not job.sized:  # a new file: already its size if its last byte was written
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
        if self.opts.verify:
            self.written.append((job.path, job.node))
        self.summary.files += 1
        self.summary.bytes += job.node.size
        self.progress.add(files=1)
        job.dir.release()

    def delete_extra(self, root_fd: int) -> None:
        """--delete, after a successful restore: remove what collect_extra found, through
        O_NOFOLLOW directory fds (never above the target); the parent keeps its snapshot mtime."""
        for parts, name, dnode in self.deletions:
            fd = _open_dir(root_fd, parts)
            try:
                if statmod.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    shutil.rmtree(name, dir_fd=fd)  # fd-based: does not follow symlinks inside
                else:
                    os.unlink(name, dir_fd=fd)
                self.summary.deleted += 1
                if dnode is not None:
                    os.utime(fd, ns=(dnode.mtime_ns, dnode.mtime_ns))
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)

    def verify_written(self, root_fd: int) -> None:
        """--verify: read every file this run wrote back and compare it with its chunk ids."""
        for path, node in self.written:
            self.check_cancel()
            parts = [os.fsencode(x) for x in path.split("/") if x]
            if self.same_content(root_fd, parts, node, path):
                self.summary.verified += 1
            else:
                self.summary.verify_failed.append(path)

    def same_content(self, root_fd: int, parts: list[bytes], node: Node, path: str) -> bool:
        try:
            dir_fd = _open_dir(root_fd, parts[:-1])
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            return False
        with os.fdopen(fd, "rb") as f:
            if node.data is not None:
                return f.read(len(node.data) + 1) == node.data
            for c in self.reader.chunks(node, path, "verifying"):
                data = f.read(c.size)
                if len(data) != c.size or self.reader.snap.repo.store.blob_id(BlobType.CHUNK, data) != c.id:
                    return False
            return f.read(1) == b""

    def drain(self) -> None:
        while self.queue:
            self.write_next()

    def abandon(self) -> None:
        """After an error or an interrupt: remove every temp file we created, then stop the pool.
        Names first (a worker still writing to an unlinked file harms nothing, and a second
        Ctrl-C while the pool drains must not leave them behind); fds only once no worker runs,
        so none can write through an fd number that was closed and reused."""
        self.queue.cancel()
        for job in list(self.jobs.values()):
            _unlink(job.tmp, job.dir.fd)
        try:
            self.queue.close()
        finally:
            for job in list(self.jobs.values()):
                if job.fd >= 0:
                    try:
                        os.close(job.fd)
                    except OSError:
                        pass
                    job.fd = -1
            self.jobs.clear()
        for handle in list(self.handles.values()):
            try:
                handle.close()
            except OSError:
                pass


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


def _write_sparse(fd: int, data: bytes, offset: int, where: str) -> None:
    """Write only the file-aligned SPARSE_BLOCK runs of `data` that hold a non-zero byte; the
    rest stay holes (the temp file is new, so a hole reads as zeros)."""
    pos, n = 0, len(data)
    run = -1  # start of the pending run of non-zero blocks
    while pos < n:
        end = min(n, pos + SPARSE_BLOCK - (offset + pos) % SPARSE_BLOCK)
        if data[pos:end] == ZERO_BLOCK[: end - pos]:
            if run >= 0:
                _write_all(fd, data[run:pos], offset + run, where)
                run = -1
        elif run < 0:
            run = pos
        pos = end
    if run >= 0:
        _write_all(fd, data[run:], offset + run, where)


def _path(parts: list[bytes]) -> str:
    """A path below the restore root as the filters see it: '/a/b'."""
    return "/" + b"/".join(parts).decode("utf-8", "surrogateescape")


def _open_dir(root_fd: int, parts: list[bytes]) -> int:
    """A new fd for the directory `parts` below root_fd, never through a symlink."""
    fd = os.dup(root_fd)
    for part in parts:
        try:
            nfd = os.open(part, O_DIR, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


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


def _count_extras(delete_in: str, selector: Selector, nodes: list[Node], parts: list[bytes],
                  counted: RestoreSummary) -> None:
    """--dry-run --delete: count (and list) what --delete would remove from one target directory."""
    try:
        root = os.open(delete_in, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # as the restore opens it
    except OSError:
        return
    try:
        fd = _open_dir(root, parts)
    except OSError:
        return
    finally:
        os.close(root)
    try:
        names = {n.name for n in nodes}
        for entry in os.listdir(fd):
            name = os.fsencode(entry)
            if name in names or TEMP_NAME.match(name):
                continue
            is_dir = statmod.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
            if selector.select(_path(parts + [name]), is_dir)[0]:
                counted.deleted += 1
                if counted.paths is not None:
                    counted.paths.append("- " + _path(parts + [name]))
    finally:
        os.close(fd)


def plan(reader: TreeReader, tree_id: str, selector: Selector, counted: RestoreSummary,
         delete_in: str | None = None) -> set[str]:
    """Walk the snapshot's trees (no chunk is read) as the restore would: count what it would
    restore into `counted` (and list it, if counted.paths is a list), mark the includes that
    match; return the directories that are selected or hold something selected. With
    `delete_in` (a target, for --dry-run --delete) also count what --delete would remove there."""
    needed: set[str] = set()

    def walk(tid: str, parts: list[bytes], entered: bool = True) -> bool:
        if len(parts) > MAX_DEPTH:
            raise BlobCorrupt(tid, f"directory nesting deeper than {MAX_DEPTH} levels", reader.generation)
        found = False
        nodes = reader.nodes(tid)
        for node in nodes:
            p = parts + [node.name]
            path = _path(p)
            sel, child = selector.select(path, node.is_dir)
            mark = len(counted.paths) if counted.paths is not None else 0
            if counted.paths is not None:
                counted.paths.append(path)
            below = bool(node.is_dir and (sel or child) and walk(node.tree or "", p, sel))
            if not (sel or below):
                if counted.paths is not None:
                    del counted.paths[mark:]
                continue
            found = True
            if node.is_dir:
                needed.add(path)
                counted.dirs += 1
            elif node.kind == "file":
                counted.files += 1
                counted.bytes += node.size
            elif node.kind == "symlink":
                counted.symlinks += 1
            else:
                counted.specials += 1
        if delete_in is not None and (found or entered):  # the directories the restore itself enters
            _count_extras(delete_in, selector, nodes, parts, counted)
        return found

    walk(tree_id, [])
    return needed


def restore_root(reader: TreeReader, tree: str, subpath: str) -> str:
    """The tree restored into the target: the snapshot's root, or (SNAPSHOT:subpath) that
    directory's, whose content then lands directly in the target, as in restic."""
    if subpath.strip("/") in ("", "."):
        return tree
    node = reader.lookup(tree, subpath)
    if not node.is_dir:
        raise UsageError(f"{subpath!r} is not a directory in the snapshot (SNAPSHOT:subpath takes a directory; "
                         "use --include for a file)")
    return node.tree or ""


def restore_snapshot(snap: Reader, info: SnapshotInfo, opts: RestoreOptions) -> RestoreSummary:
    """Restore through an already pinned Reader. Includes that match nothing are NotFound
    before anything is written; --dry-run stops after counting."""
    if opts.overwrite not in OVERWRITE_MODES:
        raise UsageError(f"invalid --overwrite {opts.overwrite!r}: use one of {', '.join(OVERWRITE_MODES)}")
    started = time.monotonic()
    summary = RestoreSummary()
    reader = TreeReader(snap)
    snap.preload_locations()
    tree = restore_root(reader, info.tree, opts.subpath)
    job = Restorer(reader, opts, summary, Progress("restore", False))
    total = info.size if tree == info.tree else None
    total_files = info.summary.get("total_files") if tree == info.tree else None
    if job.selector.has_includes or opts.dry_run:
        counted = RestoreSummary(dry_run=True, paths=[] if opts.list_paths else None)
        needed = plan(reader, tree, job.selector, counted, opts.target if opts.dry_run and opts.delete else None)
        missing = [p for p, hit in job.selector.hits.items() if not hit]
        if missing:
            raise NotFound(f"include pattern {missing[0]!r} matches nothing in snapshot {info.id[:8]}; "
                           "nothing restored")
        if opts.dry_run:
            counted.duration = time.monotonic() - started
            return counted
        job.needed = needed if job.selector.has_includes else None
        total, total_files = counted.bytes, counted.files
    job.progress = progress = Progress("restore", opts.progress, total_bytes=total or None, total_files=total_files)
    os.makedirs(opts.target, exist_ok=True)
    ok = False
    try:
        root_fd = os.open(opts.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        root = DirHandle(root_fd, None, None, job, opts.target.rstrip("/") or "/")
        job.root_fd = root_fd
        remove_stale_temps(root_fd)
        job.directory(root, tree, [])
        job.drain()
        ok = True
    finally:
        if not ok:
            job.abandon()
        else:
            job.queue.close(cancel=False)
            root.fd = os.dup(root_fd)  # kept for --delete and --verify; release() closes the dup
            root.release()
        progress.done()
    try:
        job.delete_extra(root_fd)
        job.verify_written(root_fd)
    finally:
        os.close(root_fd)
    summary.duration = time.monotonic() - started
    return summary


def run_restore(repo: Repository, spec: str, opts: RestoreOptions) -> tuple[SnapshotInfo, RestoreSummary]:
    """Restore SPEC (an id, 'latest', or either with ':subpath')."""
    spec, sep, sub = spec.partition(":")
    if sep:
        opts.subpath = sub
    with repo.reader("restore") as snap:
        info = resolve(snap, spec)
        return info, restore_snapshot(snap, info, opts)
