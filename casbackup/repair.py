"""Repair (spec §11, §12.9): reinstall a lost or corrupt root; remove corrupt blobs and record the
damage; rebuild the head's blob locations from the packs' tables of contents.

All are dry runs unless `apply`: they first show what they would do. All hold the gc lease
while they write, so no gc runs beside them, and change the root only by compare-and-swap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from .btree import Entry
from .check import CheckReport, EntryValidator, Validator, _Checker, check
from .codec import RAW_TYPES, BlobType, Ref, is_blob_id, unpack_structured
from .damage import NAMESPACE as DAMAGE_NAMESPACE
from .damage import DamagedBlob, DamagedEntry, blob_record_key, entry_record_key, known_blobs_of
from .errors import (BlobCorrupt, BlobMissing, CheckFailed, CommitConflict, KeyMissing, NotFound,
                     UnsupportedFormat, UsageError)
from .gcstate import load_gcstate, write_gcstate
from .pins import Lease, acquire_gc_lease, release_gc_lease
from .layout import ROOT_KEY
from .packs import LOCATIONS_NAMESPACE, PACKED_TYPES, Location
from .records import Generation, Root, new_write_id
from .repository import Repository, location, location_of
from .steps import Step
from .transaction import COMMIT_TIMEOUT, Transaction
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
    if repo.root.watermark is not None:  # an older generation, reinstalled on purpose: not a rollback
        repo.root.watermark.reset()
        repo.root.watermark.observe(new_root.seq, new_root.generation)


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
        blob_type, payload = repo.store.decode(blob_id, stored)
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


# ---- repair index ---------------------------------------------------------------------------

@dataclass
class IndexRepair:
    location: str
    dry_run: bool
    applied: bool = False
    head_seq: int = 0
    blobs_checked: int = 0           # packed blobs reachable from the head, each read and verified
    packs_scanned: int = 0           # packs whose TOC was read
    fixed: list[dict[str, Any]] = field(default_factory=list)      # {blob, type, reason, old, new}
    not_found: list[dict[str, Any]] = field(default_factory=list)  # {blob, type, reason}: in no pack
    changed: list[dict[str, Any]] = field(default_factory=list)    # a commit changed the entry first
    unreadable_packs: list[dict[str, Any]] = field(default_factory=list)  # {pack, reason}
    other_damage: list[dict[str, Any]] = field(default_factory=list)      # {blob, reason}: not the index's
    generation: int | None = None    # the generation that published the corrected entries

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _where(loc: Location | None) -> dict[str, Any] | None:
    return None if loc is None else {"pack": loc.pack, "offset": loc.offset, "length": loc.length}


@dataclass
class _Unlocated:
    """A reachable packed blob the head does not locate at a copy that verifies."""
    type: BlobType
    entry: Entry | None      # its `_blobs` entry as read (the commit is conditional on it)
    old: Location | None     # where that entry pointed, if it decoded
    reason: str


def _verified_payload(repo: Repository, ref: Ref, loc: Location, gen_id: str | None) -> bytes:
    """The payload at `loc`, read and verified against the blob's ID and type."""
    stored = repo.store.get_at(ref, loc, gen_id)
    return repo.store.decode(ref.id, stored, ref.type)[1]


class _IndexScan:
    """Walks what the head reaches, reading every packed blob where the head locates it; the ones
    that are not there (no entry, a missing pack, bytes that do not verify) are collected in `bad`
    and walked through the copy `search` finds instead, so a lost TREE does not hide its subtree."""

    def __init__(self, repo: Repository, head: Generation, say: Progress) -> None:
        self.repo, self.head, self.say = repo, head, say
        self.bad: dict[str, _Unlocated] = {}
        self.found: dict[str, Location] = {}
        self.other: dict[str, str] = {}
        self.checked = 0
        self.packs_read: set[str] = set()
        self.unreadable: dict[str, str] = {}
        self.walker = Walker(self._read, on_raw=self._read_raw, on_missing=self._damage, on_corrupt=self._damage)

    def _entry(self, blob_id: str) -> Entry | None:
        return self.repo.index.get(self.head.index, LOCATIONS_NAMESPACE, blob_id, self.head.id)

    def _payload(self, ref: Ref) -> bytes:
        """A packed blob's verified payload: at the copy found, or where the head locates it;
        else it joins `bad` and is a leaf for now (BlobMissing)."""
        loc = self.found.get(ref.id)
        if loc is not None:
            return _verified_payload(self.repo, ref, loc, self.head.id)
        self.checked += 1
        entry, old = self._entry(ref.id), None
        try:
            old = location_of(entry, ref.id, self.head.id)
            if old is None:
                raise BlobMissing(ref.id, self.head.id, "the head does not locate it")
            if old.type != ref.type:
                raise BlobCorrupt(ref.id, f"located as a {old.type.name} blob, referenced as {ref.type.name}")
            return _verified_payload(self.repo, ref, old, self.head.id)
        except (BlobMissing, BlobCorrupt, UnsupportedFormat) as exc:
            self.bad[ref.id] = _Unlocated(ref.type, entry, old, _unlocated_reason(exc, old))
            raise BlobMissing(ref.id, self.head.id, "located nowhere that verifies") from None

    def _read(self, ref: Ref, gen_id: str | None) -> tuple[list[Ref], Any]:
        if ref.type not in PACKED_TYPES:
            return self.repo.store.get_structured(ref, gen_id, cache=False)
        return unpack_structured(self._payload(ref), ref.id)

    def _read_raw(self, ref: Ref, _gen_id: str | None) -> None:
        if ref.type in PACKED_TYPES:
            self._payload(ref)

    def _damage(self, ref: Ref, exc: Exception, _owner: Any) -> None:
        if ref.id not in self.bad:  # a loose blob, or a packed one whose verified body is bad
            self.other[ref.id] = str(getattr(exc, "reason", None) or exc)

    def walk(self, refs: list[Ref]) -> None:
        self.walker.walk(refs, self.head.id)

    def search(self, wanted: Mapping[str, BlobType], check_lease: Callable[[], None]) -> dict[str, Location]:
        """Read the TOC of every pack (one at a time: memory bounded by one TOC) and take, for each
        wanted blob, the first listed copy of the right type that verifies."""
        new: dict[str, Location] = {}
        for n, (pack_id, info) in enumerate(self.repo.store.list_packs()):
            if len(new) == len(wanted):
                break
            if n % 64 == 0:
                check_lease()
            if pack_id in self.unreadable:
                continue
            try:
                _cls, items = self.repo.store.read_toc(pack_id, info.size)
            except KeyMissing:
                continue  # deleted since the listing
            except (BlobCorrupt, UnsupportedFormat) as exc:
                self.unreadable[pack_id] = str(getattr(exc, "reason", None) or exc)
                continue
            self.packs_read.add(pack_id)
            for item in items:
                kind = wanted.get(item.id)
                if kind is None or item.id in new or item.location.type != kind:
                    continue
                try:
                    _verified_payload(self.repo, Ref(kind, item.id), item.location, None)
                except (BlobMissing, BlobCorrupt, UnsupportedFormat):
                    continue  # a bad copy: another pack may hold a good one
                new[item.id] = item.location
        return new

    def resume(self, new: Mapping[str, Location]) -> None:
        """Walk on below the structured blobs just found (their subtrees were not read yet)."""
        self.found.update(new)
        again = [Ref(self.bad[i].type, i) for i in new if self.bad[i].type not in RAW_TYPES]
        for r in again:
            self.walker.seen.discard(r.id)
        self.walk(again)


def _unlocated_reason(exc: Exception, old: Location | None) -> str:
    if old is None:
        return "the head does not locate it" if isinstance(exc, BlobMissing) else \
            f"its location entry is bad: {getattr(exc, 'reason', exc)}"
    if isinstance(exc, BlobMissing):
        return f"its pack {old.pack} is missing"
    return f"does not verify at pack {old.pack} offset {old.offset}: {getattr(exc, 'reason', exc)}"


def repair_index(repo: Repository, apply: bool = False, progress: Progress | None = None) -> IndexRepair:
    """Rebuild the head's `_blobs` entries from the packs' TOCs (spec §12.9): every packed blob
    the head reaches but does not locate at a copy that verifies is looked for in every pack, and
    (with apply) the copies found are published in one commit, each entry only if unchanged."""
    say = progress or _quiet
    out = IndexRepair(location(repo.backend), dry_run=not apply)
    lease = acquire_gc_lease(repo.backend, monotonic=repo.monotonic) if apply else None
    check_lease = lease.check if lease is not None else (lambda: None)
    try:
        with repo.reader("repair index") as snap:
            head = snap.generation
            out.head_seq = head.seq
            scan = _IndexScan(repo, head, say)
            say("reading every packed blob the head reaches where the head locates it")
            scan.walk([Ref(BlobType.GENERATION, head.id)])
            searched: set[str] = set()
            while True:
                wanted = {i: b.type for i, b in scan.bad.items() if i not in searched}
                if not wanted:
                    break
                searched |= wanted.keys()
                say(f"looking for {len(wanted)} blobs in the packs' tables of contents")
                scan.resume(scan.search(wanted, check_lease))
            _fill_index_report(scan, out)
            if lease is not None and scan.found:
                _commit_index(repo, scan, out, lease)
    finally:
        if lease is not None:
            release_gc_lease(lease)
    return out


def _fill_index_report(scan: _IndexScan, out: IndexRepair) -> None:
    out.blobs_checked = scan.checked
    out.packs_scanned = len(scan.packs_read)
    for blob_id, b in sorted(scan.bad.items()):
        row = {"blob": blob_id, "type": b.type.name, "reason": b.reason}
        if blob_id in scan.found:
            out.fixed.append({**row, "old": _where(b.old), "new": _where(scan.found[blob_id])})
        else:
            out.not_found.append(row)
    out.unreadable_packs = [{"pack": p, "reason": r} for p, r in sorted(scan.unreadable.items())]
    out.other_damage = [{"blob": i, "reason": r} for i, r in sorted(scan.other.items())]


def _changed_entries(repo: Repository, scan: _IndexScan, pending: Mapping[str, Location]) -> list[str]:
    """The pending blobs whose `_blobs` entry in the current head differs from what the scan read
    (one ordered pass over the head's index for all of them)."""
    head = repo.load_generation(repo.read_root()[0].generation)
    current = repo.index.get_many(head.index, [(LOCATIONS_NAMESPACE, i) for i in pending], head.id)
    return [i for i in pending if current.get((LOCATIONS_NAMESPACE, i)) != scan.bad[i].entry]


def _commit_index(repo: Repository, scan: _IndexScan, out: IndexRepair, lease: Lease) -> None:
    """One commit of the corrected entries. They go through the commit's own location rule (§12.6
    steps 3-4): each copy is published as if the commit had stored it, and its pack is touched,
    so a condemned pack is rescued and the epoch re-check applies. Each entry is conditional
    (like gc's prune): checked against the root just before every swap (a swap succeeds only on
    the root checked), and one a rival commit changed meanwhile is dropped and left as it is."""
    pending = dict(scan.found)
    while pending:
        lease.check()
        txn = repo.transaction("repair index")
        txn.stored.update(pending)
        txn.use(Ref(loc.type, i) for i, loc in pending.items())
        gen, moved = _drive_commit(repo, txn, scan, pending)
        if gen is not None:
            out.generation, out.applied = gen.seq, True
            break
        for i in moved:
            pending.pop(i)
            out.changed.append({"blob": i, "type": scan.bad[i].type.name})
    out.fixed = [f for f in out.fixed if f["blob"] in pending]


def _drive_commit(repo: Repository, txn: Transaction, scan: _IndexScan,
                  pending: Mapping[str, Location]) -> tuple[Generation | None, list[str]]:
    """Run the commit's steps (backing off as Transaction.commit does); stop before a swap if an
    entry changed (the blobs that did)."""
    steps = txn.commit_steps()
    deadline, attempt = repo.monotonic() + COMMIT_TIMEOUT, 0
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value, []
            if step == Step.CAS:
                moved = _changed_entries(repo, scan, pending)
                if moved:
                    return None, moved
            elif step.waits:
                attempt = txn._backoff(attempt, deadline, step.why)
    finally:
        steps.close()
