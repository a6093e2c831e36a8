"""Two-phase garbage collection: mark (condemn) now, sweep after the grace period (spec §9).

Safety rests on three rules: GC only deletes blobs that stayed condemned for the grace period;
a commit that touches a condemned blob removes it from the set in the same root swap; and a
sweep announces its set in the root before re-reading pins and deleting, so no commit or
reader can start using a blob it is deleting.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Container

from .backends.base import BatchDeleter, TempFileCleaner, delete_batch_size
from .backends.listing import list_concurrency
from .errors import BlobCorrupt, UsageError
from .damage import known_blobs_of
from .gcstate import load_gcstate, write_gcstate
from .layout import SELFTEST_PREFIX
from .meter import Meter, as_meter
from .pins import Lease, PinState, acquire_gc_lease, list_pins, release_gc_lease
from .markset import StagedMarks, UpToStage
from .reach import STAGE_HEAD, STAGE_KEPT, STAGE_REST, Reachability
from .records import Generation, Root, new_write_id
from .repository import Repository, Steps, run_steps
from .steps import Step
from .reseal import reseal_in_place
from .store import listing_rounds
from .transfer import ordered_map
from .packrules import PackDecision, PackFacts, decide
from .packs import LOCATIONS_NAMESPACE, Location, toc_epoch
from .store import PACK_MEMBER, is_pack_member, pack_member

DEFAULT_GRACE = 24 * 3600.0
MIN_GRACE_WITHOUT_FORCE = 3600.0
DEFAULT_KEEP_LAST = 3
# A live pack is repacked once this share of it is no longer reachable (restic's prune repacks
# until 5% of the repository is unused; a per-pack 10% keeps a forgotten secret from lingering).
DEFAULT_REPACK_DEAD = 0.1
TEMP_FILE_AGE = 3600.0


@dataclass
class GcReport:
    dry_run: bool
    grace_seconds: float
    keep_last: int
    blobs_total: int = 0
    blobs_reachable: int = 0
    blobs_young: int = 0
    condemned: int = 0
    newly_condemned: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    rescued: int = 0
    would_delete: int = 0
    retained_generations: int = 0
    finished_abandoned_sweep: bool = False
    expired_pins_removed: int = 0
    temp_files_removed: int = 0
    repacked_packs: int = 0   # format v2: sparse packs whose reachable blobs were copied out
    resealed: int = 0         # --reencrypt: loose blobs and records sealed again under the current key epoch
    repacked_bytes: int = 0
    would_repack: int = 0     # dry run: packs a real run would repack
    seconds: float = 0.0
    # Why unreachable-looking space is held (explained, never changed by it): blobs no longer
    # reachable from the head but still within the grace period (stored or condemned too
    # recently), and when a gc can free them all; blobs only the older retained generations
    # (--keep-last) or live pins reach.
    grace_held: int = 0
    grace_held_bytes: int = 0
    grace_freed_after: float | None = None
    held_by_generations: int = 0
    held_by_generations_bytes: int = 0
    held_by_pins: int = 0
    held_by_pins_bytes: int = 0
    deleted_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("deleted_ids")
        if self.grace_freed_after is not None:  # RFC 3339, as every time in JSON
            d["grace_freed_after"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.grace_freed_after))
        return d


def check_options(grace: float, keep_last: int, dry_run: bool = False, force: bool = False) -> None:
    """A UsageError for options gc refuses (before anything is opened or committed)."""
    if grace < 0 or keep_last < 1:
        raise UsageError("--grace must be >= 0 and --keep-last >= 1")
    if grace < MIN_GRACE_WITHOUT_FORCE and not force and not dry_run:  # a dry run deletes nothing
        raise UsageError(f"a grace period under 1h ({grace:g}s) can delete blobs a running backup just "
                         "uploaded; pass --force if no writer can be running")


class Collector:
    def __init__(self, repo: Repository, grace: float = DEFAULT_GRACE, keep_last: int = DEFAULT_KEEP_LAST,
                 dry_run: bool = False, force: bool = False, progress: Callable[[str], None] | Meter | None = None,
                 repack_dead: float = DEFAULT_REPACK_DEAD, reencrypt: bool = False) -> None:
        check_options(grace, keep_last, dry_run, force)
        self.repo = repo
        # Encrypted repositories: repack every pack sealed under an older key epoch (spec §13.7).
        self.reencrypt = reencrypt and repo.store.suite is not None
        self.backend = repo.backend
        self.store = repo.store
        self.grace = grace
        self.keep_last = keep_last
        self.repack_dead = repack_dead
        self.dry_run = dry_run
        self.progress = as_meter(progress)
        self.report = GcReport(dry_run, grace, keep_last)
        self._unreachable: dict[str, tuple[int, float]] = {}  # blob -> (size, mtime), for the report
        self._now = 0.0
        self.lease: Lease | None = None
        # The mark's results the repack reads; dropped before the sweep, which walks anew.
        self._reach: Reachability | None = None
        self._listing: dict[str, tuple[int, float]] = {}

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def run(self) -> GcReport:
        return run_steps(self.steps())

    def steps(self) -> "Steps[GcReport]":
        """run() as steps: yields after taking the lease, before every root swap and after every
        delete (every batch's, where the backend deletes in batches), so tests can interleave
        writers and readers between any two of them."""
        started = time.monotonic()
        if not self.dry_run:
            self.lease = acquire_gc_lease(self.backend, monotonic=self.repo.monotonic)
        try:
            yield Step.LEASE
            root, _ = self.repo.read_root()
            if root.sweeping is not None and not self.dry_run:
                self.progress("finishing a sweep an earlier gc left unfinished")
                yield from self._sweep_announced(load_gcstate(self.store, root.sweeping))
                self.report.finished_abandoned_sweep = True
            condemned = yield from self._mark()
            if self.dry_run:
                self.report.would_repack = len(self._sparse_packs())
            else:
                yield from self._repack()
                if self.reencrypt:  # the loose blobs and the config, in place (the packs moved above)
                    self._check_lease()
                    self.report.resealed = reseal_in_place(self.repo).resealed
            # The sweep walks anew (§9.4): holding the mark's sets too would double its memory.
            self._reach, self._listing = None, {}
            now = self.backend.now()
            eligible = {i: t for i, t in condemned.items() if now - t >= self.grace}
            self._explain_grace(condemned, eligible)
            if self.dry_run:
                self.report.would_delete = len(eligible)
            elif eligible:
                yield from self._sweep(eligible)
            if not self.dry_run:
                self._cleanup()
        finally:
            if self.lease is not None:
                release_gc_lease(self.lease)
        self.report.seconds = round(time.monotonic() - started, 3)
        return self.report

    # ---- mark --------------------------------------------------------------------------

    def _mark(self) -> "Steps[dict[str, float]]":
        self.progress("marking reachable blobs")
        root, etag = self.repo.read_root()
        marks = StagedMarks(STAGE_REST + 1)
        reach = Reachability(self.repo, known_missing=self._known_damage(root), raw=marks)
        self._reach = reach
        pins = list_pins(self.backend)
        now = self.backend.now()
        gens, head_seen, gens_seen = self._walk_explained(reach, marks, root, pins, now)
        self.report.retained_generations = len(gens)
        self.progress("listing blobs")
        # (size, mtime) only: the listing's ObjectInfos would cost ~3x as much per pack
        self._listing = {i: (info.size, info.mtime) for i, info in self.store.list_objects()}
        listing = self._listing.items()
        self.report.blobs_total = len(listing)
        self.report.blobs_reachable = sum(1 for i, _ in listing if i in reach)
        previous = load_gcstate(self.store, root.condemned)
        candidates: dict[str, float] = {}
        young = 0
        self._unreachable.clear()
        self._now = now
        for blob_id, (size, mtime) in listing:
            if blob_id in reach:
                self._count_held(blob_id, size, head_seen, gens_seen)
                continue
            self._unreachable[blob_id] = (size, mtime)
            if mtime > now - self.grace:
                young += 1
                continue
            candidates[blob_id] = previous.get(blob_id, now)
        self.report.blobs_young = young
        self.report.newly_condemned = sum(1 for i in candidates if i not in previous)
        if self.dry_run:
            self.report.condemned = len(candidates)
            return candidates
        while True:
            self._check_lease()
            new_root = replace(root, condemned=write_gcstate(self.store, "condemned", candidates),
                               gc_epoch=root.gc_epoch + 1, write_id=new_write_id(), time=self.backend.now())
            yield Step.MARK_CAS
            if self.repo.swap_root(etag, new_root, creates_generation=False):
                break
            root, etag = self.repo.read_root()
            reach.walk_root(root, list_pins(self.backend), self.backend.now(), self.keep_last)
            candidates = {i: t for i, t in candidates.items() if i not in reach}
        self.report.condemned = len(candidates)
        return candidates

    def _walk_explained(self, reach: Reachability, marks: StagedMarks, root: Root, pins: list[PinState],
                        now: float) -> tuple[list[Generation], Container[str], Container[str]]:
        """reach.walk_root's walk (the same roots; the mark set is their union either way), in
        steps so the report can say what only the last keep_last generations and only pins
        hold: (generations, what the head reaches, what the newest keep_last reach). Raw blobs
        are told apart by the stage that marked them (no copy); the exact set of structured
        blobs is copied twice (FORMAT.md §12.7.7: that is the report's only extra memory), and
        the two extra scans of `_blobs` cost time, not memory."""
        held: dict[str, set[str]] = {}

        def note(i: int, gens: list[Generation]) -> None:
            if i == 0:
                held["head"] = set(reach.seen)
            if i == min(max(self.keep_last, 1), len(gens)) - 1:
                held["generations"] = set(reach.seen)

        gens = reach.walk_root(root, pins, now, self.keep_last, after_generation=note, mark=False)
        head_seen = UpToStage(held["head"], marks, STAGE_HEAD)
        gens_seen = UpToStage(held["generations"], marks, STAGE_KEPT)
        # format v2: the packs those reach count as held by them too; one scan of `_blobs` marks
        # the live packs and answers both
        kept = min(max(self.keep_last, 1), len(gens))
        head_packs, kept_packs = reach.mark_packs(reach.pack_generations, also=[(1, head_seen), (kept, gens_seen)])
        head_seen.exact |= {pack_member(p) for p in head_packs}
        gens_seen.exact |= {pack_member(p) for p in kept_packs}
        return gens, head_seen, gens_seen

    def _count_held(self, blob_id: str, size: int, head_seen: Container[str], gens_seen: Container[str]) -> None:
        if blob_id in head_seen:
            return
        if blob_id in gens_seen:
            self.report.held_by_generations += 1
            self.report.held_by_generations_bytes += size
        else:  # pins (or the gc state itself, a few small blobs)
            self.report.held_by_pins += 1
            self.report.held_by_pins_bytes += size

    def _explain_grace(self, condemned: dict[str, float], eligible: dict[str, float]) -> None:
        """Count the unreachable blobs the grace period holds, and when a gc can free them all:
        a blob stored within the grace period is condemned by a gc after mtime + grace, then
        deleted by a gc once condemned for the grace period."""
        until: list[float] = []
        for blob_id, (size, mtime) in self._unreachable.items():
            if blob_id in eligible:
                continue
            t = condemned.get(blob_id)
            if t is None and mtime <= self._now - self.grace:
                continue  # old, not condemned: a concurrent commit took it back
            until.append(t + self.grace if t is not None else mtime + 2 * self.grace)
            self.report.grace_held += 1
            self.report.grace_held_bytes += size
        self.report.grace_freed_after = max(until) if until else None

    # ---- repack (format v2, §12.7.4) -----------------------------------------------------

    @property
    def _marked(self) -> Reachability:
        assert self._reach is not None, "the mark has not run, or its results were dropped"
        return self._reach

    def _sparse_packs(self) -> set[str]:
        """Live packs, older than the grace period, of which the head's reachable blobs fill
        less than `1 - repack_dead` of the blob bytes their TOC lists (packrules.decide). The
        stored size filters first, so only packs that may qualify cost a TOC read."""
        now = self.backend.now()
        out = set()
        for member, (size, mtime) in self._listing.items():
            if not is_pack_member(member):
                continue
            pack = member[len(PACK_MEMBER):]
            live = self._marked.live_bytes.get(pack, 0)
            if live and self.reencrypt and self._old_epoch(pack, size):
                out.add(pack)
                continue
            if not live or self._decide(pack, mtime, size, live, now) is not PackDecision.REPACK:
                continue
            body = sum(i.location.length for i in self.repo.store.read_toc(pack, size)[1])
            if self._decide(pack, mtime, body, live, now) is PackDecision.REPACK:
                out.add(pack)
        return out

    def _old_epoch(self, pack: str, size: int) -> bool:
        suite = self.repo.store.suite
        assert suite is not None
        epoch = toc_epoch(self.backend, pack, size)
        return epoch is not None and epoch != suite.current

    def _decide(self, pack: str, mtime: float, body: int, live: int, now: float) -> PackDecision:
        facts = PackFacts(mtime, pack_member(pack) in self._marked, body, live)
        return decide(facts, now, self.grace, 1 - self.repack_dead)

    def _repack(self) -> "Steps[None]":
        """Copy the reachable blobs the head locates in sparse packs into new packs, and move
        their locations in one commit (each move conditional on the entry being unchanged); the
        old packs stay until no kept generation locates anything in them, then go as garbage."""
        sparse = self._sparse_packs()
        if not sparse:
            return
        reach = self._marked
        self._check_lease()
        txn = self.repo.transaction("gc: repack")
        try:
            moved = 0
            for n, e in enumerate(txn.base.list(LOCATIONS_NAMESPACE)):
                if n % 256 == 0:
                    self._check_lease()
                loc = Location.from_value(e.value or b"", e.key)
                if loc.pack not in sparse:
                    continue
                if e.key not in reach:
                    # Dead at the mark, but its location stays: a writer may dedup against it and
                    # make it reachable before this commit lands (its entry unchanged), so removing
                    # it here could publish a reachable blob without a location. It goes with its
                    # pack, once nothing keeps that (the sweep's commit forgets deleted packs).
                    continue
                new = txn.repack_blob(e.key, loc, reseal=self.reencrypt)
                txn.put_if_value(LOCATIONS_NAMESPACE, e.key, new.to_value(), e.value or b"")
                moved += loc.length
            self.report.repacked_packs = len(sparse)
            self.report.repacked_bytes = moved
            yield Step.REPACK_COMMIT
            txn.commit()
        except BaseException:
            txn.abort()
            raise

    # ---- sweep -------------------------------------------------------------------------

    def _sweep(self, eligible: dict[str, float]) -> "Steps[None]":
        """Announce the sweep set in the root (removing it from condemned), then delete."""
        root, etag = self.repo.read_root()
        while True:
            self._check_lease()
            condemned = load_gcstate(self.store, root.condemned)
            chosen = {i: t for i, t in eligible.items() if i in condemned}  # committers may have rescued some
            self.report.rescued += len(eligible) - len(chosen)
            eligible = chosen
            if not chosen:
                return
            rest = {i: t for i, t in condemned.items() if i not in chosen}
            new_root = replace(root, condemned=write_gcstate(self.store, "condemned", rest),
                               sweeping=write_gcstate(self.store, "sweeping", chosen),
                               gc_epoch=root.gc_epoch + 1, write_id=new_write_id(), time=self.backend.now())
            yield Step.ANNOUNCE_CAS
            if self.repo.swap_root(etag, new_root, creates_generation=False):
                break
            root, etag = self.repo.read_root()
        yield from self._sweep_announced(chosen)

    def _sweep_announced(self, sweeping: dict[str, float]) -> "Steps[None]":
        # Re-read the root and the pins *after* the announcement: anything that now covers a
        # blob in the set (a new pin, a new commit) takes it out of the set.
        yield Step.ANNOUNCED
        root, _ = self.repo.read_root()
        pins: list[PinState] = list_pins(self.backend)
        reach = Reachability(self.repo, known_missing=self._known_damage(root), raw=StagedMarks(STAGE_REST + 1))
        gens = reach.walk_root(replace(root, sweeping=None), pins, self.backend.now(), self.keep_last)
        doomed = sorted(i for i in sweeping if i not in reach)
        floor = min(g.seq for g in gens)
        del reach, gens  # the deletes and the prune commit below need none of the walk's sets
        if doomed:
            self._raise_floor(floor)
        self.report.rescued += len(sweeping) - len(doomed)
        self.progress.phase("deleting blobs", total=len(doomed), unit="blobs")
        sizes: dict[str, int] = {}
        stored = 0
        for blob_id, info in self.store.list_objects() if doomed else ():
            stored += 1
            if blob_id in sweeping:
                sizes[blob_id] = info.size
        yield Step.PLANNED
        yield from self._delete_batches(doomed, sizes, stored)
        yield from self._prune_locations({m[len(PACK_MEMBER):] for m in self.report.deleted_ids if is_pack_member(m)})
        while True:
            root, etag = self.repo.read_root()
            new_root = replace(root, sweeping=None, gc_epoch=root.gc_epoch + 1, write_id=new_write_id(),
                               retain_floor=max(root.retain_floor, floor), time=self.backend.now())
            yield Step.CLEAR_CAS
            if self.repo.swap_root(etag, new_root, creates_generation=False):
                return

    def _raise_floor(self, floor: int) -> None:
        """§9.4 step 5: publish the floor this sweep keeps before its first delete.

        What the walk above did not retain (generations below `floor`, and what only they
        reach) may be gone from the first delete on, so from then on every gc must know it is
        given up: a pin on such a generation, written after the walk read the pins, belongs to
        a reader that will refuse it (§8.1), and a gc that honoured it would walk into what this
        sweep deleted and stop. Step 6 alone would publish it too late if this gc dies
        mid-sweep: the gc that finishes the sweep would then honour the late pin. A GC
        transition like the others (gc_epoch + 1, so a lost reply is resolved by the epoch)."""
        while True:
            root, etag = self.repo.read_root()
            if root.retain_floor >= floor:
                return
            self._check_lease()
            new_root = replace(root, retain_floor=floor, gc_epoch=root.gc_epoch + 1, write_id=new_write_id(),
                               time=self.backend.now())
            if self.repo.swap_root(etag, new_root, creates_generation=False):
                return

    def _prune_locations(self, deleted_packs: set[str]) -> "Steps[None]":
        """§12.7.5: remove the head's `_blobs` entries that locate blobs in packs just deleted, so no
        writer dedups against them and fails. Each removal holds only while the entry still
        names that pack when the commit rebases (a writer may have stored the blob anew): the
        transaction decides them by one pass over the head, staging nothing per entry."""
        if not deleted_packs:
            return
        self._check_lease()
        txn = self.repo.transaction("gc: forget the locations of deleted packs")
        # Nothing to forget (their blobs were moved, or forgotten already): no empty commit.
        # The pass stops at the first stale entry, which is usually in the first page.
        if not any(e.value is not None and Location.from_value(e.value, e.key).pack in deleted_packs
                   for e in txn.base.list(LOCATIONS_NAMESPACE)):
            txn.abort()
            return
        txn.forget_locations_in(deleted_packs)
        # Its pages may equal pages this sweep just deleted (a `_blobs` leaf as it was before
        # the dead blobs were added): they are written anew, and the barrier must not make this
        # commit wait for the sweep it is part of.
        txn.after_own_sweep = True
        yield Step.PRUNE_COMMIT
        txn.commit()

    def _known_damage(self, root: Root) -> set[str]:
        """Blobs `repair blobs` removed, as the head records them: known damage, not a reason to stop."""
        return known_blobs_of(self.repo, self.repo.load_generation(root.generation))

    def _delete_batches(self, doomed: list[str], sizes: dict[str, int], stored: int) -> "Steps[None]":
        """Delete `doomed` a batch at a time (§9.4 step 5): spare the re-uploaded, check the
        lease, delete; one request a batch where the backend can, else one delete (and step) a
        blob. `stored` (how many blobs the repository holds) prices a listing against stats."""
        batch_size = delete_batch_size(self.backend)
        batched = isinstance(self.backend, BatchDeleter)
        for start in range(0, len(doomed), batch_size):
            batch = self._not_recreated(doomed[start:start + batch_size], stored)
            self._check_lease()  # after the stats, right before the deletes: still the only gc
            for part in [batch] if batched else [[i] for i in batch]:
                self.store.delete_many(part)
                self.progress.add(files=len(part), nbytes=sum(sizes.get(i, 0) for i in part))
                self.report.deleted += len(part)
                self.report.deleted_bytes += sum(sizes.get(i, 0) for i in part)
                self.report.deleted_ids += part
                yield Step.DELETED

    def _not_recreated(self, batch: list[str], stored: int) -> list[str]:
        """The batch without the blobs stored again within the grace period (deleted by an
        earlier, interrupted sweep and uploaded anew by a writer): those are young, so they are
        spared (§9.4 step 5). Their mtimes come from one stat per blob, or on an object store
        from one listing of blobs/ and packs/ when that takes fewer requests, made just before the
        batch's delete."""
        workers = list_concurrency(self.backend)
        if workers > 1 and listing_rounds(stored, workers) < len(batch) / workers:
            wanted = set(batch)
            listed = {i: info for i, info in self.store.list_objects() if i in wanted}
            infos = [listed.get(i) for i in batch]
        else:
            infos = list(ordered_map(self.store.stat_object, batch, workers, 2 * workers, name="casbackup-gc-stat"))
        cutoff = self.backend.now() - self.grace
        keep = [i for i, info in zip(batch, infos) if info is None or info.mtime <= cutoff]
        self.report.rescued += len(batch) - len(keep)
        return keep

    # ---- housekeeping ------------------------------------------------------------------

    def _cleanup(self) -> None:
        now = self.backend.now()
        for pin in list_pins(self.backend):
            if not pin.live(now):
                self.backend.delete(pin.key)
                self.report.expired_pins_removed += 1
        for info in self.backend.list(SELFTEST_PREFIX):
            if info.mtime < now - TEMP_FILE_AGE:
                self.backend.delete(info.key)
        if isinstance(self.backend, TempFileCleaner):  # an optional ability (local disk)
            self.report.temp_files_removed = self.backend.remove_stale_temp_files(max(self.grace, TEMP_FILE_AGE))


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def summary(report: GcReport) -> str:
    """gc's one-line report."""
    verb = "would delete" if report.dry_run else "deleted"
    count = report.would_delete if report.dry_run else report.deleted
    return (f"{report.blobs_total} blobs, {report.blobs_reachable} reachable, {report.condemned} condemned "
            f"({report.newly_condemned} new), {report.blobs_young} within grace; {verb} {count}"
            + ("" if report.dry_run else f" ({report.deleted_bytes} bytes)")
            + (f"; {report.rescued} rescued by concurrent use" if report.rescued else "")
            + (f"; removed {report.expired_pins_removed} expired pins" if report.expired_pins_removed else ""))


def explain(report: GcReport) -> list[str]:
    """Why space is still held after this gc, one line per reason (empty when nothing is held)."""
    lines = []
    if report.grace_held:
        after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.grace_freed_after or 0))
        lines.append(f"{report.grace_held} blobs ({_mib(report.grace_held_bytes)}) within the grace period "
                     f"({report.grace_seconds:g}s), freed by gc runs after {after}")
    if report.held_by_generations:
        lines.append(f"{report.held_by_generations} blobs ({_mib(report.held_by_generations_bytes)}) held by the "
                     f"last {report.keep_last} generations (gc --keep-last {report.keep_last}); "
                     "they become collectable once newer commits push them out")
    if report.held_by_pins:
        lines.append(f"{report.held_by_pins} blobs ({_mib(report.held_by_pins_bytes)}) held by live pins "
                     "(running readers; see 'casbackup pins')")
    return lines


def collect(repo: Repository, **kwargs: object) -> GcReport:
    return Collector(repo, **kwargs).run()  # type: ignore[arg-type]


__all__ = ["Collector", "GcReport", "collect", "explain", "summary", "check_options", "DEFAULT_GRACE", "DEFAULT_KEEP_LAST", "BlobCorrupt", "Root"]
