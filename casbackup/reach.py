"""Reachability: which generations GC must keep, and every blob they reach (spec/FORMAT.md §9.1)."""
from __future__ import annotations

from typing import Callable, Iterable

from .codec import RAW_TYPES, BlobType, Ref
from .errors import BlobMissing
from .pins import PinState
from .records import Generation, Root
from .repository import Repository


class Reachability:
    """Incremental mark set: walking a later head only visits blobs not seen before."""

    def __init__(self, repo: Repository, on_blob: Callable[[Ref], None] | None = None,
                 known_missing: Iterable[str] = ()) -> None:
        self.repo = repo
        self.seen: set[str] = set()
        self._on_blob = on_blob
        # Blobs `repair blobs` removed on purpose (the head's _damage namespace): known damage,
        # whose subtrees are gone; walking past them must not stop gc.
        self.known_missing = set(known_missing)

    def retained_generations(self, root: Root, pins: Iterable[PinState], now: float, keep_last: int) -> list[Generation]:
        """Head back to the oldest live pin, and at least `keep_last` generations."""
        live = [p for p in pins if p.live(now)]
        oldest_pin = min((p.record.seq if p.record else 0 for p in live), default=None)
        gens: list[Generation] = []
        gen_id: str | None = root.generation
        while gen_id is not None:
            try:
                gen = self.repo.load_generation(gen_id)
            except BlobMissing:
                if gens and gens[-1].seq - 1 < root.retain_floor:
                    break  # below the floor: already collected, as promised
                if len(gens) >= keep_last and oldest_pin is not None:
                    # Walking down towards a pin on a generation that was already collected: the
                    # pin was written too late and its reader's validation refuses it.
                    break
                raise
            gens.append(gen)
            enough = len(gens) >= keep_last
            if enough and (oldest_pin is None or gen.seq <= oldest_pin):
                break
            gen_id = gen.parent
        return gens

    def walk(self, roots: Iterable[Ref], generation: str | None = None, tolerate_missing: bool = False) -> None:
        """Mark everything reachable from `roots`. With tolerate_missing, a missing blob is
        skipped (its subtree cannot be walked) instead of stopping the walk."""
        stack = [r for r in roots if r.id not in self.seen]
        while stack:
            ref = stack.pop()
            if ref.id in self.seen:
                continue
            self.seen.add(ref.id)
            if self._on_blob is not None:
                self._on_blob(ref)
            if ref.type in RAW_TYPES:
                continue
            try:
                refs, _ = self.repo.store.get_structured(ref, generation)
            except BlobMissing:
                if not tolerate_missing and ref.id not in self.known_missing:
                    raise
                continue
            stack.extend(r for r in refs if r.id not in self.seen)

    def walk_root(self, root: Root, pins: Iterable[PinState], now: float, keep_last: int) -> list[Generation]:
        pins = list(pins)
        gens = self.retained_generations(root, pins, now, keep_last)
        for gen in gens:
            self.walk([Ref(BlobType.GENERATION, gen.id)], gen.id)
        for pin in pins:
            if pin.live(now) and pin.record is not None:
                # A pin can name a generation collected before the pin was written (a reader
                # that lost the race; its validation refuses the pin): that must not stop GC.
                self.walk([Ref(BlobType.GENERATION, pin.record.generation)], pin.record.generation,
                          tolerate_missing=True)
        self.walk([Ref(BlobType.GCSTATE, i) for i in (root.condemned, root.sweeping) if i])
        return gens
