"""Where one generation keeps its packed structured blobs, from one scan of `_blobs` (FORMAT.md §12.7.7).

A whole-repository walk (gc's mark) reads every FILE and TREE blob once. Locating each by its
own index descent decodes one `_blobs` leaf per blob: at 10^7 chunks and 6 * 10^5 FILE blobs
that is 6 * 10^5 leaf decodes of ~250 entries each, against ~4 * 10^4 for one ordered scan of
the whole namespace. The scan keeps only the structured entries (a CHUNK's value is skipped by
its first two bytes, without decoding it), in sorted flat arrays: 57 bytes per structured blob,
nothing per chunk. The locations are the generation's own (§12.5), so a walk of that
generation reads exactly what it would read through `Repository.locate`.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left
from typing import Iterator

from .btree import Entry
from .codec import BlobType
from .errors import BlobCorrupt
from .packs import LOCATIONS_NAMESPACE, Location
from .records import Generation
from .repository import Repository, location_of

# Location.to_value of a CHUNK starts with these bytes (a 4-array, then type 1): skipped undecoded.
_CHUNK_VALUE_HEAD = bytes([0x94, int(BlobType.CHUNK)])
# A walk switches from descents to the scan once it has located this share of the generation's
# entries (as a count of blobs) one descent at a time: the scan costs about one leaf decode per
# ~250 entries, a descent about one, so past ~1/2048 of the entries the scan is the cheaper.
SCAN_AFTER_SHARE = 1 / 2048
SCAN_AFTER_MIN = 1024


def _locations(repo: Repository, gen: Generation) -> Iterator[Entry]:
    return repo.index.iterate_namespace(gen.index, LOCATIONS_NAMESPACE, gen.id)


class StructuredLocations:
    """The `_blobs` locations of one generation's packed blobs other than CHUNKs, looked up by
    ID. An entry whose value does not decode is left out: a walk then locates that blob by
    descent, which raises the error naming it, as without the map."""

    def __init__(self, repo: Repository, gen: Generation) -> None:
        self.generation = gen.id
        self._prefixes = array("Q")
        self._ids = bytearray()
        self._packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._pack = array("I")
        self._offset = array("Q")
        self._length = array("I")
        self._type = array("B")
        for e in _locations(repo, gen):  # ascending IDs: the arrays are built sorted
            value = e.value
            if value is not None and value[:2] == _CHUNK_VALUE_HEAD:
                continue
            try:
                loc = location_of(e, e.key, gen.id)
            except BlobCorrupt:
                continue
            if loc is None or loc.type is BlobType.CHUNK:
                continue
            raw = bytes.fromhex(e.key)
            number = self._pack_numbers.get(loc.pack)
            if number is None:
                number = self._pack_numbers[loc.pack] = len(self._packs)
                self._packs.append(loc.pack)
            self._prefixes.append(int.from_bytes(raw[:8], "big"))
            self._ids += raw
            self._pack.append(number)
            self._offset.append(loc.offset)
            self._length.append(loc.length)
            self._type.append(int(loc.type))

    def __len__(self) -> int:
        return len(self._prefixes)

    def get(self, blob_id: str) -> Location | None:
        try:
            raw = bytes.fromhex(blob_id)
        except ValueError:
            return None
        prefix = int.from_bytes(raw[:8], "big")
        i = bisect_left(self._prefixes, prefix)
        while i < len(self._prefixes) and self._prefixes[i] == prefix:
            if self._ids[32 * i:32 * i + 32] == raw:
                return Location(BlobType(self._type[i]), self._packs[self._pack[i]], self._offset[i], self._length[i])
            i += 1
        return None

    @property
    def nbytes(self) -> int:
        arrays = (self._prefixes, self._pack, self._offset, self._length, self._type)
        return len(self._ids) + sum(a.itemsize * len(a) for a in arrays)


def scan_after(gen: Generation) -> int:
    """How many blobs of `gen` a walk locates by descent before building its map."""
    return max(SCAN_AFTER_MIN, int(gen.entries * SCAN_AFTER_SHARE))
