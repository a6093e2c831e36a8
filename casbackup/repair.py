"""Repair (spec §11): reinstall a lost or corrupt root; remove corrupt blobs and record the damage.

Both are dry runs unless `apply`: they first show what they would do. Both hold the gc lease
while they write, so no gc runs beside them, and change the root only by compare-and-swap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from .btree import Entry
from .check import CheckReport, EntryValidator, Validator, _Checker, check
from .codec import RAW_TYPES, BlobType, Ref, decode_blob, is_blob_id, unpack_structured
from .damage import NAMESPACE as DAMAGE_NAMESPACE
from .damage import DamagedBlob, DamagedEntry, blob_record_key, entry_record_key, known_blobs_of
from .errors import (BlobCorrupt, BlobMissing, CheckFailed, CommitConflict, KeyMissing, NotFound,
                     UnsupportedFormat, UsageError)
from .gcstate import load_gcstate, write_gcstate
from .pins import Lease, acquire_gc_lease, release_gc_lease
from .layout import ROOT_KEY
from .packs import LOCATIONS_NAMESPACE
from .records import Generation, Root, new_write_id
from .repository import Repository, location
from .walk import Walker, chain

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


# ---- repair root ----------------------------------------------------------------------------

@dataclass
class Candidate:
    id: str
    seq: int
    time: float
    entries: int
    reason: str = ""  # why it was passed over ("" if it was chosen)


@dataclass
class RootRepair:
    location: str
    previous_root: str          # "missing" or "corrupt"
    previous_error: str | None
    dry_run: bool
    applied: bool = False
    generation: dict[str, Any] | None = None   # seq, id, time, entries, namespaces, known_damage
    retain_floor: int = 0
    generations_verified: int = 0
    generations_found: int = 0
    passed_over: list[Candidate] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _scan_generations(repo: Repository, progress: Progress) -> tuple[list[Generation], list[Candidate]]:
    """Every GENERATION blob in the store (found by its envelope's type byte), decoded."""
    progress("looking for generations among the stored blobs")
    found: list[Generation] = []
    bad: list[Candidate] = []
    for blob_id, _info in repo.store.list():
        if repo.store.stored_type(blob_id) != BlobType.GENERATION:
            continue
        try:
            found.append(repo.load_generation(blob_id))
        except (BlobCorrupt, BlobMissing, UnsupportedFormat) as exc:
            bad.append(Candidate(blob_id, -1, 0.0, 0, f"unreadable: {getattr(exc, 'reason', exc)}"))
    found.sort(key=lambda g: (g.seq, g.time, g.id), reverse=True)
    return found, bad


def _verify(checker: _Checker, gen: Generation) -> str | None:
    """None if the generation and everything it reaches is present and verifies."""
    report = checker.report
    before = (len(report.dangling), len(report.corrupt))
    checker.visit(Ref(BlobType.GENERATION, gen.id), gen, "head")
    if len(report.dangling) > before[0]:
        p = report.dangling[before[0]]
        return f"blob {p.blob} is missing ({p.reason})"
    if len(report.corrupt) > before[1]:
        p = report.corrupt[before[1]]
        return f"blob {p.blob} is corrupt ({p.reason})"
    return None


def _new_checker(repo: Repository, gen: Generation, validators: Mapping[BlobType, Validator] | None,
                 entry_validators: Mapping[str, EntryValidator] | None) -> _Checker:
    checker = _Checker(repo, None, CheckReport(), True, None, validators, entry_validators)  # type: ignore[arg-type]
    try:
        checker.known = {i: "removed by repair" for i in known_blobs_of(repo, gen)}
    except (BlobMissing, BlobCorrupt):
        checker.known = {}
    return checker


def repair_root(repo: Repository, apply: bool = False, generation: str | None = None,
                validators: Mapping[BlobType, Validator] | None = None,
                entry_validators: Mapping[str, EntryValidator] | None = None,
                progress: Progress | None = None) -> RootRepair:
    """Find the newest complete generation among the stored blobs and (with apply) install it
    as the root by compare-and-swap: against absence, or against a corrupt root's etag."""
    say = progress or _quiet
    where = location(repo.backend)
    previous, previous_error, expected = _unreadable_root(repo, where)
    out = RootRepair(where, previous, previous_error, dry_run=not apply)
    gens, unreadable = _scan_generations(repo, say)
    out.generations_found = len(gens)
    out.passed_over.extend(unreadable)
    if generation is not None:
        gens = [g for g in gens if g.id == generation or (len(generation) >= 8 and g.id.startswith(generation))]
        if len(gens) != 1:
            raise NotFound(f"no single readable generation {generation!r} among the stored blobs")
    chosen, checker = _newest_complete(repo, gens, out, validators, entry_validators, say)
    if chosen is None or checker is None:
        if not gens and not unreadable:
            raise NotFound(f"{where} holds no generation at all; if it was never used, "
                           f"'casbackup -r {where} init' completes it")
        raise CheckFailed(f"no complete generation found at {where} ({len(gens)} examined); "
                          "nothing was changed")
    floor_gen, out.generations_verified = _complete_history(repo, checker, chosen)
    namespaces: dict[str, int] = {}
    for e in repo.index.iterate(chosen.index, ("", ""), chosen.id):
        namespaces[e.namespace] = namespaces.get(e.namespace, 0) + 1
    out.generation = {"seq": chosen.seq, "id": chosen.id, "time": chosen.time, "entries": chosen.entries,
                      "message": chosen.message, "namespaces": namespaces,
                      "known_damage": len(checker.report.known_damage)}
    out.retain_floor = floor_gen.seq
    if not apply:
        return out
    lease = acquire_gc_lease(repo.backend, monotonic=repo.monotonic)
    try:
        new_root = Root(chosen.id, chosen.seq, new_write_id(), gc_epoch=0, retain_floor=floor_gen.seq,
                        time=repo.backend.now())
        _install_root(repo, expected, new_root, where)
        out.applied = True
    finally:
        release_gc_lease(lease)
    return out


def _unreadable_root(repo: Repository, where: str) -> tuple[str, str | None, str | None]:
    """(missing or corrupt, the decode error, the etag to swap against); a readable root is refused."""
    try:
        data, etag = repo.backend.read_versioned(ROOT_KEY)
    except KeyMissing:
        return "missing", None, None
    try:
        current = Root.decode(data)
    except (BlobCorrupt, UnsupportedFormat) as exc:
        return "corrupt", str(getattr(exc, "reason", exc)), etag
    raise UsageError(f"the repository at {where} has a readable root (generation {current.seq}, "
                     f"{current.generation[:16]}); repair root only replaces a missing or corrupt one")


def _newest_complete(repo: Repository, gens: list[Generation], out: RootRepair,
                     validators: Mapping[BlobType, Validator] | None,
                     entry_validators: Mapping[str, EntryValidator] | None,
                     say: Progress) -> tuple[Generation | None, _Checker | None]:
    """The first of `gens` (newest first) whose whole reach verifies, and the checker that
    verified it; the others examined go to out.passed_over with the reason."""
    for gen in gens:
        say(f"verifying generation {gen.seq} ({gen.id[:16]})")
        checker = _new_checker(repo, gen, validators, entry_validators)
        why = _verify(checker, gen)
        if why is None:
            return gen, checker
        out.passed_over.append(Candidate(gen.id, gen.seq, gen.time, gen.entries, why))
    return None, None


def _stop(*_args: object) -> None:
    """A chain hook: an unreadable generation simply ends the complete part of the chain."""


def _complete_history(repo: Repository, checker: _Checker, chosen: Generation) -> tuple[Generation, int]:
    """The chain below `chosen`, as far as it is complete too (the lowest such generation, and
    how many were verified): check then verifies down to that floor."""
    floor_gen, verified = chosen, 1
    history = chain(repo.load_generation, chosen, chosen.seq, on_missing=_stop, on_corrupt=_stop,
                    verify_links=True)
    next(history)  # chosen itself, verified already
    for parent in history:
        if _verify(checker, parent) is not None:
            break
        floor_gen, verified = parent, verified + 1
    return floor_gen, verified


def _install_root(repo: Repository, expected: str | None, new_root: Root, where: str) -> None:
    """One CAS against the missing or corrupt root; a lost reply is resolved by reading back (spec §7.3)."""
    if not repo.root.install(expected, new_root):
        raise CommitConflict(f"the root at {where} changed while repair root ran; run it again")


# ---- repair blobs ---------------------------------------------------------------------------

@dataclass
class BlobRepair:
    location: str
    dry_run: bool
    applied: bool = False
    removed: list[dict[str, Any]] = field(default_factory=list)     # {blob, type, reason, where}
    spared: list[dict[str, Any]] = field(default_factory=list)      # verified on a re-read
    damaged_entries: list[dict[str, Any]] = field(default_factory=list)  # {namespace, key, blobs}
    generation: int | None = None  # the generation that recorded the damage

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _stored_envelope(repo: Repository, blob_id: str) -> bytes | None:
    """A loose blob's stored bytes, or a packed blob's at the place the head locates it."""
    stored = repo.store.get_stored(blob_id)
    if stored is not None:
        return stored
    loc = repo.locate(repo.read_root()[0].generation, blob_id)
    if loc is None:
        return None
    try:
        return repo.store.get_at(Ref(loc.type, blob_id), loc)
    except (BlobMissing, BlobCorrupt):
        return None


def _reread(repo: Repository, blob_id: str, validators: Mapping[BlobType, Validator]) -> tuple[str, str | None]:
    """(type name, why it fails) from a fresh read of the stored bytes; None: it verifies now."""
    stored = _stored_envelope(repo, blob_id)
    if stored is None:
        return "?", "missing"
    try:
        blob_type, payload = decode_blob(blob_id, stored)
    except (BlobCorrupt, UnsupportedFormat) as exc:
        return "?", str(getattr(exc, "reason", exc))
    try:
        if blob_type in RAW_TYPES:
            v = validators.get(blob_type)
            if v is not None:
                v(blob_id, [], payload)
        else:
            refs, body = unpack_structured(payload, blob_id)
            if blob_type == BlobType.PAGE:
                from .check import decode_page
                decode_page(blob_id, refs, body)
            v = validators.get(blob_type)
            if v is not None:
                v(blob_id, refs, body)
    except (BlobCorrupt, UnsupportedFormat) as exc:
        return blob_type.name, str(getattr(exc, "reason", exc))
    return blob_type.name, None


def _damage_reach(repo: Repository, entries: list[Entry], bad: set[str], generation: str) -> list[frozenset[str]]:
    """For each entry, the bad blobs its refs reach (raw blobs are leaves, read by no one). One
    walk over all entries' refs records who names whom (bad blobs are leaves; one unreadable
    now is as bad as a listed one); then each bad blob marks everything above it."""
    sources = set(bad)
    named_by: dict[str, set[str]] = {}

    def record(ref: Ref, refs: list[Ref], _body: Any, _gen: str | None) -> None:
        for r in refs:
            named_by.setdefault(r.id, set()).add(ref.id)

    def unreadable(ref: Ref, _exc: Exception, _owner: Any) -> None:
        sources.add(ref.id)

    walker = Walker(lambda ref, gen_id: repo.store.get_structured(ref, gen_id, cache=False),
                    on_blob=lambda ref: ref.id not in bad, on_body=record, on_missing=unreadable,
                    on_corrupt=unreadable)
    for e in entries:
        walker.walk(e.all_refs(), generation)
    reaches: dict[str, set[str]] = {}  # blob -> the bad blobs it reaches (itself, if bad)
    for source in sources:
        above, todo = {source}, [source]
        while todo:
            blob = todo.pop()
            reaches.setdefault(blob, set()).add(source)
            fresh = named_by.get(blob, set()) - above
            above |= fresh
            todo.extend(fresh)
    return [frozenset().union(*(reaches.get(r.id, set()) for r in e.all_refs())) for e in entries]


def repair_blobs(repo: Repository, apply: bool = False,
                 validators: Mapping[BlobType, Validator] | None = None,
                 entry_validators: Mapping[str, EntryValidator] | None = None,
                 progress: Progress | None = None) -> BlobRepair:
    """Remove every blob that fails verification (confirmed by a re-read), and record in the
    `_damage` namespace each removed (or already missing) blob and each head entry whose data
    reached one, in one commit."""
    say = progress or _quiet
    validators = dict(validators or {})
    say("checking every stored blob")
    report = check(repo, read_data=True, progress=say, validators=validators, entry_validators=entry_validators)
    out = BlobRepair(location(repo.backend), dry_run=not apply)
    bad = _confirmed_damage(repo, report, validators, out)
    out.removed = [{"blob": i, "type": t, "reason": r, "where": w} for i, (t, r, w) in sorted(bad.items())]
    if not bad:
        return out
    _find_damaged_entries(repo, bad, out, say)
    if apply:
        _apply_blob_repair(repo, bad, out, say)
    return out


def _confirmed_damage(repo: Repository, report: CheckReport, validators: Mapping[BlobType, Validator],
                      out: BlobRepair) -> dict[str, tuple[str, str, str]]:
    """id -> (type, reason, where) of each corrupt blob that a fresh re-read still finds bad
    (the others go to out.spared), and of each missing one."""
    bad: dict[str, tuple[str, str, str]] = {}
    for kind, problems in (("reachable", report.corrupt), ("unreferenced", report.corrupt_unreferenced)):
        for p in problems:
            if not is_blob_id(p.blob) or p.blob in bad:
                continue
            type_name, why = _reread(repo, p.blob, validators)
            if why is None:
                out.spared.append({"blob": p.blob, "type": type_name, "reason": p.reason})
                continue
            bad[p.blob] = (type_name, why, kind)
    for p in report.dangling:
        if is_blob_id(p.blob) and p.blob not in bad:
            bad[p.blob] = (p.reason.split(" ", 1)[0], p.reason, "missing")
    return bad


def _find_damaged_entries(repo: Repository, bad: Mapping[str, object], out: BlobRepair, say: Progress) -> None:
    """Refuse if the head's own generation or index pages are bad (no record could be committed
    on them); else list in out.damaged_entries each head entry whose data reaches a bad blob."""
    with repo.reader("repair blobs") as snap:
        head = snap.generation
        pages: set[str] = {head.id}

        def index_page(ref: Ref) -> bool:
            if ref.type != BlobType.PAGE:
                return False  # an entry's data, not the index
            pages.add(ref.id)
            return ref.id not in bad

        if head.index:
            Walker(repo.store.get_structured, on_blob=index_page).walk([head.index], head.id)
        broken = sorted(pages & bad.keys())
        if broken:
            raise CheckFailed(f"the head generation's own metadata blob {broken[0]} is damaged; repair blobs cannot "
                              "rebuild it. Install an older complete generation instead (repair root --generation)")
        say("finding the entries whose data reached a damaged blob")
        entries = [e for e in snap.list() if e.namespace not in (DAMAGE_NAMESPACE, LOCATIONS_NAMESPACE)]
        for e, hits in zip(entries, _damage_reach(repo, entries, set(bad), head.id)):
            if hits:
                out.damaged_entries.append({"namespace": e.namespace, "key": e.key, "blobs": sorted(hits)})


def _apply_blob_repair(repo: Repository, bad: dict[str, tuple[str, str, str]], out: BlobRepair,
                       say: Progress) -> None:
    """Under the gc lease: delete the bad stored blobs through the sweep protocol, then commit
    the damage records in one transaction."""
    head = repo.read_root()[0].generation
    # Format v2: a bad packed blob is not deleted (its pack holds others); its location is removed
    # in the repair commit, so the next backup stores it anew. Loose ones go through the sweep.
    unlocated = sorted(i for i in bad if repo.locate(head, i) is not None)
    doomed = sorted(i for i, (_t, _r, w) in bad.items() if w != "missing" and i not in unlocated)
    lease = acquire_gc_lease(repo.backend, monotonic=repo.monotonic)
    try:
        if doomed:
            _remove(repo, lease, doomed, say)
        now = repo.backend.now()
        with repo.transaction("repair blobs") as txn:
            for i in unlocated:
                txn.delete(LOCATIONS_NAMESPACE, i)
            for i, (t, r, _w) in sorted(bad.items()):
                txn.put(DAMAGE_NAMESPACE, blob_record_key(i), DamagedBlob(i, t, r, now).value())
            for d in out.damaged_entries:
                rec = DamagedEntry(d["namespace"], d["key"], tuple(d["blobs"]), now)
                txn.put(DAMAGE_NAMESPACE, entry_record_key(rec.namespace, rec.key), rec.value())
        assert txn.result is not None
        out.generation = txn.result.seq
        out.applied = True
    finally:
        release_gc_lease(lease)


def _remove(repo: Repository, lease: Lease, doomed: list[str], say: Progress) -> None:
    """Delete through the sweep protocol (spec §9.3): announced in the root's sweeping set, so a
    commit that deduplicated against one of them waits, then fails loudly instead of publishing
    a dangling reference."""
    while True:
        lease.check()
        root, etag = repo.read_root()
        if root.sweeping is not None:
            raise UsageError("an interrupted gc sweep must finish first: run 'casbackup gc', then repair again")
        now = repo.backend.now()
        condemned = load_gcstate(repo.store, root.condemned)
        rest = {i: t for i, t in condemned.items() if i not in set(doomed)}
        announce = Root(root.generation, root.seq, new_write_id(), root.gc_epoch + 1,
                        write_gcstate(repo.store, "condemned", rest) if rest != condemned else root.condemned,
                        write_gcstate(repo.store, "sweeping", {i: now for i in doomed}), root.retain_floor, now)
        if repo.swap_root(etag, announce, creates_generation=False):
            break
    say(f"removing {len(doomed)} damaged blobs")
    for n, blob_id in enumerate(doomed):
        if n % 64 == 0:
            lease.check()
        repo.store.delete(blob_id)
    while True:
        root, etag = repo.read_root()
        cleared = Root(root.generation, root.seq, new_write_id(), root.gc_epoch + 1, root.condemned, None,
                       root.retain_floor, repo.backend.now())
        if repo.swap_root(etag, cleared, creates_generation=False):
            return
