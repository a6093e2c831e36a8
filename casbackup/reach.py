"""Reachability: which generations GC must keep, and every blob they reach (spec/FORMAT.md §9.1).

gc's policy over the shared walks of walk.py: a missing or corrupt blob stops gc, except
history below the retain floor, blobs `repair blobs` removed on purpose, and what a pin names
that was collected before the pin was written. A live pin on a generation below the root's
retain floor is not honoured at all (`honoured`): no validated reader holds one (§9.6).
"""
from __future__ import annotations

from typing import Any, Callable, Container, Iterable, Protocol, Sequence

from .codec import BlobType, Ref
from .errors import BlobCorrupt, BlobMissing
from .packs import LOCATIONS_NAMESPACE, PACKED_TYPES, Location
from .pins import PinState
from .records import Generation, Root
from .repository import Repository
from .store import pack_member
from .structmap import StructuredLocations, scan_after
from .walk import Walker, chain

# The owner a pin's walk passes: what it names may be gone (see walk_root).
_PIN = "pin"

# Walk stages of the raw marks (markset.StagedMarks): what the head reaches, what the newest
# keep_last generations reach, and the rest (older retained generations, pins, gc state).
STAGE_HEAD, STAGE_KEPT, STAGE_REST = 0, 1, 2


class RawMarks(Protocol):
    """Where the mark records raw blobs, by walk stage (gc passes a markset.StagedMarks)."""

    def add(self, blob_id: str, stage: int) -> None: ...

    def __contains__(self, blob_id: object) -> bool: ...


def honoured(pin: PinState, root: Root, now: float) -> bool:
    """Whether gc keeps what `pin` names (FORMAT.md §9.1): it is live, and its generation is not
    below the root's retain floor. An unreadable pin (no record) counts, as every generation
    gc still keeps, until it expires (fail safe).

    A live pin below the floor was written after the sweep that raised the floor past it had
    read the pins: a reader that resolved the root before that sweep and stalled before
    pinning. Its generation was not retained by that sweep and may be partly deleted, and its
    reader cannot pass validation (§8.1: the head changed and gc moved between its two root
    reads; it also refuses a generation below the floor outright), so it never reads under the
    pin. A validated reader's pin never falls below the floor: a sweep that read the pins after
    the pin was written retained it, and one that read them before raised the floor no higher
    than the head the reader then resolved (§9.6). Old pins need nothing new: the rule reads
    only the pin's `seq` and the root's `retain_floor`."""
    if not pin.live(now):
        return False
    return pin.record is None or pin.record.seq >= root.retain_floor


class Reachability:
    """Incremental mark set: walking a later head only visits blobs not seen before.

    FORMAT.md §12.7.7: given `raw` (gc: a markset.StagedMarks, 8 bytes per blob), `seen` is the
    exact set of structured blobs walked (each is read once) and of live packs (as pack
    members); raw blobs (CHUNK, VALUE), which the walk never reads, are recorded in `raw`, tagged
    with the walk stage. Without it, every reached blob is in `seen`. Test reachability with
    `blob_id in reach`: a prefix collision makes a dead raw blob look reached, which only keeps
    it (safe)."""

    def __init__(self, repo: Repository, on_blob: Callable[[Ref], None] | None = None,
                 known_missing: Iterable[str] = (), raw: RawMarks | None = None) -> None:
        self.repo = repo
        self.raw = raw
        self.stage = STAGE_HEAD
        self._walker = Walker(self._read, on_blob=on_blob, on_missing=self._missing,
                              raw_sink=self._reached_raw if raw is not None else None)
        # The generation being walked: how many of its blobs were located by descent, and once
        # that passes structmap.scan_after, its structured locations from one scan (one
        # generation's at a time: a walk finishes one generation before the next).
        self._located_gen: str | None = None
        self._descents = self._scan_after = 0
        self._map: StructuredLocations | None = None
        self.seen: set[str] = self._walker.seen
        # Blobs `repair blobs` removed on purpose (the head's _damage namespace): known damage,
        # whose subtrees are gone; walking past them must not stop gc.
        self.known_missing = set(known_missing)
        self.live_bytes: dict[str, int] = {}  # pack -> bytes of reachable blobs the head locates in it
        self.pack_generations: list[Generation] = []  # whose locations keep packs live (walk_root)

    def _read(self, ref: Ref, generation: str | None) -> tuple[list[Ref], Any]:
        store = self.repo.store
        if generation is None or ref.type not in PACKED_TYPES:
            return store.get_structured(ref, generation)
        if generation != self._located_gen:
            self._located_gen, self._descents, self._map = generation, 0, None
            self._scan_after = scan_after(self.repo.load_generation(generation))
        if self._map is None:
            self._descents += 1
            if self._descents > self._scan_after:
                self._map = StructuredLocations(self.repo, self.repo.load_generation(generation))
        known = self._map.get(ref.id) if self._map is not None else None
        return store.get_structured(ref, generation, known=known)

    def _reached_raw(self, blob_id: str) -> None:
        assert self.raw is not None
        self.raw.add(blob_id, self.stage)

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self.seen or (self.raw is not None and blob_id in self.raw)

    def _missing(self, ref: Ref, exc: BlobMissing, owner: Any) -> None:
        if owner != _PIN and ref.id not in self.known_missing:
            raise exc

    def retained_generations(self, root: Root, pins: Iterable[PinState], now: float, keep_last: int) -> list[Generation]:
        """Head back to the oldest honoured pin, and at least `keep_last` generations, but never
        below the root's retain floor: what lies below it was given up by an earlier sweep and
        may be partly deleted (a young generation blob whose older pages are gone)."""
        live = [p for p in pins if honoured(p, root, now)]
        oldest_pin = min((p.record.seq if p.record else 0 for p in live), default=None)
        gens: list[Generation] = []

        def missing(gen_id: str, child: Generation | None, below: bool, exc: BlobMissing) -> None:
            if below:
                return  # below the floor: already collected, as promised
            if len(gens) >= keep_last and oldest_pin is not None:
                # Walking down towards a pin on a generation that was already collected: the
                # pin was written too late and its reader's validation refuses it.
                return
            raise exc

        for gen in chain(self.repo.load_generation, root.generation, root.retain_floor, on_missing=missing):
            gens.append(gen)
            if len(gens) >= keep_last and (oldest_pin is None or gen.seq <= oldest_pin):
                break
            if gen.seq <= root.retain_floor:
                break  # the floor: nothing older is kept (repair root sets it to the oldest complete one)
        return gens

    def walk(self, roots: Iterable[Ref], generation: str | None = None, tolerate_missing: bool = False) -> None:
        """Mark everything reachable from `roots`. With tolerate_missing, a missing blob is
        skipped (its subtree cannot be walked) instead of stopping the walk."""
        self._walker.walk(roots, generation, _PIN if tolerate_missing else None)

    def walk_root(self, root: Root, pins: Iterable[PinState], now: float, keep_last: int,
                  after_generation: Callable[[int, list[Generation]], None] | None = None,
                  mark: bool = True) -> list[Generation]:
        """Mark what gc keeps; `after_generation(i, gens)` runs once gens[i] is walked (gc's report
        reads `seen` there to say what only older generations or pins hold). Raw marks are tagged
        STAGE_HEAD for the head, STAGE_KEPT for the rest of the newest keep_last, STAGE_REST after.
        mark=False leaves the live packs to the caller (`mark_packs(self.pack_generations)`)."""
        pins = list(pins)
        gens = self.retained_generations(root, pins, now, keep_last)
        kept = min(max(keep_last, 1), len(gens))
        for i, gen in enumerate(gens):
            self.stage = STAGE_HEAD if i == 0 else STAGE_KEPT if i < kept else STAGE_REST
            self.walk([Ref(BlobType.GENERATION, gen.id)], gen.id)
            if after_generation is not None:
                after_generation(i, gens)
        self.stage = STAGE_REST
        for pin in pins:
            if honoured(pin, root, now) and pin.record is not None:
                # A pin can name a generation collected before the pin was written (a reader
                # that lost the race; its validation refuses the pin): that must not stop GC.
                self.walk([Ref(BlobType.GENERATION, pin.record.generation)], pin.record.generation,
                          tolerate_missing=True)
        self.walk([Ref(BlobType.GCSTATE, i) for i in (root.condemned, root.sweeping) if i])
        self.pack_generations = gens + [g for g in (self._pinned_generation(p, root, now) for p in pins)
                                        if g is not None]
        if mark:
            self.mark_packs(self.pack_generations)
        return gens

    def _pinned_generation(self, pin: PinState, root: Root, now: float) -> Generation | None:
        if not honoured(pin, root, now) or pin.record is None:
            return None
        try:
            return self.repo.load_generation(pin.record.generation)
        except BlobMissing:
            return None  # collected before the pin was written (see walk_root)

    def mark_packs(self, gens: list[Generation],
                   also: Sequence[tuple[int, Container[str]]] = ()) -> list[dict[str, int]]:
        """Live packs (FORMAT.md §12.7.1), added to `seen` as pack members; `live_bytes` tallies
        what the head (the first generation) locates there. `also`: more (generations, reached)
        tiers answered by the same scan (see live_packs), returned in order."""
        tiers = live_packs_tiers(self.repo, gens, [(len(gens), self), *also])
        self.live_bytes = tiers[0]
        self.seen.update(pack_member(p) for p in self.live_bytes)
        return tiers[1:]


def live_packs(repo: Repository, gens: Sequence[Generation], reached: Container[str]) -> dict[str, int]:
    """Packs some generation of `gens` locates a blob of `reached` in, with the bytes of those
    blobs that the first generation locates there (live_packs_tiers of one tier)."""
    return live_packs_tiers(repo, gens, [(len(gens), reached)])[0]


def live_packs_tiers(repo: Repository, gens: Sequence[Generation],
                     tiers: Sequence[tuple[int, Container[str]]]) -> list[dict[str, int]]:
    """For each tier (n, reached): the packs one of the first n generations of `gens` locates a
    blob of `reached` in, with the bytes of those blobs that gens[0] locates there. One scan
    for all tiers, each distinct index page once: a page first met in gens[i] counts for the
    tiers with n > i (a page shared with a newer generation is met there first, and counts for
    every tier that includes it). Memory is per page and per pack: the entries stream past and
    are tested one at a time."""
    seen_pages: set[str] = set()
    out: list[dict[str, int]] = [{} for _ in tiers]
    for n, gen in enumerate(gens):
        active = [(live, reached) for (count, reached), live in zip(tiers, out) if n < count]
        if not active:
            break
        for e in repo.index.scan_namespace(gen.index, LOCATIONS_NAMESPACE, gen.id, seen_pages):
            loc: Location | None = None
            for live, reached in active:
                if e.key not in reached or e.value is None:
                    continue
                if loc is None:
                    try:
                        loc = Location.from_value(e.value, e.key)
                    except BlobCorrupt as exc:
                        raise BlobCorrupt(e.key, exc.reason, gen.id) from None
                live[loc.pack] = live.get(loc.pack, 0) + (loc.length if n == 0 else 0)
    return out
