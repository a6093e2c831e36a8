"""The two walks every whole-repository reader shares: the generation chain, and what refs reach.

gc (spec/FORMAT.md §9.1), check (§10), repair (§11) and `Repository.log` all walk the same
two graphs. The walks here hold no policy: what a missing or corrupt blob means (gc stops,
check records a failure, history below the retain floor is gone as promised) is the caller's,
given as hooks. This module sits below the repository (it needs only a loader or a reader
function), so the repository's own log can use the chain walk too.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from .codec import RAW_TYPES, Ref
from .errors import BlobCorrupt, BlobMissing, UnsupportedFormat
from .records import Generation

# A generation blob is unreadable: (its id, the exception). The walk ends after the hook.
OnCorruptGeneration = Callable[[str, Exception], None]
# A generation is missing: (its id, the generation naming it as parent or None for the start,
# whether it lies below the retain floor, the exception). The walk ends after the hook.
OnMissingGeneration = Callable[[str, "Generation | None", bool, BlobMissing], None]

_UNREADABLE = (BlobCorrupt, UnsupportedFormat)


def below_floor(seq: int, retain_floor: int) -> bool:
    """The one retain_floor rule (§9.1, §9.4 step 6): gc keeps every generation of the head's
    chain with seq >= retain_floor; one below it may have been collected, as promised."""
    return seq < retain_floor


def chain(load: Callable[[str], Generation], start: Generation | str, retain_floor: int, *,
          on_missing: OnMissingGeneration | None = None, on_corrupt: OnCorruptGeneration | None = None,
          verify_links: bool = False) -> Iterator[Generation]:
    """Generations newest first: `start` (a loaded generation, or an id to load), then its
    parents. A missing or unreadable generation goes to its hook and ends the walk; without
    the hook it raises. With verify_links, a parent whose seq is not one less than its
    child's is corrupt (reported against the child, §6.3)."""
    gen = start if isinstance(start, Generation) else None
    gen_id = start.id if isinstance(start, Generation) else start
    child: Generation | None = None
    while True:
        if gen is None:
            try:
                gen = load(gen_id)
            except BlobMissing as exc:
                if on_missing is None:
                    raise
                on_missing(gen_id, child, child is not None and below_floor(child.seq - 1, retain_floor), exc)
                return
            except _UNREADABLE as exc:
                if on_corrupt is None:
                    raise
                on_corrupt(gen_id, exc)
                return
            if verify_links and child is not None and gen.seq != child.seq - 1:
                bad = BlobCorrupt(child.id, f"generation {child.seq} names a parent with seq {gen.seq}")
                if on_corrupt is None:
                    raise bad
                on_corrupt(child.id, bad)
                return
        yield gen
        if gen.parent is None:
            return
        child, gen_id, gen = gen, gen.parent, None


# (ref, generation) -> (refs, body) of a structured blob; raises BlobMissing / BlobCorrupt.
ReadStructured = Callable[[Ref, "str | None"], "tuple[list[Ref], Any]"]
# Called once per blob before it is read; False: treat it as a leaf (neither read nor descended).
OnBlob = Callable[[Ref], "bool | None"]
# Reads (and so verifies) a raw blob, or checks that it exists; raises like ReadStructured.
OnRaw = Callable[[Ref, "str | None"], None]
# A structured blob's body, after its refs are queued; raises BlobCorrupt to report it corrupt.
OnBody = Callable[[Ref, "list[Ref]", Any, "str | None"], None]
# Takes a raw blob's ID instead of the visited set (gc's compact mark); may see an ID more than once.
RawSink = Callable[[str], None]
# A blob the walk could not read: (ref, exception, owner given to walk()).
OnMissing = Callable[[Ref, BlobMissing, Any], None]
OnCorrupt = Callable[[Ref, Exception, Any], None]


class Walker:
    """Everything reachable through `refs`, each blob visited once across all walk() calls (a
    shared subtree, or a later head, only costs what is new). Raw blobs are leaves, read only
    through `on_raw`. A missing or corrupt blob goes to its hook and the walk goes on (its
    subtree cannot be walked); without the hook it raises. A structured blob whose body fails
    `on_body` is still descended: what it names is walked and judged on its own.

    With `raw_sink` (gc's mark at scale, FORMAT.md §12.7.7), raw blobs never enter `seen`: each
    raw ref a structured blob names (or a root) goes to the sink, once per naming blob, and
    neither `on_blob` nor `on_raw` sees it; `seen` then holds structured blobs only, so its
    size grows with pages, trees and files, not with chunks."""

    def __init__(self, read: ReadStructured, *, on_blob: OnBlob | None = None, on_raw: OnRaw | None = None,
                 on_body: OnBody | None = None, on_missing: OnMissing | None = None,
                 on_corrupt: OnCorrupt | None = None, raw_sink: RawSink | None = None) -> None:
        self.seen: set[str] = set()
        self._raw_sink = raw_sink
        self._read = read
        self._on_blob = on_blob
        self._on_raw = on_raw
        self._on_body = on_body
        self._on_missing = on_missing
        self._on_corrupt = on_corrupt

    def walk(self, roots: Iterable[Ref], generation: str | None = None, owner: Any = None) -> None:
        """Visit what `roots` reach (depth first). `generation` is passed to the reads (for
        their messages); `owner` to the missing/corrupt hooks, to say whose blob it was."""
        seen = self.seen
        sink = self._raw_sink
        stack = [r for r in roots if r.id not in seen]
        if sink is not None:
            for r in stack:
                if r.type in RAW_TYPES:
                    sink(r.id)
            stack = [r for r in stack if r.type not in RAW_TYPES]
        while stack:
            ref = stack.pop()
            if ref.id in seen:
                continue
            seen.add(ref.id)
            if self._on_blob is not None and self._on_blob(ref) is False:
                continue
            try:
                if ref.type in RAW_TYPES:
                    if self._on_raw is not None:
                        self._on_raw(ref, generation)
                    continue
                refs, body = self._read(ref, generation)
                if sink is None:
                    stack.extend(r for r in refs if r.id not in seen)
                else:
                    for r in refs:
                        if r.type in RAW_TYPES:
                            sink(r.id)
                        elif r.id not in seen:
                            stack.append(r)
                if self._on_body is not None:
                    self._on_body(ref, refs, body, generation)
            except BlobMissing as exc:
                if self._on_missing is None:
                    raise
                self._on_missing(ref, exc, owner)
            except _UNREADABLE as exc:
                if self._on_corrupt is None:
                    raise
                self._on_corrupt(ref, exc, owner)
