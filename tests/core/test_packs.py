"""Format 2 building blocks (spec/FORMAT.md §12): packs and their TOC, locations, the compact mark
set and gc's pack decisions, against the vectors in spec/vectors/."""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casbackup.backends import LocalBackend, MemoryBackend
from casbackup.codec import BlobType, decode_blob, encode_blob
from casbackup.errors import BlobCorrupt, UsageError
from casbackup.layout import pack_key
from casbackup.markset import PrefixSet
from casbackup.packrules import PackDecision, PackFacts, decide
from casbackup.packs import (TRAILER_LEN, Location, PackBuilder, PackClass, read_blob, read_toc, split_pack)

V2 = Path(__file__).resolve().parents[2] / "spec" / "vectors"
PACKS = json.loads((V2 / "packs.json").read_text())
DECISIONS = json.loads((V2 / "gc-decisions.json").read_text())


def _built(payloads: list[bytes], level: int | None = 3) -> tuple[PackBuilder, bytes, list]:
    builder = PackBuilder(PackClass.DATA)
    blobs = [encode_blob(BlobType.CHUNK, p, level) for p in payloads]
    for b in blobs:
        builder.add(b)
    return builder, builder.finish(level), blobs


@pytest.mark.parametrize("vector", PACKS["packs"], ids=[v["name"] for v in PACKS["packs"]])
def test_pack_vector_reads_back_every_blob(vector: dict) -> None:
    stored = bytes.fromhex(vector["stored_hex"])
    pack_class, pairs = split_pack(vector["pack_id"], stored)
    assert int(pack_class) == vector["class"]
    got = [(item, envelope) for item, envelope in pairs]
    assert [(int(i.location.type), i.id, i.location.offset, i.location.length) for i, _ in got] == [
        (b["type"], b["id"], b["offset"], b["length"]) for b in vector["blobs"]]
    for (item, envelope), spec in zip(got, vector["blobs"]):
        decode_blob(item.id, envelope, BlobType(spec["type"]))  # every blob verifies by its ID
        loc = Location.from_value(bytes.fromhex(spec["location_value_hex"]), item.id)
        assert loc == item.location and loc.pack == vector["pack_id"]


@pytest.mark.parametrize("vector", PACKS["packs"], ids=[v["name"] for v in PACKS["packs"]])
def test_pack_vector_is_what_the_builder_writes(vector: dict) -> None:
    """Uncompressed blobs and TOC with a fixed pack ID: the bytes are exact."""
    stored = bytes.fromhex(vector["stored_hex"])
    _, pairs = split_pack(vector["pack_id"], stored)
    builder = PackBuilder(PackClass(vector["class"]), vector["pack_id"])
    for item, envelope in pairs:
        builder.add(_encoded(item.id, item.location.type, envelope))
    assert builder.finish(level=None) == stored


def _encoded(blob_id: str, blob_type: BlobType, envelope: bytes):  # type: ignore[no-untyped-def]
    from casbackup.codec import EncodedBlob
    return EncodedBlob(blob_id, blob_type, envelope, 0)


@pytest.mark.parametrize("vector", PACKS["corrupt"], ids=[v["name"] for v in PACKS["corrupt"]])
def test_corrupt_pack_vectors_are_refused(vector: dict) -> None:
    with pytest.raises(BlobCorrupt, match=vector["error"]):
        _, pairs = split_pack(vector["pack_id"], bytes.fromhex(vector["stored_hex"]))
        list(pairs)


@pytest.mark.parametrize("backend_kind", ["local", "memory"])
def test_toc_and_blobs_by_ranged_reads(tmp_path: Path, backend_kind: str) -> None:
    backend = LocalBackend(str(tmp_path / "r"), create=True) if backend_kind == "local" else MemoryBackend()
    builder, stored, blobs = _built([secrets.token_bytes(3000), b"abc" * 5000, b""])
    assert backend.create(pack_key(builder.pack_id), stored)
    pack_class, items = read_toc(backend, builder.pack_id, len(stored))
    assert pack_class is PackClass.DATA and [i.id for i in items] == [b.id for b in blobs]
    for item, blob in zip(items, blobs):
        assert read_blob(backend, item.id, item.location) == blob.stored


def test_a_blob_is_added_once() -> None:
    builder = PackBuilder(PackClass.DATA)
    blob = encode_blob(BlobType.CHUNK, b"same bytes")
    first = builder.add(blob)
    assert builder.add(blob) == first and len(builder) == 1 and blob.id in builder


def test_classes_never_mix() -> None:
    with pytest.raises(UsageError, match="does not belong"):
        PackBuilder(PackClass.DATA).add(encode_blob(BlobType.TREE, b"\x92\x90\x80"))
    with pytest.raises(UsageError, match="empty pack"):
        PackBuilder(PackClass.METADATA).finish()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=8, unique=True), st.data())
def test_every_byte_flip_in_a_pack_is_detected(payloads: list[bytes], data: st.DataObject) -> None:
    """S1/S5: a flipped byte anywhere (header, a blob, the TOC, the trailer) is refused by the
    layout checks or by the blob's own checksum and ID."""
    builder, stored, blobs = _built(payloads, level=data.draw(st.sampled_from([None, 3])))
    pos = data.draw(st.integers(0, len(stored) - 1))
    bad = stored[:pos] + bytes([stored[pos] ^ (1 << data.draw(st.integers(0, 7)))]) + stored[pos + 1:]
    with pytest.raises(BlobCorrupt):
        _, pairs = split_pack(builder.pack_id, bad)
        for item, envelope in pairs:
            decode_blob(item.id, envelope, item.location.type)


def test_truncated_pack_is_refused() -> None:
    builder, stored, _ = _built([b"x" * 100])
    for cut in (1, TRAILER_LEN, len(stored) // 2, len(stored) - 9):
        with pytest.raises(BlobCorrupt):
            _, pairs = split_pack(builder.pack_id, stored[:-cut])
            list(pairs)


@pytest.mark.parametrize("value", [b"\x93\x01\x02\x03", b"\x94\x03" + b"\xc4\x20" + b"\x00" * 32 + b"\x08\x30",
                                   b"\x94\x01" + b"\xc4\x20" + b"\x00" * 32 + b"\x00\x30",
                                   b"\x94\x01" + b"\xc4\x20" + b"\x00" * 32 + b"\x08\x01"])
def test_bad_location_values_are_corrupt(value: bytes) -> None:
    with pytest.raises(BlobCorrupt):
        Location.from_value(value, "b" * 64)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=300), st.lists(st.binary(min_size=32, max_size=32),
                                                                            max_size=100))
def test_prefix_set_has_no_false_negatives(members: list[bytes], others: list[bytes]) -> None:
    """gc may keep a dead blob on a prefix collision, never drop a live one (S4)."""
    marks = PrefixSet()
    marks.update(m.hex() for m in members + members)  # duplicates are fine
    marks.freeze()
    assert all(m.hex() in marks for m in members)
    assert len(marks) == len({m[:8] for m in members})
    for o in others:
        if o[:8] not in {m[:8] for m in members}:
            assert o.hex() not in marks


def test_prefix_set_is_eight_bytes_per_blob() -> None:
    marks = PrefixSet()
    marks.update(secrets.token_hex(32) for _ in range(20_000))
    marks.freeze()
    assert marks.nbytes == 8 * len(marks) == 8 * 20_000
    with pytest.raises(ValueError):
        marks.add("00" * 32)


@pytest.mark.parametrize("case", DECISIONS["cases"], ids=[c["name"] for c in DECISIONS["cases"]])
def test_gc_decision_vectors(case: dict) -> None:
    facts = PackFacts(case["mtime"], case["live"], case["body_bytes"], case["live_bytes"], case.get("sweeping", False))
    assert decide(facts, case["now"], case["grace"], case["repack_below"]) is PackDecision(case["decision"])
