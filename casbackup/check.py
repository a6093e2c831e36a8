"""fsck: walk the root, then reachability, then (with read_data) every blob's hash (spec §10)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from .codec import RAW_TYPES, BlobType, Ref
from .errors import BlobCorrupt, BlobMissing, UnsupportedFormat
from .gcstate import load_gcstate
from .pins import list_pins
from .repository import Repository


@dataclass
class Problem:
    blob: str
    generation: str | None
    reason: str


@dataclass
class CheckReport:
    head_seq: int = 0
    generations_checked: int = 0
    blobs_reachable: int = 0
    blobs_read: int = 0
    blobs_stored: int = 0
    dangling: list[Problem] = field(default_factory=list)
    corrupt: list[Problem] = field(default_factory=list)
    orphans: int = 0
    orphan_bytes: int = 0
    live_pins: int = 0
    expired_pins: list[str] = field(default_factory=list)
    unreadable_pins: list[str] = field(default_factory=list)
    history_collected_below_seq: int | None = None

    @property
    def ok(self) -> bool:
        return not self.dangling and not self.corrupt

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def check(repo: Repository, read_data: bool = False, progress: Callable[[str], None] | None = None) -> CheckReport:
    say = progress or (lambda _m: None)
    report = CheckReport()
    repo.store.clear_cache()
    root, _ = repo.read_root()
    report.head_seq = root.seq
    say("listing blobs")
    stored = {i: info.size for i, info in repo.store.list()}
    report.blobs_stored = len(stored)
    seen: set[str] = set()

    def visit(start: Ref, generation: str | None) -> None:
        stack = [start]
        while stack:
            ref = stack.pop()
            if ref.id in seen:
                continue
            seen.add(ref.id)
            if ref.id not in stored:
                report.dangling.append(Problem(ref.id, generation, f"{ref.type.name} blob is missing"))
                continue
            if ref.type in RAW_TYPES and not read_data:
                continue
            try:
                if ref.type in RAW_TYPES:
                    repo.store.get(ref, generation)
                else:
                    refs, _ = repo.store.get_structured(ref, generation)
                    stack.extend(refs)
                report.blobs_read += 1
            except BlobMissing:
                report.dangling.append(Problem(ref.id, generation, f"{ref.type.name} blob vanished during check"))
            except (BlobCorrupt, UnsupportedFormat) as exc:
                report.corrupt.append(Problem(ref.id, generation, getattr(exc, "reason", str(exc))))

    say("walking generations")
    gen_id: str | None = root.generation
    while gen_id is not None:
        if gen_id not in stored:
            if report.generations_checked and report.history_collected_below_seq is not None:
                break
            report.dangling.append(Problem(gen_id, gen_id, "generation is missing"))
            break
        try:
            gen = repo.load_generation(gen_id)
        except (BlobCorrupt, UnsupportedFormat) as exc:
            report.corrupt.append(Problem(gen_id, gen_id, getattr(exc, "reason", str(exc))))
            break
        visit(Ref(BlobType.GENERATION, gen.id), gen.id)
        report.generations_checked += 1
        if gen.parent and gen.seq <= root.retain_floor and gen.parent not in stored:
            report.history_collected_below_seq = gen.seq
            break
        gen_id = gen.parent

    now = repo.backend.now()
    for pin in list_pins(repo.backend):
        if pin.record is None:
            report.unreadable_pins.append(pin.key)
        elif not pin.live(now):
            report.expired_pins.append(pin.key)
        else:
            report.live_pins += 1
            visit(Ref(BlobType.GENERATION, pin.record.generation), pin.record.generation)
    for state in (root.condemned, root.sweeping):
        if state:
            visit(Ref(BlobType.GCSTATE, state), None)
            try:
                load_gcstate(repo.store, state)
            except BlobCorrupt as exc:
                report.corrupt.append(Problem(state, None, exc.reason))
    report.blobs_reachable = len(seen)
    orphans = [i for i in stored if i not in seen]
    report.orphans = len(orphans)
    report.orphan_bytes = sum(stored[i] for i in orphans)
    return report
