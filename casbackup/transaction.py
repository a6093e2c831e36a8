"""The commit: puts and deletes published by one root compare-and-swap (spec §7.2, §9.3).

`Transaction.commit_steps` rebases on the current head until its swap lands; before each
swap it applies the committer's rules of §9.3, one function each: the conflict checks of
`if_absent`/replace-style updates, the sweep barrier, the epoch re-check, and the rescue of
condemned blobs.
"""
from __future__ import annotations

import io
import random
import threading
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator

from .btree import INLINE_VALUE_MAX, MAX_ENTRY_REFS, Entry, Op
from .chunklist import read_full, store_stream
from .codec import BlobType, EncodedBlob, Ref, pack_structured, sealed_epoch
from .errors import BlobMissing, CommitConflict, LeaseExpired, NotFound, UsageError
from .gcstate import load_gcstate, write_gcstate
from .records import Generation, Root, new_write_id
from .steps import Step, Steps
from .packs import LOCATIONS_NAMESPACE, PACKED_TYPES, Location, PackBuilder, PackClass
from .store import PACK_MEMBER, PutResult, is_pack_member, pack_member

if TYPE_CHECKING:
    from .repository import Repository

COMMIT_TIMEOUT = 300.0
# A long transaction publishes the locations of the packs it wrote every this many packed bytes
# (a checkpoint commit of `_blobs` entries only), so an interrupted backup's data is found and
# reused by the next run instead of stored again (FORMAT.md §12.6).
CHECKPOINT_BYTES = 1024 * 1024 * 1024
# gc's prune (forget_locations_in) applies its deletes to the index this many at a time, in key
# order: memory per batch, not per dropped entry (10^6 of them at 10^7 blobs).
FORGET_BATCH = 65536

# Values: up to INLINE_VALUE_MAX inline in the page; up to VALUE_BLOB_MAX one VALUE blob;
# larger, a FILE (chunklist.py) of VALUE_PIECE-byte CHUNK blobs, so any size round-trips.
VALUE_BLOB_MAX = 4 * 1024 * 1024
VALUE_PIECE = 4 * 1024 * 1024
VALUE_WORKERS = 2            # upload threads for a large value
VALUE_IN_FLIGHT = 4          # pieces queued or uploading at once (bounded memory)
# Full packs being written at once per transaction: each holds pack_size bytes until its create
# returns, so this bounds that memory (a worker that fills a third pack waits: back-pressure).
PACK_WRITES = 2


def _validate_name(kind: str, text: str) -> str:
    try:
        size = len(text.encode()) if isinstance(text, str) else 0
    except UnicodeEncodeError:  # undecodable bytes from argv or a file name (surrogates)
        size = 0
    if not size or size > 1024 or "\x00" in text:
        raise UsageError(f"invalid {kind} {text!r}: it must be 1-1024 bytes of UTF-8 with no NUL")
    return text


class Transaction:
    """Puts and deletes applied atomically by one root compare-and-swap (spec §7.2).

    The base generation stays pinned until the commit, so blobs found through it (dedup) are
    protected; every blob the transaction uploads or reuses is "touched" and takes part in the
    GC rescue rule at commit time.
    """

    def __init__(self, repo: "Repository", message: str, ttl: float) -> None:
        self.repo = repo
        self.message = message
        self.base = repo.open_reader("commit", ttl, pin=True)
        # GC epoch before anything was touched: if it moved by commit time, a sweep may have
        # deleted a blob this transaction found present (dedup), so presence is checked again.
        self._gc_epoch = self.base.gc_epoch
        self.ops: dict[tuple[str, str], Op] = {}
        self.expect_absent: set[tuple[str, str]] = set()
        self.expect_present: set[tuple[str, str]] = set()  # replace-style updates (files `tag`)
        # Ops that apply only while the head still holds the expected value (gc's location
        # updates, FORMAT.md §12.7.4-§12.7.5): re-checked on every rebase, skipped when it moved.
        self.conditional: dict[tuple[str, str], tuple[Op, bytes]] = {}
        self._forgotten_packs: set[str] = set()  # forget_locations_in
        self.forgotten = 0  # `_blobs` entries the last rebase dropped for them
        self.touched: set[Ref] = set()
        self.result: Generation | None = None
        self._done = False
        self._waited_for_sweep: set[str] = set()  # objects a sweep held back; checked once it ends
        # Set only by the GC holding the lease for its own commit after its deletes (§12.7.5):
        # that sweep deletes nothing more, so it need not wait for itself to end.
        self.after_own_sweep = False
        # Packed blobs this transaction stored, where (FORMAT.md §12.6): the commit locates them.
        self.stored: dict[str, Location] = {}
        self._open_packs: dict[PackClass, PackBuilder] = {}
        self._pack_lock = threading.Lock()
        self._pack_writes = threading.BoundedSemaphore(PACK_WRITES)
        self.packs_written = 0
        self._blob_in_pack: dict[str, str] = {}  # a touched blob of each touched pack (messages)
        self._ttl = ttl
        self._unpublished: dict[str, Location] = {}  # in written packs, not yet in a checkpoint
        self._unpublished_bytes = 0

    # -- staging --
    def put_blob(self, blob_type: BlobType, payload: bytes) -> PutResult:
        self.base._guard()
        if blob_type in PACKED_TYPES:
            return self._put_packed(self.repo.store.encode(blob_type, payload))
        res = self.repo.store.put(blob_type, payload)
        self.touched.add(res.ref)
        return res

    def put_structured(self, blob_type: BlobType, refs: list[Ref], body: Any) -> PutResult:
        self.base._guard()
        if blob_type in PACKED_TYPES:
            res = self._put_packed(self.repo.store.encode(blob_type, pack_structured(refs, body, blob_type)))
        else:
            res = self.repo.store.put_structured(blob_type, refs, body)
            self.touched.add(res.ref)
        self.touched.update(refs)
        return res

    def is_stored(self, ref: Ref) -> bool:
        """Dedup without a request (§12.6 step 1): the pinned base locates it, or our packs hold it."""
        if ref.type not in PACKED_TYPES:
            return self.repo.store.exists(ref.id)
        return ref.id in self.stored or self.repo.locate(self.base.generation.id, ref.id) is not None

    def _put_packed(self, blob: EncodedBlob) -> PutResult:
        ref = Ref(blob.type, blob.id)
        self.touched.add(ref)
        if self.is_stored(ref):
            return PutResult(ref, False, len(blob.stored))
        if self._append(blob, skip_stored=True) is None:
            return PutResult(ref, False, len(blob.stored))
        return PutResult(ref, True, len(blob.stored))

    def _append(self, blob: EncodedBlob, skip_stored: bool = False, checkpoint: bool = True) -> Location | None:
        """Add a blob to the open pack of its class (None: skip_stored and we already hold it),
        and write that pack once it is full."""
        full = None
        with self._pack_lock:
            if skip_stored and blob.id in self.stored:
                return None
            pack_class = PACKED_TYPES[blob.type]
            builder = self._open_packs.get(pack_class)
            if builder is None:
                builder = self._open_packs[pack_class] = PackBuilder(pack_class)
            loc = self.stored[blob.id] = builder.add(blob)
            if builder.full(self.repo.config.pack_size):
                full = self._open_packs.pop(pack_class)
        if full is not None:
            self._write_pack(full, checkpoint)
        return loc

    def repack_blob(self, blob_id: str, old: Location, reseal: bool = False) -> Location:
        """Copy a stored blob (verified against its ID) into this transaction's packs, whether
        or not the base locates it: gc's repack (§12.7.4). Returns its new location. `reseal`:
        a blob sealed under an older key epoch is sealed again under the current one (the same
        ID: the ID key never changes), for gc --reencrypt (spec §13.7)."""
        ref = Ref(old.type, blob_id)
        stored = self.repo.store.get_at(ref, old, self.base.generation.id)
        _, payload = self.repo.store.decode(blob_id, stored, old.type)
        suite = self.repo.store.suite
        if reseal and suite is not None and sealed_epoch(stored) != suite.current:
            blob = self.repo.store.encode(old.type, payload)
        else:
            blob = EncodedBlob(blob_id, old.type, stored, 0)
        loc = self._append(blob, checkpoint=False)
        assert loc is not None
        return loc

    def _write_pack(self, pack: PackBuilder, checkpoint: bool = True) -> None:
        self.base._guard()
        with self._pack_writes:
            size = self.repo.store.put_pack(pack)
        with self._pack_lock:
            self.packs_written += 1
            self._unpublished.update((i.id, i.location) for i in pack.items())
            self._unpublished_bytes += size
            due = checkpoint and self._unpublished_bytes >= CHECKPOINT_BYTES
            if due:
                ready, self._unpublished, self._unpublished_bytes = self._unpublished, {}, 0
        if due:
            self._checkpoint(ready)

    def _checkpoint(self, ready: dict[str, Location]) -> None:
        """Publish where these blobs are, in a commit of their own (nothing else in it)."""
        ck = Transaction(self.repo, f"checkpoint: {self.message}"[:200], self._ttl)
        ck.stored.update(ready)
        ck.use(Ref(loc.type, blob_id) for blob_id, loc in ready.items())
        ck.commit()

    def flush(self) -> None:
        """Write the open packs, so every blob staged so far is durable (commit does it first)."""
        with self._pack_lock:
            packs, self._open_packs = list(self._open_packs.values()), {}
        for pack in packs:
            self._write_pack(pack, checkpoint=False)  # the commit itself publishes them

    def use(self, refs: Iterable[Ref]) -> None:
        """Declare blobs this transaction references without uploading them (dedup)."""
        self.touched.update(refs)

    def put(self, namespace: str, key: str, value: bytes, refs: Iterable[Ref] = (), if_absent: bool = False) -> None:
        """Stage a value of any size (inline, one VALUE blob, or a FILE of chunks; spec §6.1).

        Its blobs are uploaded now, but nothing is visible until commit. `refs` keeps other
        blobs alive through this entry; if_absent makes the commit fail if the key exists."""
        if len(value) > VALUE_BLOB_MAX:
            self.put_stream(namespace, key, io.BytesIO(value), refs, if_absent)
            return
        refs = self._check_entry(namespace, key, refs)
        if len(value) > INLINE_VALUE_MAX:
            vref = self.put_blob(BlobType.VALUE, bytes(value)).ref
            entry = Entry(namespace, key, None, vref, refs)
        else:
            entry = Entry(namespace, key, bytes(value), None, refs)
        self._stage(entry, if_absent)

    def put_stream(self, namespace: str, key: str, stream: IO[bytes], refs: Iterable[Ref] = (),
                   if_absent: bool = False) -> int:
        """Stage a value read from a binary stream until EOF, never holding it whole: pieces of
        VALUE_PIECE bytes are uploaded (and touched) as CHUNK blobs, at most VALUE_IN_FLIGHT at
        a time, and listed by a FILE blob. Returns the value's size."""
        refs = self._check_entry(namespace, key, refs)
        first = read_full(stream, VALUE_BLOB_MAX + 1)
        if len(first) <= VALUE_BLOB_MAX:  # small: the same entry put() would make
            if len(first) > INLINE_VALUE_MAX:
                entry = Entry(namespace, key, None, self.put_blob(BlobType.VALUE, first).ref, refs)
            else:
                entry = Entry(namespace, key, first, None, refs)
            self._stage(entry, if_absent)
            return len(first)
        carry = first[VALUE_PIECE:]
        head = first[:VALUE_PIECE]
        del first

        def read_pieces() -> Iterator[bytes]:
            yield head
            rest = carry + read_full(stream, VALUE_PIECE - len(carry))
            while rest:
                yield rest
                if len(rest) < VALUE_PIECE:
                    return
                rest = read_full(stream, VALUE_PIECE)

        file_ref, size = store_stream(read_pieces(), self.put_blob, self.put_structured, VALUE_WORKERS,
                                      VALUE_IN_FLIGHT)
        self._stage(Entry(namespace, key, None, file_ref, refs), if_absent)
        return size

    @staticmethod
    def _check_entry(namespace: str, key: str, refs: Iterable[Ref]) -> tuple[Ref, ...]:
        _validate_name("namespace", namespace)
        if namespace == LOCATIONS_NAMESPACE:
            raise UsageError(f"namespace {LOCATIONS_NAMESPACE} holds the index's blob locations; only commits write it")
        _validate_name("key", key)
        out = tuple(sorted(set(refs)))
        if len(out) > MAX_ENTRY_REFS:
            raise UsageError(f"entry {key!r} in namespace {namespace!r} names {len(out)} refs, over the limit of "
                             f"{MAX_ENTRY_REFS}: keep many blobs alive through one structured blob (a FILE or TREE) "
                             "and reference that")
        return out

    def _stage(self, entry: Entry, if_absent: bool) -> None:
        namespace, key, refs = entry.namespace, entry.key, entry.refs
        self.touched.update(refs)
        self.ops[(namespace, key)] = Op(namespace, key, entry)
        if if_absent:
            self.expect_absent.add((namespace, key))

    def put_if_value(self, namespace: str, key: str, value: bytes, expected: bytes) -> None:
        """Replace a key's inline value only if, at commit, it is still `expected`."""
        self.conditional[(namespace, key)] = (Op(namespace, key, Entry(namespace, key, value, None, ())), expected)

    def forget_locations_in(self, packs: Iterable[str]) -> None:
        """Remove, at commit, each `_blobs` entry of the head that still locates its blob in one
        of `packs` (gc's prune of deleted packs, FORMAT.md §12.7.5): an entry a writer has moved
        meanwhile stays. Decided on every rebase by one ordered pass over the head's `_blobs`,
        with nothing staged per entry."""
        self._forgotten_packs.update(packs)

    def _drop_forgotten(self, head: Generation, index: Ref | None) -> tuple[Ref | None, int, list[Ref]]:
        """`index` without the entries forget_locations_in names, applied FORGET_BATCH at a
        time (the pass reads `index`'s pages while the batches write new ones: pages never change)."""
        packs = self._forgotten_packs
        tree = self.repo.index
        root, delta = index, 0
        pages: list[Ref] = []
        batch: list[Op] = []
        self.forgotten = 0

        def flush() -> None:
            nonlocal root, delta
            root, d, written = tree.apply(root, batch)
            delta += d
            pages.extend(written)
            self.forgotten += len(batch)
            batch.clear()

        for e in tree.iterate_namespace(index, LOCATIONS_NAMESPACE, head.id):
            if e.value is not None and Location.from_value(e.value, e.key).pack in packs:
                batch.append(Op(LOCATIONS_NAMESPACE, e.key, None))
                if len(batch) >= FORGET_BATCH:
                    flush()
        if batch:
            flush()
        return root, delta, pages

    def _conditional_ops(self, head: Generation) -> list[Op]:
        """The conditional ops whose key the head still holds at its expected value (one ordered
        pass over the head for all of them: gc's repack commit has one per moved blob)."""
        if not self.conditional:
            return []
        current = self.repo.index.get_many(head.index, self.conditional.keys(), head.id)
        ops = []
        for k, (op, expected) in self.conditional.items():
            entry = current.get(k)
            if entry is not None and entry.value == expected:
                ops.append(op)
        return ops

    def delete(self, namespace: str, key: str) -> None:
        """Stage removing a key from the live set (absent keys are fine); gc reclaims its
        blobs later, once no generation it keeps and no pin still needs them."""
        self.ops[(namespace, key)] = Op(namespace, key, None)

    def get(self, namespace: str, key: str) -> bytes:
        """A key's value as this transaction would commit it: its own staged put or delete
        first, else the pinned base generation (read-your-writes)."""
        op = self.ops.get((namespace, key))
        if op is not None:
            if op.entry is None:
                raise NotFound(f"no key {key!r} in namespace {namespace!r}")
            return self.base.value(op.entry)
        return self.base.get(namespace, key)

    # -- publishing --
    def commit(self) -> Generation:
        """Publish every staged put and delete as one new generation, or none of them.

        Rebases on whatever rivals committed meanwhile (backing off between tries) and gives
        up after COMMIT_TIMEOUT; CommitConflict if an if_absent key appeared, a replaced key
        vanished, or gc swept a blob this transaction relies on (re-running re-uploads it)."""
        deadline = self.repo.monotonic() + COMMIT_TIMEOUT
        steps = self.commit_steps()
        attempt = 0
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if step.waits:
                try:
                    attempt = self._backoff(attempt, deadline, step.why)
                except BaseException:
                    steps.close()
                    raise

    def commit_steps(self) -> "Steps[Generation]":
        """commit as steps: yields Step.CAS just before each root swap, and a waiting step
        (Step.WAIT_SWEEP, Step.WAIT_ROOT) when it must back off."""
        if self._done:
            raise UsageError("transaction already finished")
        repo = self.repo
        self._waited_for_sweep = set()
        try:
            self.flush()
            while True:
                self.base._guard()
                root, etag = repo.read_root()
                try:
                    planned = self._plan(root)
                except BlobMissing:
                    # gc may collect what a superseded root named (its generation, its gc
                    # state) once the root has moved on; then rebase on the new root.
                    if repo.read_root()[1] == etag:
                        raise
                    yield Step.WAIT_ROOT
                    continue
                if planned is None:
                    yield Step.WAIT_SWEEP
                    continue
                gen, new_root = planned
                yield Step.CAS
                if self._swap(etag, new_root):
                    self.result = gen
                    return gen
                yield Step.WAIT_ROOT
        finally:
            self._done = True
            self.base.close()

    def _swap(self, etag: str, new_root: Root) -> bool:
        """The root swap of one rebase (§7.2 step 6): True if published, False on a conflict
        (the caller rebases; its next round checks the lease first).

        A mismatch answering our first request is a conflict outright (RootRecord.swap). Only
        after a lost reply does deciding it walk the head's chain down to our seq, and there a
        generation can be missing. While our base pin holds, gc keeps the whole chain from the
        head down to the base (FORMAT.md §9.1), so a gap means either the pin lapsed (the clock
        or the process stalled past its deadline; gc has since collected what it no longer
        kept) or real damage. A lapsed pin is reported as LeaseExpired, saying the outcome is
        not known: it is never answered "not published" (re-running a commit that did land
        would make it twice) nor "published" (the gap cannot show it). With the pin still held
        the gap is damage, and BlobMissing, naming the generation, stays loud (S5)."""
        try:
            return self.repo.swap_root(etag, new_root, creates_generation=True)
        except BlobMissing as exc:
            lapsed = False
            try:
                self.base._guard()
            except LeaseExpired:
                lapsed = True
            if not lapsed:
                raise
            raise LeaseExpired(f"this commit's pin lapsed before the outcome of its root update (generation "
                               f"{new_root.seq}, {new_root.generation}) could be confirmed, and gc has collected "
                               f"the history that would show it ({exc}); check the log for it before running "
                               "the command again") from None

    def _plan(self, root: Root) -> tuple[Generation, Root] | None:
        """One rebase on `root`: the generation to publish and the root naming it, or None while
        the sweep barrier holds (§9.3, §12.6)."""
        repo = self.repo
        head = repo.load_generation(root.generation)
        self._check_expectations(head)
        located, touched_packs = self._locations(head)
        ops = list(self.ops.values()) + located + self._conditional_ops(head)
        new_index, delta, pages = repo.index.apply(head.index, ops)
        if self._forgotten_packs:
            new_index, dropped, more = self._drop_forgotten(head, new_index)
            delta, pages = delta + dropped, pages + more
        touched = ({r.id for r in self.touched if r.type not in PACKED_TYPES} | {r.id for r in pages}
                   | {pack_member(p) for p in touched_packs})
        if not self._sweep_barrier(root, touched):
            return None
        self._recheck_epoch(root, touched)
        condemned_id = self._rescue(root, touched)
        write_id = new_write_id()
        gen = repo._write_generation(root.seq + 1, root.generation, new_index, head.entries + delta, write_id,
                                     self.message)
        return gen, Root(gen.id, gen.seq, write_id, root.gc_epoch, condemned_id, root.sweeping,
                         root.retain_floor, repo.backend.now())

    def _locations(self, head: Generation) -> tuple[list[Op], set[str]]:
        """§12.6 steps 3-4 on this rebase: the `_blobs` entries to write (blobs we stored, where the
        head does not already say so; touched blobs whose entry gc removed) and the touched packs."""
        ops: list[Op] = []
        packs: set[str] = set()
        packed = [ref for ref in self.touched if ref.type in PACKED_TYPES]
        # One ordered pass over the head's `_blobs` for all of them, and one over the base's for
        # those neither we nor the head locate (FORMAT.md §12.5: join, not one descent per blob).
        in_head = self.repo.locate_many(head.id, {ref.id for ref in packed}) if packed else {}
        forgotten = {ref.id for ref in packed if ref.id not in self.stored and ref.id not in in_head}
        in_base = self.repo.locate_many(self.base.generation.id, forgotten) if forgotten else {}
        for ref in packed:
            head_loc = in_head.get(ref.id)
            # Our own copy when we stored one (always there: we wrote it), else the head's entry,
            # else (gc forgot it) the base's: FORMAT.md §12.6 step 3.
            loc = self.stored.get(ref.id) or head_loc
            if loc is None:
                loc = in_base.get(ref.id)
                if loc is None:
                    raise CommitConflict(f"blob {ref.id} is referenced but stored nowhere: it was never uploaded, "
                                         "or gc removed it; run the command again")
            if loc != head_loc:
                ops.append(Op(LOCATIONS_NAMESPACE, ref.id, Entry(LOCATIONS_NAMESPACE, ref.id, loc.to_value(), None, ())))
            packs.add(loc.pack)
            self._blob_in_pack.setdefault(loc.pack, ref.id)
        return ops, packs

    def _check_expectations(self, head: Generation) -> None:
        """Conflicts: an if_absent key must still be absent, a replaced key still present."""
        if not (self.expect_absent or self.expect_present):
            return
        present = self.repo.index.get_many(head.index, self.expect_absent | self.expect_present, head.id)
        for ns, key in self.expect_absent:
            if (ns, key) in present:
                raise CommitConflict(f"key {key!r} in namespace {ns!r} already exists")
        for ns, key in self.expect_present:
            if (ns, key) not in present:
                raise CommitConflict(f"key {key!r} in namespace {ns!r} was removed by a concurrent commit")

    def _sweep_barrier(self, root: Root, touched: set[str]) -> bool:
        """Sweep barrier (§9.3): False while the root's sweeping set holds a touched blob (do
        not publish; wait). Once it no longer does, every blob waited for must still exist."""
        blocked = touched & load_gcstate(self.repo.store, root.sweeping).keys()
        if blocked and self.after_own_sweep:
            self._fail_if_gone(sorted(blocked))  # written anew by this commit (a page), or spared
            return True
        if blocked:
            self._waited_for_sweep |= blocked
            return False
        if self._waited_for_sweep:
            self._fail_if_gone(sorted(self._waited_for_sweep))
            self._waited_for_sweep = set()
        return True

    def _recheck_epoch(self, root: Root, touched: set[str]) -> None:
        """Epoch re-check (§9.3), the fossil race: if gc_epoch moved since the base was read, a
        blob touched earlier (uploaded, or found present and not uploaded) may have been swept
        since, so every touched loose blob and touched pack must still exist. Any sweep that
        starts after this root read changes the root, so the swap fails and this runs again."""
        if root.gc_epoch != self._gc_epoch:
            self._fail_if_gone(sorted(touched))
            self._gc_epoch = root.gc_epoch

    def _rescue(self, root: Root, touched: set[str]) -> str | None:
        """Rescue (§9.3): the condemned set the new root names, without the touched blobs."""
        if root.condemned is None:
            return None
        condemned = load_gcstate(self.repo.store, root.condemned)
        rescued = touched & condemned.keys()
        if not rescued:
            return root.condemned
        return write_gcstate(self.repo.store, "condemned", {r: t for r, t in condemned.items() if r not in rescued})

    def _fail_if_gone(self, members: Iterable[str]) -> None:
        gone = [m for m in members if not self.repo.store.exists_object(m)]
        if gone:
            what = f"blob {gone[0]}"
            if is_pack_member(gone[0]):
                pack = gone[0][len(PACK_MEMBER):]
                what = f"blob {self._blob_in_pack.get(pack, '?')} (in pack {pack})"
            raise CommitConflict(f"{what} was deleted by a concurrent gc sweep before this commit; "
                                 "run the command again (it re-uploads what is missing)")

    def _backoff(self, attempt: int, deadline: float, why: str) -> int:
        if self.repo.monotonic() > deadline:
            raise CommitConflict(f"commit gave up after {COMMIT_TIMEOUT:g}s: {why}")
        self.repo.sleep(random.uniform(0, min(0.002 * (2 ** attempt), 0.5)))
        return attempt + 1

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.base.close()

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
