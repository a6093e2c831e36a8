"""Hypothesis stateful test: the individual steps of 2 writers, 2 pinned readers and a GC,
interleaved over the memory and the local backend, with one injected clock (and, in
tests/backends/test_stateful_object_stores.py, over S3 on moto and SeaweedFS).

After every step it asserts:
- S1/S2: every live reader reads exactly the content of the generation it pinned, every blob
  verified against its ID (the store's decode cache is cleared first, so storage is re-read);
- S3: the head is exactly the fold of every successful commit, in commit order; a commit
  fails only with CommitConflict, and only when a blob it touched really is gone;
- S4: no blob younger than the grace period disappears, and nothing a live pin reaches does;
- S5: any missing or corrupt blob raises (the assertions read everything; nothing is skipped);
- S7: a reader whose lease lapsed gets LeaseExpired, never data; so does a writer whose pin
  lapsed (WRITER_TTL against the 700 s clock jump), never BlobMissing from its commit;
- gc never stops on a missing blob: not on a late pin (a reader stalled between its root read
  and its pin across a whole condemn-and-sweep, which then refuses that pin), nor after a gc
  that died mid-sweep.

Writers upload chunks from a small pool, so they constantly re-create (dedup: create returns
False) blobs that were orphaned, condemned or are being swept: the fossil race.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Generator

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from helpers_core import ClockedLocalBackend, FakeClock
from casbackup.backends import MemoryBackend
from casbackup.keys import new_kdf
from casbackup.codec import BlobType, Ref, blob_id
from casbackup.errors import BlobMissing, CommitConflict, LeaseExpired
from casbackup.gc import Collector
from casbackup.packs import PACKED_TYPES
from casbackup.repository import Repository, Reader, Transaction

GRACE = 10.0  # short against the leases: condemn, announce and sweep all happen inside a reader's lease
READER_TTL = 100.0
WRITER_TTL = 200.0  # a writer pins its base: a longer pin keeps nearly all history, so a sweep would rarely take what a reader needs
POOL = [f"chunk-{i}-".encode() * (200 + 37 * i) for i in range(6)]
CHUNK_REFS = [Ref(BlobType.CHUNK, blob_id(BlobType.CHUNK, c)) for c in POOL]
KEYS = [f"k{i}" for i in range(6)]

ids = st.integers(0, 1)


@dataclass
class WriterState:
    repo: Repository
    txn: Transaction | None = None
    steps: Generator[str, None, Any] | None = None
    ops: dict[str, int | None] = field(default_factory=dict)


@dataclass
class ReaderState:
    repo: Repository
    steps: Generator[str, None, Reader] | None = None
    snap: Reader | None = None


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.tmp: str | None = None
        self.stats = dict.fromkeys(["commits", "conflicts", "deleted", "reads", "expired_reads", "rescued",
                                    "gc_runs", "condemned", "gc_commits"], 0)  # for tuning: see how much happened

    @initialize(kind=st.sampled_from(["memory", "local"]))
    def setup(self, kind: str) -> None:
        if kind == "memory":
            self.backend: Any = MemoryBackend(clock=self.clock)
        else:
            self.tmp = tempfile.mkdtemp(prefix="casb-stateful-")
            self.backend = ClockedLocalBackend(f"{self.tmp}/repo", self.clock)
        self._start()

    # An encrypted repository when set (test_encryption_stateful.py): the same rules, every record
    # and blob sealed, IDs keyed, each actor its own writer session.
    PASSWORD: str | None = None

    def _start(self) -> None:
        """The actors on self.backend: a new repository, 2 writers, 2 readers, a gc, a checker."""
        kdf = new_kdf(ops=1, mem=8 * 1024) if self.PASSWORD else None
        first = Repository.init(self.backend, password=self.PASSWORD, kdf=kdf)
        self.config = first.config
        self.keys = first.keys
        self.chunk_refs = [Ref(BlobType.CHUNK, first.store.blob_id(BlobType.CHUNK, c)) for c in POOL]

        def actor() -> Repository:
            return Repository(self.backend, self.config, writable=True, monotonic=self.clock, keys=self.keys)

        self.checker = actor()
        root, _ = self.checker.read_root()
        self.head_id = root.generation
        self.head: dict[str, int] = {}
        self.gens: dict[str, dict[str, int]] = {self.head_id: {}}
        self.writers = [WriterState(actor()) for _ in range(2)]
        self.readers = [ReaderState(actor()) for _ in range(2)]
        self.gc_repo = actor()
        self.gc: Generator[str, None, Any] | None = None
        self.blob_mtimes: dict[str, float] = {}

    def teardown(self) -> None:
        for w in getattr(self, "writers", []):
            self._reset_writer(w)
        for r in getattr(self, "readers", []):
            if r.snap is not None:
                r.snap.close()
            if r.steps is not None:
                r.steps.close()
        if getattr(self, "gc", None) is not None:
            self.gc.close()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- writers -------------------------------------------------------------------------

    def _reset_writer(self, w: WriterState) -> None:
        if w.steps is not None:
            w.steps.close()
        if w.txn is not None:
            w.txn.abort()
        w.txn, w.steps, w.ops = None, None, {}

    def writer_begin(self, w: int) -> None:
        ws = self.writers[w]
        if ws.txn is None:
            ws.txn = ws.repo.transaction(f"writer {w}", ttl=WRITER_TTL)
            assert ws.txn.base.generation.id in self.gens

    def _staging(self, w: int) -> WriterState | None:
        ws = self.writers[w]
        if ws.txn is None:
            self.writer_begin(w)
        return ws if ws.txn is not None and ws.steps is None else None

    @rule(w=ids, chunk=st.integers(0, len(POOL) - 1), key=st.sampled_from(KEYS))
    def writer_upload(self, w: int, chunk: int, key: str) -> None:
        """Upload a chunk (often one that exists already: create-returns-False dedup) and
        point an entry at it."""
        ws = self._staging(w)
        if ws is None:
            return
        assert ws.txn is not None
        try:
            res = ws.txn.put_blob(BlobType.CHUNK, POOL[chunk])
        except LeaseExpired:
            self._reset_writer(ws)
            return
        assert res.ref == self.chunk_refs[chunk]
        ws.txn.put("data", key, str(chunk).encode(), refs=[res.ref])
        ws.ops[key] = chunk

    @rule(w=ids, key=st.sampled_from(KEYS), data=st.data())
    def writer_reuse(self, w: int, key: str, data: st.DataObject) -> None:
        """Reference a chunk found through the (pinned) base generation without uploading it."""
        ws = self._staging(w)
        if ws is None:
            return
        assert ws.txn is not None
        base = self.gens[ws.txn.base.generation.id]
        if not base:
            return
        chunk = data.draw(st.sampled_from(sorted(set(base.values()))))
        ws.txn.use([self.chunk_refs[chunk]])
        ws.txn.put("data", key, str(chunk).encode(), refs=[self.chunk_refs[chunk]])
        ws.ops[key] = chunk

    @rule(w=ids, key=st.sampled_from(KEYS))
    def writer_delete(self, w: int, key: str) -> None:
        ws = self._staging(w)
        if ws is None:
            return
        assert ws.txn is not None
        ws.txn.delete("data", key)
        ws.ops[key] = None

    @rule(w=ids, n=st.integers(1, 3))
    def writer_commit_steps(self, w: int, n: int) -> None:
        for _ in range(n):
            if self.writers[w].txn is None or not self.writers[w].ops:
                return
            self.writer_commit_step(w)

    def writer_commit_step(self, w: int) -> None:
        ws = self.writers[w]
        if ws.txn is None or not ws.ops:
            return
        if ws.steps is None:
            ws.steps = ws.txn.commit_steps()
        try:
            next(ws.steps)
            return
        except StopIteration as stop:
            gen = stop.value
        except CommitConflict:
            # Legitimate only if a blob this writer touched really was deleted under it.
            touched = ws.txn.touched  # format 2: a touched pack, or a touched loose blob, was deleted
            gone = [p for p in ws.txn._blob_in_pack if self.checker.store.stat_pack(p) is None]
            gone += [r.id for r in touched if r.type not in PACKED_TYPES and not self.checker.store.exists(r.id)]
            assert gone, "conflict without a deleted blob"
            self.stats["conflicts"] += 1
            ws.txn, ws.steps = None, None
            self._reset_writer(ws)
            return
        except LeaseExpired:
            assert ws.txn.base.lease.remaining < 0
            ws.txn, ws.steps = None, None
            self._reset_writer(ws)
            return
        assert gen.parent == self.head_id, "a commit did not rebase onto the head it replaced"
        content = dict(self.head)
        for key, chunk in ws.ops.items():
            if chunk is None:
                content.pop(key, None)
            else:
                content[key] = chunk
        self.head_id, self.head = gen.id, content
        self.gens[gen.id] = content
        self.stats["commits"] += 1
        ws.txn, ws.steps, ws.ops = None, None, {}

    @rule(w=ids, chunk=st.integers(0, len(POOL) - 1))
    def writer_rewrite_all(self, w: int, chunk: int) -> None:
        """Point every key at one chunk and commit: a compaction, which leaves what pinned
        readers still read to gc (with gc_condemn_then_sweep, the seed scenario in few rules)."""
        for key in KEYS:
            self.writer_upload(w, chunk, key)
        self.writer_commit_steps(w, 3)

    @rule(w=ids, dice=st.integers(0, 3))
    def writer_abort(self, w: int, dice: int) -> None:
        if dice == 0:
            self._reset_writer(self.writers[w])

    # ---- readers -------------------------------------------------------------------------

    @rule(r=ids, n=st.sampled_from([1, 3]))
    def reader_open_steps(self, r: int, n: int) -> None:
        """Up to n steps of opening a pinned reader (3: the whole open)."""
        for _ in range(n):
            self.reader_open_step(r)

    def reader_open_step(self, r: int) -> None:
        rs = self.readers[r]
        if rs.snap is not None:
            return
        if rs.steps is None:
            rs.steps = rs.repo.open_reader_steps("stateful", READER_TTL, renew=False)
        try:
            next(rs.steps)
        except StopIteration as stop:
            rs.snap, rs.steps = stop.value, None
            assert rs.snap.generation.id in self.gens, "pinned a generation nobody committed"
        except LeaseExpired:
            rs.steps = None  # the pin lapsed while it was being validated: loud, and correct

    @rule(r=ids)
    def reader_renew(self, r: int) -> None:
        rs = self.readers[r]
        if rs.snap is None:
            return
        lapsed = rs.snap.lease.remaining < 0
        try:
            rs.snap.lease.renew()  # type: ignore[union-attr]
            assert not lapsed, "a lapsed lease was renewed: its data may already be collected"
        except LeaseExpired:
            assert lapsed

    @rule(r=ids)
    def reader_close(self, r: int) -> None:
        rs = self.readers[r]
        if rs.snap is not None:
            rs.snap.close()
            rs.snap = None

    # ---- gc and time ---------------------------------------------------------------------

    @rule(n=st.sampled_from([1, 1, 2, 3, 6, 1000]))
    def gc_steps(self, n: int) -> None:
        """Up to n consecutive steps of one GC run (n=1 gives the finest interleaving; 1000, the
        rest of the run, makes condemn-then-sweep sequences common enough to find)."""
        if self.gc is None:
            self.gc = Collector(self.gc_repo, grace=GRACE, keep_last=1, force=True).steps()
        for _ in range(n):
            try:
                next(self.gc)
                self._adopt_gc_commit()
            except StopIteration as stop:
                self._adopt_gc_commit()
                self.stats["rescued"] += stop.value.rescued
                self.stats["gc_runs"] += 1
                self.stats["condemned"] += stop.value.condemned
                self.gc = None
                return
            except LeaseExpired:
                self.gc = None  # its own lease lapsed: it stops; the next gc finishes its sweep
                return

    @rule()
    def gc_condemn_then_sweep(self) -> None:
        """Two whole gc runs a grace period apart, the second sweeping (or repacking) what the
        first condemned, inside a reader's lease: the seed scenario of a pinned restore under
        compaction plus gc, reached in one rule instead of by a rare sequence of small ones."""
        if self.gc is not None:
            return
        self.gc_steps(1000)
        self.clock.advance(GRACE + 1)
        self.gc_steps(1000)

    @rule(dice=st.integers(0, 3))
    def gc_crash(self, dice: int) -> None:
        """Abandon a GC between two steps; the root keeps any sweep it announced, and the
        next GC must finish it. (Rarer than the other rules.)"""
        if self.gc is not None and dice == 0:
            self.gc.close()
            self.gc = None

    @rule(dt=st.sampled_from([1.0, 5.0, 20.0, 30.0, 30.0, 60.0, 60.0, 95.0, 700.0]))
    def advance_clock(self, dt: float) -> None:
        self.clock.advance(dt)

    def _adopt_gc_commit(self) -> None:
        """Format 2: gc commits too (repacks, and forgetting the locations of deleted packs).
        Such a commit must sit right on the head it found and keep its content exactly."""
        root, _ = self.checker.read_root()
        if root.generation == self.head_id:
            return
        gen = self.checker.load_generation(root.generation)
        assert gen.parent == self.head_id and gen.message.startswith("gc:"), "the head moved without a commit"
        self.head_id = gen.id
        self.gens[gen.id] = dict(self.head)
        self.stats["gc_commits"] += 1

    # ---- invariants ----------------------------------------------------------------------

    def _read_all(self, snap: Reader) -> dict[str, int]:
        got: dict[str, int] = {}
        for e in snap.list("data"):
            chunk = int(snap.value(e))
            assert e.refs == (self.chunk_refs[chunk],)
            assert snap.read_blob(e.refs[0]) == POOL[chunk]
            got[e.key] = chunk
        return got

    @invariant()
    def head_is_every_commit(self) -> None:
        if not hasattr(self, "checker"):
            return
        root, _ = self.checker.read_root()
        assert root.generation == self.head_id, "the head is not the last successful commit (lost commit?)"
        self.checker.store.clear_cache()
        gen = self.checker.load_generation(root.generation)
        got = {}
        for e in self.checker.index.iterate(gen.index, ("data", ""), gen.id):
            chunk = int(e.value or b"-1")
            assert self.checker.store.get(e.refs[0], gen.id) == POOL[chunk]
            got[e.key] = chunk
        assert got == self.head

    @invariant()
    def pinned_readers_see_their_generation(self) -> None:
        for rs in getattr(self, "readers", []):
            if rs.snap is None:
                continue
            rs.repo.store.clear_cache()
            if rs.snap.lease.remaining >= 0:
                assert self._read_all(rs.snap) == self.gens[rs.snap.generation.id]
                self.stats["reads"] += 1
            else:
                with pytest.raises(LeaseExpired):
                    self._read_all(rs.snap)
                self.stats["expired_reads"] += 1

    @invariant()
    def nothing_younger_than_grace_deleted(self) -> None:
        if not hasattr(self, "checker"):
            return
        now = self.clock()
        current = {i: info.mtime for i, info in self.checker.store.list_objects()}
        for blob, mtime in self.blob_mtimes.items():
            if blob not in current:
                assert now - mtime >= GRACE, f"blob {blob} deleted {now - mtime:.0f}s after it was stored"
                self.stats["deleted"] += 1
        self.blob_mtimes = current


TestCoreProtocol = pytest.mark.slow(CoreMachine.TestCase)  # a hypothesis state machine: minutes


def test_blob_missing_is_loud_for_a_reader(mem_repo: Repository) -> None:
    """Sanity check of the oracle: a reader never silently skips a blob that vanished."""
    with mem_repo.transaction() as txn:
        res = txn.put_blob(BlobType.CHUNK, POOL[0])
        txn.put("data", "k0", b"0", refs=[res.ref])
    with mem_repo.reader() as snap:
        mem_repo.store.delete_pack(mem_repo.locate(snap.generation.id, CHUNK_REFS[0].id).pack)
        with pytest.raises(BlobMissing) as err:
            [snap.read_blob(e.refs[0]) for e in snap.list("data")]
        assert CHUNK_REFS[0].id in str(err.value) and snap.generation.id in str(err.value)
