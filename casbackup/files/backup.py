"""Back up paths or a stream into one snapshot entry (spec/files.md §4-§5).

Pipeline: the calling thread walks; `read_concurrency` reader threads read files (`readinto`
reused segments, chunker.py) and cut chunks (pyfastcdc releases the GIL); the one work pipeline
(transfer.Pipeline) hashes, compresses and uploads the chunks, handed over as memoryviews (no
copy), on a pool (blake3 and zstd release the GIL too). A byte budget caps what is in flight, so
memory stays flat whatever the input. Unchanged files (same size, mtime, ctime and inode as in
the parent snapshot) are not read at all. `--dry-run` runs the same walk against a `DryRun`
stand-in for the transaction: everything is read, hashed and compressed, nothing is written.
"""
from __future__ import annotations

import getpass
import os
import socket
import stat as statmod
import threading
import time
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Callable, Iterable, Protocol, Union

from ..chunklist import write_file
from ..codec import BlobType, Ref, pack_structured
from ..errors import UsageError
from ..repository import Reader, Repository
from ..packs import PACKED_TYPES
from ..store import PutResult
from ..transfer import DEFAULT_BYTES, DEFAULT_REQUESTS, Pipeline
from .chunker import Chunker
from .fidelity import capture
from .patterns import PatternList
from .progress import Display, Progress
from .reader import TreeReader
from .snapshots import NAMESPACE, SnapshotInfo, list_snapshots, new_id, resolve
from .sources import CommandSource
from .tree import (DEVICES, INLINE_CHUNKS, INLINE_DATA_MAX, INLINE_TREE_BUDGET, MAX_DEPTH, SPECIALS, Chunk, Node,
                   mode_kind, write_tree)

MAX_RECORDED_ERRORS = 1000
READ_CONCURRENCY = 2  # files read at once, as restic's --read-concurrency default
# What reading a file gives: its content (a small file, read whole on the upload pool), the
# uploads of its chunks (a larger file, read on a reader thread), or None when it was dropped.
ReadResult = Union[bytes, list[Future[Chunk]], None]
Work = Future[ReadResult]


@dataclass
class Summary:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    bytes_new: int = 0        # the sizes of the new and changed files (as_dict adds the unmodified ones)
    bytes_changed: int = 0
    dirs: int = 0
    symlinks: int = 0
    specials: int = 0  # FIFOs, sockets and devices (stored as entries)
    total_bytes: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    blobs_added: int = 0
    chunks_reused: int = 0
    error_count: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    duration: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def error(self, path: str, message: str) -> None:
        with self._lock:
            self.error_count += 1
            if len(self.errors) < MAX_RECORDED_ERRORS:
                self.errors.append({"path": path, "error": message})

    def add(self, **counts: int) -> None:
        """Bump counters; the walk and the pool threads both report."""
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        d["total_files"] = self.files_new + self.files_changed + self.files_unmodified
        d["bytes_unmodified"] = self.total_bytes - self.bytes_new - self.bytes_changed
        d["duration"] = round(self.duration, 3)
        return d


class Staging(Protocol):
    """What a backup stages its blobs through: a Transaction, or a DryRun that writes nothing."""

    repo: Repository
    base: Reader

    def put_blob(self, blob_type: BlobType, payload: bytes) -> PutResult: ...
    def put_structured(self, blob_type: BlobType, refs: list[Ref], body: Any) -> PutResult: ...
    def use(self, refs: Iterable[Ref]) -> None: ...
    def is_stored(self, ref: Ref) -> bool: ...


class DryRun:
    """The Transaction's stand-in for `backup --dry-run`: a blob is encoded (hashed and
    compressed, to count the bytes it would store) and checked against the repository, but
    never written; there is nothing to commit."""

    def __init__(self, repo: Repository, base: Reader) -> None:
        self.repo, self.base = repo, base
        self._planned: set[str] = set()
        self._lock = threading.Lock()

    def put_blob(self, blob_type: BlobType, payload: bytes) -> PutResult:
        blob = self.repo.store.encode(blob_type, payload)
        with self._lock:
            first = blob.id not in self._planned
            self._planned.add(blob.id)
        ref = Ref(blob_type, blob.id)
        created = first and not self.is_stored(ref)
        return PutResult(ref, created, len(blob.stored))

    def is_stored(self, ref: Ref) -> bool:
        """As a commit would judge it: the pinned base locates it (packed) or it exists (loose)."""
        if ref.type in PACKED_TYPES:
            return self.repo.locate(self.base.generation.id, ref.id) is not None
        return self.repo.store.exists(ref.id)

    def put_structured(self, blob_type: BlobType, refs: list[Ref], body: Any) -> PutResult:
        return self.put_blob(blob_type, pack_structured(refs, body, blob_type))

    def use(self, refs: Iterable[Ref]) -> None:
        pass  # nothing is committed, so nothing needs protecting from gc


class Uploader:
    """Hash, dedup, compress and store chunks, and run the walk's other work (TREE stores,
    small-file reads), on the one pipeline; the walk reads results through their Futures.
    The walk and the reader threads all submit, so submitting takes a lock."""

    def __init__(self, txn: Staging, summary: Summary, workers: int, budget: int) -> None:
        self.txn = txn
        self.summary = summary
        self.pipe: Pipeline[Any] = Pipeline(workers, max_bytes=budget, name="upload")
        self.known: set[str] = set()
        self.failure: Exception | None = None  # the first error of the pipeline's work
        self._lock = threading.Lock()

    def submit(self, data: bytes | memoryview) -> Future[Chunk]:
        return self.run(len(data), self._store, data)

    def run(self, cost: int, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run fn on the pool once `cost` bytes fit in the budget: older work is waited for
        (oldest first; an error in it stops the backup here) until they do."""
        with self._lock:
            if self.failure is not None:  # seen by another thread (a reader): stop the walk now too
                raise self.failure
            try:
                self.pipe.make_room(cost)
            except Exception as exc:
                self.failure = exc
                raise
            return self.pipe.submit(fn, *args, cost=cost)

    def cancel(self) -> None:
        """Drop the work not yet started (a reader waiting on it is released)."""
        with self._lock:
            self.pipe.cancel()

    def _store(self, data: bytes) -> Chunk:
        cid = self.txn.repo.store.blob_id(BlobType.CHUNK, data)
        if cid in self.known:
            reused = True
        elif self.txn.is_stored(Ref(BlobType.CHUNK, cid)):
            reused = True  # an earlier (maybe interrupted) run uploaded it: the commit's rescue rule covers it
        else:
            res = self.txn.put_blob(BlobType.CHUNK, data)  # touched: the commit's GC rules cover it
            reused = not res.created
            if res.created:
                self.summary.add(bytes_added=res.stored_size, blobs_added=1)
        if reused:
            self.summary.add(chunks_reused=1)
        self.known.add(cid)
        return Chunk(cid, len(data))

    def close(self, cancel: bool = False) -> None:
        self.pipe.close(cancel=cancel)


@dataclass
class BackupOptions:
    paths: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)     # restic patterns (files/patterns.py)
    iexcludes: list[str] = field(default_factory=list)    # the same, case-insensitive
    exclude_if_present: list[str] = field(default_factory=list)  # NAME or NAME:HEADER (restic)
    exclude_larger_than: int | None = None
    skip_paths: list[str] = field(default_factory=list)  # exact absolute paths (the repository itself)
    one_file_system: bool = False  # a mount point is stored as an empty directory, not entered
    allow_empty: bool = False      # an empty --stdin is an error unless this is set
    stdin: BinaryIO | None = None
    stdin_name: str = "stdin"
    host: str | None = None
    force: bool = False             # ignore the files cache and read everything
    dry_run: bool = False           # read, hash and count everything; write and commit nothing
    parent: str | None = None       # the files cache source (an ID or 'latest'), not the automatic one
    time: float | None = None       # the snapshot's time (Unix seconds); default now
    read_concurrency: int = READ_CONCURRENCY
    stdin_command: list[str] | None = None  # back up this command's standard output, as --stdin
    workers: int | None = None
    budget: int | None = None
    progress: bool | Display = False
    message: str = "backup"


class Backup:
    def __init__(self, repo: Repository, txn: Staging, opts: BackupOptions, summary: Summary,
                 source: CommandSource | None = None) -> None:
        cfg = repo.config
        self.repo, self.txn, self.opts, self.summary, self.source = repo, txn, opts, summary, source
        self.chunker = Chunker(cfg.chunk_min, cfg.chunk_avg, cfg.chunk_max)
        # more threads than cores: blob writes wait on fsync (~2 ms each here) with the GIL released
        workers = opts.workers or max(DEFAULT_REQUESTS, 2 * (os.cpu_count() or 2))
        budget = opts.budget or max(DEFAULT_BYTES, 4 * cfg.chunk_max)  # bytes bound memory, not threads
        self.uploader = Uploader(txn, summary, workers, budget)
        self.readers = ThreadPoolExecutor(opts.read_concurrency, thread_name_prefix="read")
        self.segments = self.chunker.pool(opts.read_concurrency, budget)
        self.stopping = threading.Event()  # set on abort: the readers stop at their next chunk
        self.parent_reader = TreeReader(txn.base)  # the pinned base keeps cache hits alive until commit
        self.progress = Progress("backup", opts.progress, errors=lambda: summary.error_count)
        self.inline_left = INLINE_TREE_BUDGET  # reset per directory: its TREE holds the inline bytes
        self.tree_futures: dict[int, Future[str]] = {}
        self.patterns = PatternList(opts.excludes)
        self.ipatterns = PatternList(opts.iexcludes, fold=True)
        self.tags_present = [_tag_spec(t) for t in opts.exclude_if_present]
        self.tag_cache: dict[str, str | None] = {}
        self.skip_paths = {os.path.normpath(p) for p in opts.skip_paths}
        self.dev: int | None = None  # the device of the top path being walked (--one-file-system)

    # ---- helpers ----
    def excluded(self, path: str, st: os.stat_result) -> bool:
        """restic's reject rules, any of which excludes the entry (a directory is not entered)."""
        if path in self.skip_paths:
            return True
        is_dir = statmod.S_ISDIR(st.st_mode)
        if self.patterns.matches(path, is_dir) or self.ipatterns.matches(path, is_dir):
            return True
        limit = self.opts.exclude_larger_than
        if limit is not None and statmod.S_ISREG(st.st_mode) and st.st_size > limit:
            return True
        return bool(self.tags_present) and self.tagged_dir(path)

    def tagged_dir(self, path: str) -> bool:
        """As restic's --exclude-if-present: everything in a directory holding the tag file is
        left out except the tag file itself (the directory stays, as a marker)."""
        parent, name = os.path.split(path)
        cached = self.tag_cache.get(parent)
        if cached is None:
            cached = self.tag_cache[parent] = _has_tag(parent, self.tags_present)
        return cached is not None and name != cached

    def off_device(self, st: os.stat_result) -> bool:
        return self.opts.one_file_system and self.dev is not None and st.st_dev != self.dev

    def parent_nodes(self, tree_id: str | None) -> dict[bytes, Node]:
        if tree_id is None or self.opts.force:
            return {}
        return {n.name: n for n in self.parent_reader.nodes(tree_id)}

    # ---- TREE and FILE blobs ----
    def put_tree(self, node: Node, nodes: list[Node]) -> None:
        """Store a directory's TREE on the pool; its ID is collected by resolve() when the parent
        directory is built (usually long done by then), so the walk never waits on an fsync."""
        self.resolve(nodes)
        cost = 4096 + sum(len(n.data or b"") for n in nodes)
        self.tree_futures[id(node)] = self.uploader.run(cost, self._store_tree, list(nodes))

    def _store_tree(self, nodes: list[Node]) -> str:
        """One TREE, or TREE parts plus an index TREE for a directory too big for one payload."""
        return write_tree(self._put_structured, nodes).id

    def _put_structured(self, blob_type: BlobType, refs: list[Ref], body: Any) -> Any:
        res = self.txn.put_structured(blob_type, refs, body)
        self._count(res)
        return res

    def resolve(self, nodes: list[Node]) -> None:
        for n in nodes:
            if n.is_dir and n.tree is None:
                n.tree = self.tree_futures.pop(id(n)).result()

    def tree_id(self, node: Node) -> str:
        self.resolve([node])
        assert node.tree is not None
        return node.tree

    def _count(self, res: Any) -> None:
        if res.created:
            self.summary.add(bytes_added=res.stored_size, blobs_added=1)

    def _chunks_done(self, node: Node, futures: list[Future[Chunk]]) -> None:
        chunks = [f.result() for f in futures]
        self.txn.use(c.ref for c in chunks)
        if len(chunks) > INLINE_CHUNKS:
            ref, _ = write_file(self._put_structured, chunks)  # FILE parts under an index when long
            node.file, node.chunks = ref.id, None
        else:
            node.chunks = chunks

    def finish_file(self, node: Node, work: Work, changed: bool = False) -> bool:
        """Complete a file node once its reads and uploads are done; False if it was dropped."""
        return self._finish(node, work.result(), changed)

    def _finish(self, node: Node, result: ReadResult, changed: bool = False) -> bool:
        if result is None:
            return False
        if isinstance(result, bytes):  # a small file, read whole
            node.size = len(result)
            if len(result) <= INLINE_DATA_MAX:
                node.data = result
            else:  # it grew past the inline limit after we looked
                self._chunks_done(node, [self.uploader.submit(c) for c in self.chunker.cut(result)])
        else:
            self._chunks_done(node, result)
        if changed:
            self.summary.add(files_changed=1, bytes_changed=node.size, total_bytes=node.size)
        else:
            self.summary.add(files_new=1, bytes_new=node.size, total_bytes=node.size)
        self.progress.add(files=1)
        return True

    # ---- streams ----
    def read_stream(self, stream: IO[bytes]) -> tuple[list[Future[Chunk]], int]:
        """Cut and submit a stream's chunks as views of reused segments (no copy); each
        segment is held by the uploads reading it."""
        futures, total = [], 0
        for seg, piece in self.chunker.views(stream, self.segments):
            if self.stopping.is_set():
                raise CancelledError("the backup is stopping")
            total += len(piece)
            fut = self.uploader.submit(piece)
            seg.hold(fut)
            futures.append(fut)
            self.progress.add(nbytes=len(piece))
        self.summary.add(bytes_read=total)
        return futures, total

    def close(self, cancel: bool) -> None:
        """Stop the readers and the pipeline; on cancel, queued reads and uploads never start
        and a reader in the middle of a file stops at its next chunk."""
        if cancel:
            self.stopping.set()
            self.readers.shutdown(wait=False, cancel_futures=True)
            self.uploader.cancel()
        self.readers.shutdown(wait=True)
        self.uploader.close(cancel=cancel)

    def stdin_tree(self) -> str:
        name = self.opts.stdin_name
        if not name or "/" in name or name in (".", "..") or "\x00" in name:
            raise UsageError(f"invalid --stdin-name {name!r}: it must be a plain file name")
        stream = self.source.stream if self.source is not None else self.opts.stdin
        assert stream is not None
        futures, size = self.read_stream(stream)
        if self.source is not None:
            self.source.finish()  # a command that failed commits nothing, whatever it printed
        if size == 0 and not self.opts.allow_empty:
            # restic refuses this too: a failed dump piped in must not commit an empty "backup"
            raise UsageError("standard input was empty; nothing committed (--allow-empty stores an empty file)")
        now = time.time_ns()
        node = Node(name.encode(), "file", mode=0o644, mtime_ns=now, uid=os.getuid(), gid=os.getgid(), size=size,
                    ctime_ns=now)
        self._finish(node, futures)
        root = Node(b"", "dir")
        self.put_tree(root, [node])
        return self.tree_id(root)

    # ---- the file system ----
    def entry(self, path: str, name: bytes, parent: Node | None, pending: list[tuple[Node, Work, bool]],
              subdirs: list[tuple[Node, str, Node | None]]) -> Node | None:
        """Stat one entry and start its work; returns its node, or None when skipped."""
        try:
            st = os.lstat(path)
        except OSError as exc:
            self.summary.error(path, exc.strerror or str(exc))
            return None
        if self.excluded(path, st):
            return None
        kind = mode_kind(st.st_mode)
        if self.off_device(st) and kind != "dir":
            return None  # a file bind-mounted from another file system
        if kind is None:
            self.summary.error(path, "skipped: a file type casbackup does not know")
            return None
        node = Node(name, kind, mode=statmod.S_IMODE(st.st_mode), mtime_ns=st.st_mtime_ns, uid=st.st_uid,
                    gid=st.st_gid)
        capture(node, path, st, self.summary.error)  # xattrs, ACLs, hard-link identity (files/fidelity.py)
        if kind == "symlink":
            try:
                node.target = os.readlink(os.fsencode(path))
            except OSError as exc:
                self.summary.error(path, exc.strerror or str(exc))
                return None
            self.summary.add(symlinks=1)
            return node
        if kind in SPECIALS:
            node.rdev = st.st_rdev if kind in DEVICES else 0
            self.summary.add(specials=1)
            return node
        if kind == "dir" and self.off_device(st):
            self.put_tree(node, [])  # a mount point: kept, as restic does, but not entered
            self.summary.add(dirs=1)
            return node
        if kind == "dir":
            subdirs.append((node, path, parent if parent is not None and parent.is_dir else None))
            return node
        node.size, node.ino, node.ctime_ns = st.st_size, st.st_ino, st.st_ctime_ns
        if (parent is not None and parent.kind == "file" and parent.size == st.st_size
                and parent.mtime_ns == st.st_mtime_ns and parent.ctime_ns == st.st_ctime_ns
                and parent.ino == st.st_ino):
            node.chunks, node.file, node.data = parent.chunks, parent.file, parent.data
            if node.data is not None:
                self.inline_left -= node.size
            self.txn.use(node.refs())
            self.summary.add(files_unmodified=1, total_bytes=node.size)
            self.progress.add(files=1, nbytes=node.size)
            return node
        changed = parent is not None and parent.kind == "file"
        if st.st_size <= INLINE_DATA_MAX and st.st_size <= self.inline_left:
            self.inline_left -= st.st_size
            work: Work | None = self.uploader.run(max(st.st_size, 4096), self.read_small, path, st)
        else:
            work = self.read_file(path, st, node)
        if work is None:
            return None
        self.progress.item("modified" if changed else "new", path)
        pending.append((node, work, changed))
        return node

    def read_small(self, path: str, st: os.stat_result) -> bytes | None:
        """Read a small file whole, on the pool (many small reads overlap their disk waits)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self.summary.error(path, exc.strerror or str(exc))
            return None
        try:
            st1 = os.fstat(fd)
            if not statmod.S_ISREG(st1.st_mode) or st1.st_ino != st.st_ino:
                self.summary.error(path, "replaced by something else during the backup; skipped")
                return None
            parts = []
            while True:
                block = os.read(fd, max(st.st_size + 1, 65536))
                if not block:
                    break
                parts.append(block)
            st2 = os.fstat(fd)
        except OSError as exc:
            self.summary.error(path, f"read failed: {exc.strerror or exc}")
            return None
        finally:
            os.close(fd)
        data = b"".join(parts)
        self.summary.add(bytes_read=len(data))
        self.progress.add(nbytes=len(data))
        if st2.st_mtime_ns != st.st_mtime_ns or len(data) != st.st_size:
            self.summary.error(path, "changed while it was read; the snapshot holds what was read "
                                     "(the next backup reads it again)")
        return data

    def read_file(self, path: str, st: os.stat_result, node: Node) -> Work | None:
        """Read and cut a file on a reader thread (--read-concurrency of them at once)."""
        return self.readers.submit(self._read_file, path, st, node)

    def _read_file(self, path: str, st: os.stat_result, node: Node) -> list[Future[Chunk]] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self.summary.error(path, exc.strerror or str(exc))
            return None
        with os.fdopen(fd, "rb", buffering=0) as f:
            st1 = os.fstat(fd)
            if not statmod.S_ISREG(st1.st_mode) or st1.st_ino != st.st_ino:
                self.summary.error(path, "replaced by something else during the backup; skipped")
                return None
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except (OSError, AttributeError):
                pass
            try:
                futures, size = self.read_stream(f)  # type: ignore[arg-type]
            except OSError as exc:
                self.summary.error(path, f"read failed: {exc.strerror or exc}")
                return None
            st2 = os.fstat(fd)
        node.size = size
        if st2.st_mtime_ns != st.st_mtime_ns or st2.st_size != st.st_size or size != st.st_size:
            self.summary.error(path, "changed while it was read; the snapshot holds what was read "
                                     "(the next backup reads it again)")
        return futures

    def finish_all(self, nodes: list[Node], pending: list[tuple[Node, Work, bool]]) -> list[Node]:
        dropped = {id(n) for n, work, changed in pending if not self.finish_file(n, work, changed)}
        return [n for n in nodes if id(n) not in dropped] if dropped else nodes

    def directory(self, path: str, node: Node, parent: Node | None) -> None:
        """Back up a directory's content: start its files (reads and uploads run on the pool
        while the walk goes on into the subdirectories), then finish them and store its TREE."""
        if path.count("/") >= MAX_DEPTH:  # restore and ls refuse deeper TREEs
            self.summary.error(path, f"nested deeper than {MAX_DEPTH} levels; its content is left out")
            self.put_tree(node, [])
            return
        try:
            names = sorted(os.listdir(os.fsencode(path)))
        except OSError as exc:
            self.summary.error(path, f"cannot list directory: {exc.strerror or exc}")
            names = []
        olds = self.parent_nodes(parent.tree if parent is not None and parent.is_dir else None)
        self.inline_left = INLINE_TREE_BUDGET
        pending: list[tuple[Node, Work, bool]] = []
        subdirs: list[tuple[Node, str, Node | None]] = []
        nodes: list[Node] = []
        for name in names:
            child = os.path.join(path, os.fsdecode(name))
            n = self.entry(child, name, olds.get(name), pending, subdirs)
            if n is not None:
                nodes.append(n)
        for sub, sub_path, sub_parent in subdirs:
            self.directory(sub_path, sub, sub_parent)
        nodes = self.finish_all(nodes, pending)
        self.summary.add(dirs=1)
        self.put_tree(node, nodes)

    def top(self, path: str, name: bytes, parent: Node | None) -> Node | None:
        """A path given on the command line (its own stat, never followed)."""
        pending: list[tuple[Node, Work, bool]] = []
        subdirs: list[tuple[Node, str, Node | None]] = []
        self.inline_left = INLINE_TREE_BUDGET
        try:
            self.dev = os.lstat(path).st_dev
        except OSError:
            self.dev = None  # entry() reports the error
        n = self.entry(path, name, parent, pending, subdirs)
        for sub, sub_path, sub_parent in subdirs:
            self.directory(sub_path, sub, sub_parent)
        kept = self.finish_all([n] if n is not None else [], pending)
        return kept[0] if kept else None

    def paths_tree(self, paths: list[str], parent_root: str | None) -> str:
        """The root TREE mirrors absolute paths: /a/b/c is stored as a -> b -> c, with the real
        metadata of the intermediate directories, so several paths never collide."""
        trie: dict[str | None, Any] = {}
        for p in paths:
            t = trie
            for part in [x for x in p.split("/") if x]:
                if t.get(None):
                    break  # an ancestor is backed up whole already
                t = t.setdefault(part, {})
            else:
                t.clear()
                t[None] = True
        root = Node(b"", "dir")
        if trie.get(None):  # "/" itself
            self.dev = os.lstat("/").st_dev
            self.directory("/", root, Node(b"", "dir", tree=parent_root) if parent_root else None)
        else:
            self._trie_tree(root, "/", trie, parent_root)
        return self.tree_id(root)

    def _trie_tree(self, node: Node, path: str, trie: dict[str | None, Any], parent_tree: str | None) -> None:
        olds = self.parent_nodes(parent_tree)
        nodes = []
        for part in sorted(k for k in trie if k is not None):
            child = os.path.join(path, part)
            name = os.fsencode(part)
            old = olds.get(name)
            if trie[part].get(None):
                n = self.top(child, name, old)
                if n is not None:
                    nodes.append(n)
                continue
            try:
                st = os.lstat(child)
            except OSError as exc:
                self.summary.error(child, exc.strerror or str(exc))
                continue
            n = Node(name, "dir", mode=statmod.S_IMODE(st.st_mode), mtime_ns=st.st_mtime_ns, uid=st.st_uid,
                     gid=st.st_gid)
            self._trie_tree(n, child, trie[part], old.tree if old is not None and old.is_dir else None)
            nodes.append(n)
        self.put_tree(node, nodes)


def _tag_spec(spec: str) -> tuple[str, bytes]:
    name, _, header = spec.partition(":")
    if not name or "/" in name:
        raise UsageError(f"invalid --exclude-if-present {spec!r}: give a file NAME or NAME:HEADER")
    return name, header.encode()


def _has_tag(directory: str, tags: list[tuple[str, bytes]]) -> str | None:
    """The name of the first tag file present in `directory` (with its header, if one is given)."""
    for name, header in tags:
        try:
            with open(os.path.join(directory, name), "rb") as f:
                if not header or f.read(len(header)) == header:
                    return name
        except OSError:
            continue
    return None


def _scan_total(paths: list[str], excluded: Callable[[str, os.stat_result], bool], progress: Progress,
                one_file_system: bool = False) -> None:
    """Sum file sizes in the background so the progress line can show an ETA (terminals only);
    it skips what the walk skips, other file systems included."""
    total = files = 0
    stack: list[tuple[str, int | None]] = [(p, None) for p in paths]
    while stack:
        p, dev = stack.pop()
        try:
            st = os.lstat(p)
            if excluded(p, st) or (one_file_system and dev is not None and st.st_dev != dev):
                continue
            if statmod.S_ISDIR(st.st_mode):
                with os.scandir(p) as it:
                    stack.extend((e.path, st.st_dev if dev is None else dev) for e in it)
            elif statmod.S_ISREG(st.st_mode):
                total += st.st_size
                files += 1
        except OSError:
            continue
    progress.scanned(files, total)


def find_parent(snap: Reader, host: str, paths: list[str]) -> SnapshotInfo | None:
    """The newest snapshot of the same host and paths: the files cache source. A snapshot that
    repair marked damaged is never one: its unchanged files would reuse the lost chunks."""
    best = None
    for s in list_snapshots(snap):
        if s.host == host and sorted(s.paths) == sorted(paths) and not s.damaged:
            best = s
    return best


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container is fine
        return str(os.getuid())


def _source_paths(opts: BackupOptions) -> list[str]:
    """The snapshot's paths: the stdin file's name, or the absolute, de-duplicated PATHs."""
    if opts.stdin is not None and opts.stdin_command is not None:
        raise UsageError("give either --stdin or --stdin-from-command, not both")
    if opts.stdin is not None or opts.stdin_command is not None:
        return [opts.stdin_name]
    if not opts.paths:
        raise UsageError("nothing to back up: give one or more paths, or --stdin")
    paths: list[str] = []
    for p in opts.paths:
        ap = os.path.normpath(os.path.abspath(p))
        if not os.path.lexists(ap):
            raise UsageError(f"no such file or directory: {p}")
        if ap not in paths:
            paths.append(ap)
    return paths


def choose_parent(snap: Reader, opts: BackupOptions, host: str, paths: list[str]) -> SnapshotInfo | None:
    """--parent ID (as given, whatever its host and paths, as restic), else the automatic one;
    a stream has no automatic parent. A damaged snapshot is refused: its lost chunks would be
    reused for the files it says are unchanged."""
    if opts.parent is None:
        streaming = opts.stdin is not None or opts.stdin_command is not None
        return None if streaming else find_parent(snap, host, paths)
    parent = resolve(snap, opts.parent)
    if parent.damaged:
        raise UsageError(f"snapshot {parent.id[:8]} is marked damaged (see 'casbackup repair blobs'); "
                         "it cannot be the parent of a backup")
    return parent


def _snapshot(repo: Repository, txn: Staging, opts: BackupOptions, host: str, paths: list[str],
              summary: Summary, started: float) -> SnapshotInfo:
    """Walk the paths (or read the stream) into a root TREE and describe the snapshot; the
    caller commits it (or, in a dry run, does not)."""
    parent = choose_parent(txn.base, opts, host, paths)
    source = CommandSource(opts.stdin_command) if opts.stdin_command is not None else None
    try:
        job = Backup(repo, txn, opts, summary, source)
        if parent is not None:
            job.progress.total_bytes, job.progress.total_files = parent.size, parent.summary.get("total_files")
        streaming = opts.stdin is not None or source is not None
        if opts.progress and not streaming:
            threading.Thread(target=_scan_total, args=(paths, job.excluded, job.progress, opts.one_file_system),
                             daemon=True).start()
        ok = False
        try:
            tree = job.stdin_tree() if streaming else job.paths_tree(paths, parent.tree if parent else None)
            ok = True
        finally:
            job.close(cancel=not ok)
            job.progress.done()
    finally:
        if source is not None:
            source.close()
    summary.duration = time.monotonic() - started
    when = opts.time if opts.time is not None else time.time()
    info = SnapshotInfo("", when, host, _user(), paths, sorted(set(opts.tags)), tree,
                        parent.id if parent else None, summary.as_dict())
    if not opts.dry_run:
        info.id = new_id(info.value())
    return info


def run_backup(repo: Repository, opts: BackupOptions) -> tuple[SnapshotInfo, Summary]:
    """Back up and commit one snapshot (with opts.dry_run: count what it would read and store,
    and write nothing; the returned info then has no ID). Any exception aborts: uploaded chunks
    become orphans that a re-run reuses (create-if-absent finds them) and gc reclaims after its
    grace period."""
    started = time.monotonic()
    host = opts.host or socket.gethostname()
    paths = _source_paths(opts)
    if opts.read_concurrency < 1:
        raise UsageError(f"invalid read concurrency {opts.read_concurrency}: read at least one file at a time")
    summary = Summary()
    if opts.dry_run:
        with repo.reader("backup --dry-run") as reader:  # the pin goes when the block ends
            info = _snapshot(repo, DryRun(repo, reader), opts, host, paths, summary, started)
    else:
        with repo.transaction(opts.message) as txn:
            info = _snapshot(repo, txn, opts, host, paths, summary, started)
            txn.put(NAMESPACE, info.id, info.value(), refs=[Ref(BlobType.TREE, info.tree)], if_absent=True)
    summary.duration = time.monotonic() - started
    info.summary = summary.as_dict()
    return info, summary
