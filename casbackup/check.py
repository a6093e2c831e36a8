"""fsck (spec §10): pin the head, walk what it and its history reach, decode every blob by type.

A passing check means a restore of any retained snapshot would succeed: every structured body
is validated with the same decoders the readers use (core supplies PAGE, GENERATION, GCSTATE;
upper layers pass validators for their own types, e.g. files.verify for TREE and FILE). With
read_data, every stored blob is read, reachable or not, and damage to unreferenced blobs is
reported separately. Check runs safely beside gc: its own pin keeps the head, and blobs gc
removes legitimately (history below the retain floor, a sweep in progress) are not damage.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, NamedTuple

from .btree import BTree, Entry, Page
from .codec import RAW_TYPES, BlobType, Ref, is_blob_id, unpack_structured
from .damage import NAMESPACE as DAMAGE_NAMESPACE
from .damage import decode_damage_value, known_blobs
from .errors import BlobCorrupt, BlobMissing, KeyMissing, UnsupportedFormat
from .gcstate import load_gcstate
from .pins import list_pins
from .layout import CONFIG_KEY, GC_LEASE_KEY, ROOT_KEY, pack_key
from .meter import Meter, as_meter
from .keys import list_slots
from .packs import LOCATIONS_NAMESPACE, PACKED_TYPES, Location, TocItem
from .reach import live_packs
from .records import Config, Generation, LeaseRecord
from .repository import Repository, Reader, location_of
from .store import PACK_MEMBER, is_pack_member, pack_member
from .walk import Walker, below_floor, chain

# (blob id, refs, body) -> None; raises BlobCorrupt. Raw types get their payload as body.
Validator = Callable[[str, list[Ref], Any], None]
# (key, value, refs) -> None for the entries of one namespace; raises BlobCorrupt.
EntryValidator = Callable[[str, bytes, tuple[Ref, ...]], None]


@dataclass
class Problem:
    blob: str
    generation: str | None
    reason: str


@dataclass
class CheckReport:
    head_seq: int = 0
    head_generation: str | None = None
    generations_checked: int = 0
    blobs_reachable: int = 0
    blobs_read: int = 0
    blobs_stored: int = 0
    unreferenced_read: int = 0
    dangling: list[Problem] = field(default_factory=list)
    corrupt: list[Problem] = field(default_factory=list)
    corrupt_unreferenced: list[Problem] = field(default_factory=list)
    corrupt_records: list[Problem] = field(default_factory=list)
    known_damage: list[Problem] = field(default_factory=list)
    orphans: int = 0
    orphan_bytes: int = 0
    live_pins: int = 0
    expired_pins: list[str] = field(default_factory=list)
    unreadable_pins: list[str] = field(default_factory=list)
    pins_on_collected_generations: list[str] = field(default_factory=list)
    collected_during_check: int = 0
    history_collected_below_seq: int | None = None

    @property
    def ok(self) -> bool:
        return not (self.dangling or self.corrupt or self.corrupt_unreferenced or self.corrupt_records)

    @property
    def problem_count(self) -> int:
        return len(self.dangling) + len(self.corrupt) + len(self.corrupt_unreferenced) + len(self.corrupt_records)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["ok"] = self.ok
        d["known_damage_count"] = len(self.known_damage)
        return d


# ---- core validators ----------------------------------------------------------------------

class _OneBlob:
    """A store holding one already-decoded blob, so BTree.load (the readers' decoder) can
    validate a page body check has in hand."""

    def __init__(self, refs: list[Ref], body: Any) -> None:
        self._decoded = (refs, body)

    def get_structured(self, ref: Ref, generation: str | None = None, cache: bool = True) -> tuple[list[Ref], Any]:
        return self._decoded


def decode_page(blob_id: str, refs: list[Ref], body: Any) -> Page:
    """A PAGE body, decoded as readers decode it, whose refs cover everything it names."""
    page = BTree(_OneBlob(refs, body)).load(Ref(BlobType.PAGE, blob_id))  # type: ignore[arg-type]
    have = set(refs)
    named: list[Ref] = [c for _, c in page.children]
    for e in page.entries:
        named.extend(e.all_refs())
    for r in named:
        if r not in have:
            raise BlobCorrupt(blob_id, f"page names blob {r.id} that is not among its refs")
    return page


def _validate_page(blob_id: str, refs: list[Ref], body: Any) -> None:
    decode_page(blob_id, refs, body)


def _validate_generation(blob_id: str, refs: list[Ref], body: Any) -> None:
    Generation.from_body(blob_id, refs, body)


def _validate_gcstate(blob_id: str, refs: list[Ref], body: Any) -> None:
    if refs or not isinstance(body, dict) or body.get("kind") not in ("condemned", "sweeping"):
        raise BlobCorrupt(blob_id, "malformed gc state")
    load_gcstate(_OneBlob(refs, body), blob_id)  # type: ignore[arg-type]


def _validate_damage_entry(key: str, value: bytes, refs: tuple[Ref, ...]) -> None:
    decode_damage_value(key, value)


def _validate_location_entry(key: str, value: bytes, refs: tuple[Ref, ...]) -> None:
    """A `_blobs` entry (§12.4): a blob ID key, no refs, an inline location."""
    if not is_blob_id(key):
        raise BlobCorrupt(key, "a location's key is not a blob ID")
    if refs:
        raise BlobCorrupt(key, "a location entry must have no refs")
    Location.from_value(value, key)


CORE_VALIDATORS: dict[BlobType, Validator] = {
    BlobType.PAGE: _validate_page,
    BlobType.GENERATION: _validate_generation,
    BlobType.GCSTATE: _validate_gcstate,
}


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or exc)


def _check_records(repo: Repository, report: CheckReport) -> None:
    """config and the gc lease decode (the root and the pins are read by the walk)."""
    try:
        Config.decode(repo.backend.get(CONFIG_KEY))
    except (BlobCorrupt, UnsupportedFormat, KeyMissing) as exc:
        report.corrupt_records.append(Problem(CONFIG_KEY, None, _reason(exc)))
    try:
        LeaseRecord.decode(repo.backend.get(GC_LEASE_KEY), GC_LEASE_KEY)
    except KeyMissing:
        pass  # no gc ever ran
    except (BlobCorrupt, UnsupportedFormat) as exc:
        report.corrupt_records.append(Problem(GC_LEASE_KEY, None, _reason(exc)))
    if repo.keys is not None:  # every key slot, not only the one that opened it (spec §13.2)
        list_slots(repo.raw_backend, lambda message: report.corrupt_records.append(Problem("keys/", None, message)))


def check(repo: Repository, read_data: bool = False, progress: Callable[[str], None] | Meter | None = None,
          validators: Mapping[BlobType, Validator] | None = None,
          entry_validators: Mapping[str, EntryValidator] | None = None) -> CheckReport:
    """Check the repository. `validators` adds body validators per blob type (upper layers'
    types: TREE, FILE, or CHUNK for size cross-checks); `entry_validators` validates the values
    of one namespace's entries (e.g. snapshots)."""
    report = CheckReport()
    repo.store.clear_cache()
    _check_records(repo, report)
    try:
        snap = repo.open_reader("check")
    except (BlobCorrupt, UnsupportedFormat) as exc:  # the root, or the head generation it names
        named = getattr(exc, "blob_id", ROOT_KEY) in (ROOT_KEY, None)
        report.corrupt_records.append(Problem(ROOT_KEY, None, _reason(exc) if named else str(exc)))
        return report
    try:
        return _Checker(repo, snap, report, read_data, progress, validators, entry_validators).run()
    finally:
        snap.close()


class _Visit(NamedTuple):
    """Whose blobs a visit walks, for the messages and for judging what is missing."""
    gen: Generation | None
    mode: str            # "head", "history", "below-floor", "pin" or "gcstate"
    pin: str | None = None


class _Checker:
    def __init__(self, repo: Repository, snap: Reader, report: CheckReport, read_data: bool,
                 progress: Callable[[str], None] | Meter | None, validators: Mapping[BlobType, Validator] | None,
                 entry_validators: Mapping[str, EntryValidator] | None) -> None:
        self.repo = repo
        self.store = repo.store
        self.snap = snap
        self.report = report
        self.read_data = read_data
        self.say = as_meter(progress)  # phases, and a count of the blobs each has read
        self.validators: dict[BlobType, Validator] = {**(validators or {}), **CORE_VALIDATORS}
        self.entry_validators: dict[str, EntryValidator] = {DAMAGE_NAMESPACE: _validate_damage_entry,
                                                            LOCATIONS_NAMESPACE: _validate_location_entry,
                                                            **(entry_validators or {})}
        self.walker = Walker(lambda ref, gen_id: self.store.get_structured(ref, gen_id, cache=False),
                             on_raw=self._read_raw, on_body=self._read_body,
                             on_missing=self._on_missing, on_corrupt=self._on_corrupt)
        self.seen: set[str] = self.walker.seen
        self.stored: dict[str, int] = {}
        self.walked: list[str] = []  # generations walked (their locations name the packs in use)
        self.known: dict[str, str] = {}
        # Missing blobs outside the pinned head, judged at the end against what gc did meanwhile:
        # (problem, seq of the generation that reached it, mode).
        self.tentative: list[tuple[Problem, int | None, str]] = []
        self.pin_gaps: set[str] = set()
        self.head_per_pack: dict[str, int] = {}      # --read-data: the head's locations per pack
        self.unlisted: dict[str, set[str]] = {}      # packs whose TOC lacks some: the IDs it lists

    # ---- one blob -------------------------------------------------------------------------

    def _missing(self, ref: Ref, gen: Generation | None, mode: str, what: str, owner: str | None) -> None:
        gen_id = gen.id if gen else None
        if ref.id in self.known:
            self.report.known_damage.append(Problem(ref.id, gen_id, f"{ref.type.name} blob removed by repair "
                                                                    f"({self.known[ref.id]})"))
        elif mode == "head":
            self.report.dangling.append(Problem(ref.id, gen_id, f"{ref.type.name} blob {what}"))
        elif mode == "pin":
            if owner:
                self.pin_gaps.add(owner)
        else:
            self.tentative.append((Problem(ref.id, gen_id, f"{ref.type.name} blob {what}"),
                                   gen.seq if gen else None, mode))

    def _validate(self, ref: Ref, refs: list[Ref], body: Any, gen_id: str | None) -> None:
        if ref.type == BlobType.PAGE:
            page = decode_page(ref.id, refs, body)
            for e in page.entries:
                self._validate_entry(ref, e, gen_id)
            return
        validator = self.validators.get(ref.type)
        if validator is not None:
            validator(ref.id, refs, body)

    def _validate_entry(self, page: Ref, e: Entry, gen_id: str | None) -> None:
        validator = self.entry_validators.get(e.namespace)
        if validator is None:
            return
        if e.value is not None:
            value = e.value
        else:
            assert e.value_ref is not None
            try:
                value = self.store.get(e.value_ref, gen_id)
            except (BlobMissing, BlobCorrupt):
                return  # the walk reports the VALUE blob itself
        try:
            validator(e.key, value, e.refs)
        except BlobCorrupt as exc:
            raise BlobCorrupt(page.id, f"entry {e.namespace}/{e.key}: {exc.reason}") from None

    # The walker's hooks: a raw blob is read only with read_data (else its presence is checked);
    # a structured body is decoded by its type; each blob read and verified counts once.

    def _read_raw(self, ref: Ref, gen_id: str | None) -> None:
        if not self.read_data:
            if ref.type in PACKED_TYPES:  # located by the generation, in a pack that exists
                member = pack_member(self.store.locate(ref, gen_id).pack)
                if member not in self.stored and not self.store.exists_object(member):
                    raise BlobMissing(ref.id, gen_id)
            elif ref.id not in self.stored and not self.store.exists(ref.id):
                raise BlobMissing(ref.id, gen_id)
            return
        payload = self.store.get(ref, gen_id)
        validator = self.validators.get(ref.type)
        if validator is not None:
            validator(ref.id, [], payload)
        self.report.blobs_read += 1
        self.say.add(files=1, nbytes=self.stored.get(ref.id, 0))

    def _read_body(self, ref: Ref, refs: list[Ref], body: Any, gen_id: str | None) -> None:
        self._validate(ref, refs, body, gen_id)
        self.report.blobs_read += 1
        self.say.add(files=1, nbytes=self.stored.get(ref.id, 0) if self.read_data else 0)

    def _on_missing(self, ref: Ref, _exc: BlobMissing, visit: _Visit) -> None:
        what = "is missing" if ref.id not in self.stored else "vanished during check"
        self._missing(ref, visit.gen, visit.mode, what, visit.pin)
        self.say.add(errors=1)

    def _on_corrupt(self, ref: Ref, exc: Exception, visit: _Visit) -> None:
        blob = getattr(exc, "blob_id", None) or ref.id
        self.report.corrupt.append(Problem(blob, visit.gen.id if visit.gen else None, _reason(exc)))
        self.say.add(errors=1)

    def visit(self, start: Ref, gen: Generation | None, mode: str, owner: str | None = None) -> None:
        """Walk everything reachable from `start`, reading (and so verifying) each blob once."""
        if start.type == BlobType.GENERATION:
            self.walked.append(start.id)
        self.walker.walk([start], start.id if start.type == BlobType.GENERATION else (gen.id if gen else None),
                         _Visit(gen, mode, owner))

    # ---- the whole repository -------------------------------------------------------------

    def run(self) -> CheckReport:
        report, repo = self.report, self.repo
        root_start, _ = repo.read_root()
        head = self.snap.generation
        report.head_seq, report.head_generation = head.seq, head.id
        try:
            self.known = known_blobs(self.snap)
        except (BlobMissing, BlobCorrupt):
            self.known = {}  # the head's own pages are broken: the walk reports them
        self.say("listing blobs")
        self.stored = {i: info.size for i, info in self.store.list_objects()}
        report.blobs_stored = len(self.stored)

        self.say.phase("walking generations", total=len(self.stored), unit="blobs",
                       total_bytes=sum(self.stored.values()) if self.read_data else None)
        self.visit(Ref(BlobType.GENERATION, head.id), head, "head")
        report.generations_checked = 1
        self._walk_history(head, root_start.retain_floor)
        self._walk_pins()
        for state in (root_start.condemned, root_start.sweeping):
            if state:
                self.visit(Ref(BlobType.GCSTATE, state), None, "gcstate")
        report.blobs_reachable = len(self.seen)
        used_packs = self._used_packs()
        self.seen.update(pack_member(p) for p in used_packs)
        unreferenced = [i for i in self.stored if i not in self.seen]
        report.orphans = len(unreferenced)
        report.orphan_bytes = sum(self.stored[i] for i in unreferenced)
        if self.read_data:
            self.say.phase("reading unreferenced blobs", total=len(unreferenced), unit="blobs",
                           total_bytes=report.orphan_bytes)
            condemned = self._gcstate_ids(root_start.condemned) | self._gcstate_ids(root_start.sweeping)
            self.head_per_pack = self._head_locations_per_pack()
            for blob_id in unreferenced:
                if is_pack_member(blob_id):
                    self._read_unreferenced_pack(blob_id[len(PACK_MEMBER):], blob_id in condemned)
                else:
                    self._read_unreferenced(blob_id, blob_id in condemned)
                self.say.add(files=1, nbytes=self.stored[blob_id])
            for pack_id in sorted(used_packs):
                self._read_pack_whole(pack_id)
            self._name_unlisted()
        self._judge(root_start)
        return report

    def _used_packs(self) -> set[str]:
        gens = []
        for gen_id in dict.fromkeys(self.walked):
            try:
                gens.append(self.repo.load_generation(gen_id))
            except (BlobMissing, BlobCorrupt):
                continue  # the walk reported it
        try:
            return set(live_packs(self.repo, gens, self.seen))
        except (BlobMissing, BlobCorrupt):
            return set()  # an index page is damaged: the walk reported it

    def _read_pack_whole(self, pack_id: str) -> None:
        """--read-data: a pack in use is read whole: its header, TOC and trailer keep every rule
        of §12.3 and every blob in it verifies, reachable or not (a dead blob is still damage)."""
        try:
            data = self.repo.backend.get(pack_key(pack_id))
            _, pairs = self.repo.store.split_pack(pack_id, data)
            items = []
            for item, stored in pairs:
                items.append(item)
                if item.id not in self.seen:  # reachable blobs were read (and judged) by the walk
                    self.repo.store.decode(item.id, stored, item.location.type)
        except (BlobCorrupt, UnsupportedFormat) as exc:
            self.report.corrupt.append(Problem(getattr(exc, "blob_id", None) or f"pack:{pack_id}", None, _reason(exc)))
            return
        except KeyMissing:
            return  # the walk reports the blobs it needed from it
        self._compare_toc(pack_id, items)

    def _read_unreferenced_pack(self, pack_id: str, condemned: bool) -> None:
        try:
            data = self.repo.backend.get(pack_key(pack_id))
        except KeyMissing:
            self.report.collected_during_check += 1
            return
        try:
            _, pairs = self.repo.store.split_pack(pack_id, data)
            items = []
            for item, stored in pairs:
                items.append(item)
                blob_type, payload = self.repo.store.decode(item.id, stored, item.location.type)
                if blob_type not in RAW_TYPES:
                    refs, body = unpack_structured(payload, item.id)
                    self._validate(Ref(blob_type, item.id), refs, body, None)
            self.report.unreferenced_read += 1
        except (BlobCorrupt, UnsupportedFormat) as exc:
            where = " (condemned by gc)" if condemned else ""
            self.report.corrupt_unreferenced.append(Problem(getattr(exc, "blob_id", None) or f"pack {pack_id}", None,
                                                            _reason(exc) + where))
            return
        self._compare_toc(pack_id, items)  # the head may locate dead blobs here: writers dedup against them

    # ---- the head's locations against the packs' TOCs (--read-data, §12.8) ------------------

    def _head_locations_per_pack(self) -> dict[str, int]:
        """How many `_blobs` entries of the head name each pack: one pass in key order, memory
        bounded by the number of packs. A TOC that lists fewer of them is missing some."""
        per_pack: dict[str, int] = {}
        try:
            for e in self.snap.list(LOCATIONS_NAMESPACE):
                try:
                    loc = Location.from_value(e.value or b"", e.key)
                except BlobCorrupt:
                    continue  # reported by the walk's entry validator
                per_pack[loc.pack] = per_pack.get(loc.pack, 0) + 1
        except (BlobMissing, BlobCorrupt):
            pass  # an index page is damaged: the walk reported it
        return per_pack

    def _compare_toc(self, pack_id: str, items: list[TocItem]) -> None:
        """Each blob the TOC lists that the head locates in this pack must be located exactly
        where the TOC says (type, offset, length); a mismatch is corrupt, naming blob and pack."""
        head = self.snap.generation
        try:  # one ordered pass over the head's index for the whole TOC
            entries = self.repo.index.get_many(head.index, [(LOCATIONS_NAMESPACE, i.id) for i in items], head.id)
        except (BlobMissing, BlobCorrupt):
            return  # a bad index page: the walk reported it
        matched = 0  # the head's entries naming this pack that the TOC lists
        for item in items:
            try:
                loc = location_of(entries.get((LOCATIONS_NAMESPACE, item.id)), item.id, head.id)
            except BlobCorrupt:
                continue  # a bad entry: the walk's entry validator reported it
            if loc is None or loc.pack != pack_id:
                continue
            matched += 1
            toc = item.location
            if (loc.type, loc.offset, loc.length) != (toc.type, toc.offset, toc.length):
                self._corrupt_location(item.id, (
                    f"the head locates it in pack {pack_id} as {loc.type.name} at offset {loc.offset}, length "
                    f"{loc.length}; the pack's TOC lists {toc.type.name} at offset {toc.offset}, length {toc.length}"))
        if matched < self.head_per_pack.get(pack_id, 0):
            self.unlisted[pack_id] = {i.id for i in items}

    def _corrupt_location(self, blob_id: str, why: str) -> None:
        """One problem per blob: a reachable one the walk's read already found bad gets the reason."""
        why += " ('casbackup repair index' relocates it if a pack holds a good copy)"
        for p in self.report.corrupt:
            if p.blob == blob_id:
                p.reason += f"; {why}"
                return
        self.report.corrupt.append(Problem(blob_id, self.snap.generation.id, why))

    def _name_unlisted(self) -> None:
        """The head's entries naming a pack whose TOC does not list their blob (a second pass over
        `_blobs`, only when some pack came up short)."""
        if not self.unlisted:
            return
        try:
            for e in self.snap.list(LOCATIONS_NAMESPACE):
                try:
                    loc = Location.from_value(e.value or b"", e.key)
                except BlobCorrupt:
                    continue
                listed = self.unlisted.get(loc.pack)
                if listed is not None and e.key not in listed:
                    self._corrupt_location(e.key, f"the head locates it in pack {loc.pack}, whose TOC does not list it")
        except (BlobMissing, BlobCorrupt):
            pass

    def _walk_pins(self) -> None:
        """Every other live pin's generation; a pin on a generation gc collected before the pin
        was written is information (its reader's validation refused it, §9.1)."""
        report, own, now = self.report, self.snap.lease.key, self.repo.backend.now()
        for pin in list_pins(self.repo.backend):
            if pin.key == own:
                continue
            if pin.record is None:
                report.unreadable_pins.append(pin.key)
                report.corrupt_records.append(Problem(pin.key, None, pin.error or "unreadable pin record"))
            elif not pin.live(now):
                report.expired_pins.append(pin.key)
            else:
                report.live_pins += 1
                self.visit(Ref(BlobType.GENERATION, pin.record.generation), None, "pin", owner=pin.key)
        report.pins_on_collected_generations = sorted(self.pin_gaps)

    def _walk_history(self, head: Generation, floor: int) -> None:
        """The head's parent chain. Its blobs are not pinned by us: a gc running beside check may
        collect old generations, so what goes missing here is judged at the end."""
        def missing(gen_id: str, child: Generation | None, below: bool, _exc: BlobMissing) -> None:
            assert child is not None  # the chain starts at the head we hold
            if below:
                self.report.history_collected_below_seq = child.seq
            else:
                self.tentative.append((Problem(gen_id, child.id, "generation is missing"), child.seq - 1, "history"))

        def corrupt(gen_id: str, exc: Exception) -> None:
            self.report.corrupt.append(Problem(gen_id, gen_id, _reason(exc)))

        history = chain(self.repo.load_generation, head, floor, on_missing=missing, on_corrupt=corrupt,
                        verify_links=True)
        next(history)  # the head itself, walked already
        for gen in history:
            mode = "below-floor" if below_floor(gen.seq, floor) else "history"
            self.visit(Ref(BlobType.GENERATION, gen.id), gen, mode)
            self.report.generations_checked += 1

    def _read_unreferenced(self, blob_id: str, condemned: bool) -> None:
        stored = self.repo.store.get_stored(blob_id)
        if stored is None:
            self.report.collected_during_check += 1  # gc may delete what nothing references
            return
        try:
            blob_type, payload = self.repo.store.decode(blob_id, stored)
            if blob_type in RAW_TYPES:
                validator = self.validators.get(blob_type)
                if validator is not None:
                    validator(blob_id, [], payload)
            else:
                refs, body = unpack_structured(payload, blob_id)
                self._validate(Ref(blob_type, blob_id), refs, body, None)
            self.report.unreferenced_read += 1
        except (BlobCorrupt, UnsupportedFormat) as exc:
            where = " (condemned by gc)" if condemned else ""
            self.report.corrupt_unreferenced.append(Problem(getattr(exc, "blob_id", None) or blob_id, None,
                                                            _reason(exc) + where))

    def _gcstate_ids(self, state: str | None) -> set[str]:
        try:
            return set(load_gcstate(self.store, state))
        except (BlobMissing, BlobCorrupt):
            return set()

    def _judge(self, root_start: Any) -> None:
        """Missing history blobs are damage unless gc removed them on purpose: they lie below
        the retain floor (at the start or now), or in a sweep set we saw, or (gc state blobs) a
        gc transition replaced them while we read."""
        self.snap._guard()  # our pin must have held the whole time, or nothing below is proven
        root_end, _ = self.repo.read_root()
        floor = max(root_start.retain_floor, root_end.retain_floor)
        sweeping = self._gcstate_ids(root_start.sweeping) | self._gcstate_ids(root_end.sweeping)
        epoch_moved = root_end.gc_epoch != root_start.gc_epoch
        for problem, seq, mode in self.tentative:
            excused = (mode == "below-floor" or problem.blob in sweeping
                       or (seq is not None and seq < floor) or (mode == "gcstate" and epoch_moved))
            if excused:
                self.report.collected_during_check += 1
                if mode in ("history", "below-floor") and problem.reason == "generation is missing" and seq is not None:
                    self.report.history_collected_below_seq = seq + 1
            else:
                self.report.dangling.append(problem)
