"""The verified blob store: every read is checked against its ID; every write is create-only."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .backends.base import Backend, ObjectInfo, delete_keys
from .backends.listing import HEX_FANOUT, fanout_prefixes, list_concurrency, list_prefixes
from .codec import (
    HEADER_LEN,
    MAGIC,
    RAW_TYPES,
    BlobType,
    EncodedBlob,
    Ref,
    blob_id,
    decode_blob,
    encode_blob,
    is_blob_id,
    pack_structured,
    unpack_structured,
)
from .cas import resolve
from .errors import BlobCorrupt, BlobMissing, KeyMissing, UsageError
from .layout import BLOB_PREFIX, PACK_PREFIX, blob_key, pack_key
from .packs import PACKED_TYPES, Location, PackBuilder, TocItem, read_blob, read_toc, split_pack

if TYPE_CHECKING:
    from .packs import PackClass
    from .sealing import Suite

__all__ = ["BLOB_PREFIX", "BlobStore", "Locator", "PACK_MEMBER", "PutResult", "blob_key", "is_pack_member", "pack_member"]

# A gc set names storage objects: a loose blob by its ID, a pack as "pack:<id>" (FORMAT.md §12.7.2
# stores them in two lists; in memory one dict of either kind keeps gc's set logic unchanged).
PACK_MEMBER = "pack:"


def pack_member(pack_id: str) -> str:
    return PACK_MEMBER + pack_id


def is_pack_member(member: str) -> bool:
    return member.startswith(PACK_MEMBER)


# Where a packed blob is in one generation (FORMAT.md §12.5): set by the repository, which owns
# generations and their index; the store only reads the range it is given.
Locator = Callable[[str, str], "Location | None"]


@dataclass(frozen=True)
class PutResult:
    ref: Ref
    created: bool  # False: the blob already existed (dedup), which GC's rescue rule must know
    stored_size: int


# The decoded-blob cache holds at most this many payload bytes. Payload bytes stand in for
# memory: a decoded blob takes up to ~80x its payload (one empty container per byte), so 1 MiB
# bounds the cache at ~80 MiB even on a hostile repository, while holding ~64 leaf pages of
# 16 KiB plus the internal pages above them. A blob over 1/8 of it is never cached, so one
# large blob cannot flush everything, and a walk (check, gc) over millions of blobs keeps the
# cache at its bound rather than growing with their count.
DEFAULT_CACHE_BYTES = 1024 * 1024
CACHE_ENTRY_FRACTION = 8
# Keys in an object store's listing page (S3 ListObjectsV2's maximum), and the pages a blob
# listing reads in sequence before it is redone as the 256 fan-out folders listed concurrently:
# below about 16 pages, 256 listings in flight 16 at a time take longer than the pages in a row.
LISTING_PAGE = 1000
FANOUT_AFTER_PAGES = 16


def listing_rounds(blobs: int, concurrency: int) -> float:
    """About how many request round trips, one after another, the blob listing of an object store
    holding `blobs` blobs takes with `concurrency` requests in flight: gc weighs it against stats."""
    pages = blobs // LISTING_PAGE + 1
    if pages <= FANOUT_AFTER_PAGES:
        return pages
    return FANOUT_AFTER_PAGES + (len(HEX_FANOUT) + pages) / max(1, concurrency)


class BlobStore:
    def __init__(self, backend: Backend, level: int | None = 3, cache_entries: int = 256,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, suite: Suite | None = None) -> None:
        self.backend = backend
        self.level = level
        # The repository's keys when it is encrypted (spec §13): keyed IDs, sealed envelopes.
        self.suite = suite
        self.id_key = suite.id_key if suite is not None else None
        # Small on purpose: decoded leaf pages are large Python structures, and a big cache
        # makes the cyclic GC rescan them (listing 10^6 entries got ~40% slower at 4096).
        self._cache: OrderedDict[str, tuple[tuple[list[Ref], Any], int]] = OrderedDict()
        self._cache_size = cache_entries
        self._cache_bytes = cache_bytes
        self._cache_max_entry = cache_bytes // CACHE_ENTRY_FRACTION
        self._cached_bytes = 0
        self._cache_lock = threading.Lock()
        self.locator: Locator | None = None

    # ---- the codec, with this repository's keys --------------------------------------

    def blob_id(self, blob_type: int, payload: bytes | memoryview) -> str:
        return blob_id(blob_type, payload, self.id_key)

    def encode(self, blob_type: BlobType, payload: bytes) -> EncodedBlob:
        return encode_blob(blob_type, payload, self.level, self.suite)

    def decode(self, expected_id: str, stored: bytes, expected_type: BlobType | None = None) -> tuple[BlobType, bytes]:
        return decode_blob(expected_id, stored, expected_type, self.suite)

    def read_toc(self, pack_id: str, size: int) -> tuple[PackClass, list[TocItem]]:
        return read_toc(self.backend, pack_id, size, self.suite)

    def split_pack(self, pack_id: str, data: bytes) -> tuple[PackClass, Iterator[tuple[TocItem, bytes]]]:
        return split_pack(pack_id, data, self.suite)

    # ---- writes ------------------------------------------------------------------------

    def put(self, blob_type: BlobType, payload: bytes) -> PutResult:
        return self.put_encoded(self.encode(blob_type, payload))

    def put_structured(self, blob_type: BlobType, refs: list[Ref], body: Any) -> PutResult:
        return self.put(blob_type, pack_structured(refs, body, blob_type))

    def put_encoded(self, blob: EncodedBlob) -> PutResult:
        """A loose blob (PAGE, GENERATION, GCSTATE); packed types go into a transaction's packs."""
        if blob.type in PACKED_TYPES:
            raise UsageError(f"a {blob.type.name} blob is stored in a pack, through a transaction")
        key = blob_key(blob.id)
        # A lost reply is resolved by asking again: create-if-absent of identical bytes is
        # idempotent, and a repeat that finds our own first attempt answers "existed".
        created = resolve(lambda: self.backend.create(key, blob.stored), lambda: None, f"the upload of blob {blob.id}")
        return PutResult(Ref(blob.type, blob.id), created, len(blob.stored))

    def put_pack(self, pack: PackBuilder) -> int:
        """Write a finished pack with one create (§12.3); returns its size. A lost reply is asked
        again: the name is random, so "exists" can only be our own first attempt."""
        data = pack.finish(self.level, self.suite)
        resolve(lambda: self.backend.create(pack_key(pack.pack_id), data), lambda: None, f"the upload of pack {pack.pack_id}")
        return len(data)

    # ---- reads -------------------------------------------------------------------------

    def locate(self, ref: Ref, generation: str | None, known: Location | None = None) -> Location:
        """Where a packed blob is in `generation` (its own index, never another's: §12.5);
        `known` is that location already found by the caller (a scan of the same index)."""
        if known is not None:
            loc: Location | None = known
        elif generation is None or self.locator is None:
            raise UsageError(f"a {ref.type.name} blob is read through the generation that locates it")
        else:
            loc = self.locator(generation, ref.id)
        if loc is None:
            raise BlobMissing(ref.id, generation)
        if loc.type != ref.type:
            raise BlobCorrupt(ref.id, f"located as a {loc.type.name} blob, referenced as {ref.type.name}", generation)
        return loc

    def _stored(self, ref: Ref, generation: str | None, known: Location | None = None) -> bytes:
        if ref.type in PACKED_TYPES:
            return self.get_at(ref, self.locate(ref, generation, known), generation)
        try:
            return self.backend.get(blob_key(ref.id))
        except KeyMissing:
            raise BlobMissing(ref.id, generation) from None

    def get_at(self, ref: Ref, loc: Location, generation: str | None = None) -> bytes:
        """The stored envelope at a known location, unverified; BlobMissing if its pack is gone."""
        try:
            return read_blob(self.backend, ref.id, loc)
        except KeyMissing:
            raise BlobMissing(ref.id, generation) from None
        except BlobCorrupt as exc:
            raise BlobCorrupt(ref.id, exc.reason, generation) from None

    def get_run(self, run: Sequence[tuple[Ref, Location]], generation: str | None = None) -> list[bytes]:
        """Verified payloads of blobs of one pack, in `run`'s order, read with one ranged read
        spanning them all (§12.5: a restore coalesces nearby ranges; the caller bounds the span
        and the gaps). Errors name the blob at fault."""
        pack = run[0][1].pack
        if any(loc.pack != pack for _, loc in run):
            raise UsageError(f"a run of blobs spans more than pack {pack}")
        start = min(loc.offset for _, loc in run)
        end = max(loc.offset + loc.length for _, loc in run)
        try:
            data = self.backend.get_range(pack_key(pack), start, end - start)
        except KeyMissing:
            raise BlobMissing(run[0][0].id, generation) from None
        out: list[bytes] = []
        for ref, loc in run:
            if loc.type != ref.type:
                raise BlobCorrupt(ref.id, f"located as a {loc.type.name} blob, referenced as {ref.type.name}", generation)
            at = loc.offset - start
            if at + loc.length > len(data):
                raise BlobCorrupt(ref.id, f"pack {pack} ends inside the blob ({len(data) - at} of {loc.length} bytes)",
                                  generation)
            try:
                out.append(self.decode(ref.id, data[at:at + loc.length], ref.type)[1])
            except BlobCorrupt as exc:
                raise BlobCorrupt(ref.id, exc.reason, generation) from None
        return out

    def get(self, ref: Ref, generation: str | None = None, known: Location | None = None) -> bytes:
        """Verified payload of a blob; BlobMissing / BlobCorrupt name the blob and generation.
        `known`: the blob's location in `generation`, when the caller already has it."""
        stored = self._stored(ref, generation, known)
        try:
            _, payload = self.decode(ref.id, stored, ref.type)
        except BlobCorrupt as exc:
            raise BlobCorrupt(ref.id, exc.reason, generation) from None
        return payload

    def get_structured(self, ref: Ref, generation: str | None = None, cache: bool = True,
                       known: Location | None = None) -> tuple[list[Ref], Any]:
        """Verified, decoded structured blob. cache=False neither fills nor evicts the decode
        cache (a full scan would otherwise push out everything useful); `known` as for get."""
        if ref.type in RAW_TYPES:
            raise BlobCorrupt(ref.id, f"{ref.type.name} blobs have no structure", generation)
        with self._cache_lock:
            hit = self._cache.get(ref.id)
            if hit is not None:
                self._cache.move_to_end(ref.id)
                return hit[0]
        payload = self.get(ref, generation, known)
        try:
            decoded = unpack_structured(payload, ref.id)
        except BlobCorrupt as exc:
            raise BlobCorrupt(ref.id, exc.reason, generation) from None
        if cache and len(payload) <= self._cache_max_entry:
            self._remember(ref.id, decoded, len(payload))
        return decoded

    def _remember(self, blob_id: str, decoded: tuple[list[Ref], Any], size: int) -> None:
        with self._cache_lock:
            old = self._cache.pop(blob_id, None)
            if old is not None:
                self._cached_bytes -= old[1]
            self._cache[blob_id] = (decoded, size)
            self._cached_bytes += size
            while self._cache and (len(self._cache) > self._cache_size or self._cached_bytes > self._cache_bytes):
                _, (_, evicted) = self._cache.popitem(last=False)
                self._cached_bytes -= evicted

    @property
    def cache_stats(self) -> tuple[int, int]:
        """(entries, payload bytes) held by the decoded-blob cache."""
        with self._cache_lock:
            return len(self._cache), self._cached_bytes

    def clear_cache(self) -> None:
        """Forget decoded blobs, so the next reads verify the stored bytes again (check)."""
        with self._cache_lock:
            self._cache.clear()
            self._cached_bytes = 0

    def exists(self, blob_id: str) -> bool:
        return self.stat(blob_id) is not None

    def stat(self, blob_id: str) -> ObjectInfo | None:
        """The stored blob's size and mtime (gc's age test), or None if it is not stored."""
        try:
            return self.backend.stat(blob_key(blob_id))
        except KeyMissing:
            return None

    def get_stored(self, blob_id: str) -> bytes | None:
        """The stored envelope, unverified and uncached, or None: for check and repair, which
        decode it themselves so they can name what is wrong with it."""
        try:
            return self.backend.get(blob_key(blob_id))
        except KeyMissing:
            return None

    def stored_type(self, blob_id: str) -> int | None:
        """The envelope's type byte read from its header alone (repair's scan for GENERATIONs),
        or None if the blob is gone or does not start with a casbackup header."""
        try:
            head = self.backend.get_range(blob_key(blob_id), 0, HEADER_LEN)
        except KeyMissing:
            return None
        if len(head) < HEADER_LEN or head[:4] != MAGIC:
            return None
        return head[5]

    def list_packs(self) -> Iterator[tuple[str, ObjectInfo]]:
        """(pack id, info) for every stored pack; foreign keys under packs/ are skipped."""
        for info in self._list_keys(PACK_PREFIX):
            name = info.key.rsplit("/", 1)[-1]
            if is_blob_id(name) and info.key == pack_key(name):
                yield name, info

    def stat_pack(self, pack_id: str) -> ObjectInfo | None:
        try:
            return self.backend.stat(pack_key(pack_id))
        except KeyMissing:
            return None

    def delete_pack(self, pack_id: str) -> None:
        self.backend.delete(pack_key(pack_id))

    # ---- storage objects: what gc deletes (a loose blob, or a pack as "pack:<id>") ----------

    def stat_object(self, member: str) -> ObjectInfo | None:
        return self.stat_pack(member[len(PACK_MEMBER):]) if is_pack_member(member) else self.stat(member)

    def exists_object(self, member: str) -> bool:
        return self.stat_object(member) is not None

    def delete_object(self, member: str) -> None:
        if is_pack_member(member):
            self.delete_pack(member[len(PACK_MEMBER):])
        else:
            self.delete(member)

    def list_objects(self) -> Iterator[tuple[str, ObjectInfo]]:
        """Every storage object gc may delete: loose blobs by ID, packs as pack members."""
        yield from self.list()
        for pack_id, info in self.list_packs():
            yield pack_member(pack_id), info

    def list(self) -> Iterator[tuple[str, ObjectInfo]]:
        """(blob id, info) for every stored blob; foreign keys under blobs/ are skipped."""
        for info in self._list_keys():
            name = info.key.rsplit("/", 1)[-1]
            if is_blob_id(name) and info.key == blob_key(name):
                yield name, info

    def _list_keys(self, prefix: str = BLOB_PREFIX) -> Iterator[ObjectInfo]:
        """The listing of blobs/ (or packs/). On an object store, a listing longer than FANOUT_AFTER_PAGES
        pages is redone as the 256 fan-out folders listed concurrently (every blob key is in one
        of them, so the merged listing is the same, in the same order)."""
        workers = list_concurrency(self.backend)
        if workers == 1:
            yield from self.backend.list(prefix)
            return
        plain = self.backend.list(prefix)
        first = list(islice(plain, LISTING_PAGE * FANOUT_AFTER_PAGES))
        if len(first) < LISTING_PAGE * FANOUT_AFTER_PAGES:  # the whole listing fitted
            yield from first
            return
        del first, plain  # abandoned: the concurrent listing starts over
        yield from list_prefixes(self.backend, fanout_prefixes(prefix), workers)

    def delete(self, blob_id: str) -> None:
        self.delete_many([blob_id])

    def delete_many(self, blob_ids: Sequence[str]) -> None:
        """Delete storage objects (loose blobs, pack members) in the backend's batches (one
        request per batch on object stores)."""
        with self._cache_lock:
            for blob_id in blob_ids:
                old = self._cache.pop(blob_id, None)
                if old is not None:
                    self._cached_bytes -= old[1]
        delete_keys(self.backend, [pack_key(i[len(PACK_MEMBER):]) if is_pack_member(i) else blob_key(i)
                                   for i in blob_ids])
