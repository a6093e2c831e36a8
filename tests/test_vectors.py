"""The implementation reproduces spec/vectors/ and reads the golden repository (spec §4, §6)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import blake3
import msgpack
import pytest

from casbackup.backends import LocalBackend
from casbackup.check import check
from casbackup.codec import (BlobType, RecordType, blob_id, decode_blob, encode_blob, pack_structured, packb,
                             unpack_structured)
from casbackup.packs import split_pack
from casbackup.records import Config, LeaseRecord, PinRecord, Root
from casbackup.repository import Repository

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
BLOBS = json.loads((VECTORS / "blobs.json").read_text())
RECORDS = json.loads((VECTORS / "records.json").read_text())
RECORD_CLASSES = {RecordType.CONFIG: Config, RecordType.ROOT: Root, RecordType.PIN: PinRecord,
                  RecordType.LEASE: LeaseRecord}


def spec_checksum(header_and_body: bytes) -> bytes:
    """The envelope trailer exactly as spec/FORMAT.md §4.1 writes it, independent of codec.py."""
    return blake3.blake3(b"casbackup/v1/envelope\x00" + header_and_body).digest(16)


def assert_sealed(stored: bytes) -> None:
    assert stored[:4] == b"CASB" and stored[4] == 2
    assert stored[-16:] == spec_checksum(stored[:-16])


@pytest.mark.parametrize("vector", BLOBS, ids=[v["name"] for v in BLOBS])
def test_blob_vector(vector: dict) -> None:
    blob_type = BlobType(vector["type"])
    payload = bytes.fromhex(vector["payload_hex"])
    stored = bytes.fromhex(vector["stored_hex"])
    assert blob_id(blob_type, payload) == vector["id"]
    assert_sealed(stored)
    assert decode_blob(vector["id"], stored) == (blob_type, payload)
    encoded = encode_blob(blob_type, payload, vector["compression_level"])
    assert encoded.id == vector["id"]
    if vector["compression_level"] is None:
        assert encoded.stored == stored  # uncompressed encodings are canonical byte for byte
    if blob_type not in (BlobType.CHUNK, BlobType.VALUE):
        obj = msgpack.unpackb(payload, raw=False)
        assert packb(obj) == payload  # canonical: re-encoding gives the same bytes
        unpack_structured(payload, vector["id"])


@pytest.mark.parametrize("vector", RECORDS, ids=[v["name"] for v in RECORDS])
def test_record_vector(vector: dict) -> None:
    stored = bytes.fromhex(vector["stored_hex"])
    assert_sealed(stored)
    assert stored[5] == vector["type"] and stored[6] == 0 and stored[7] == 0  # records: never compressed
    payload = stored[8:-16]
    assert msgpack.unpackb(payload, raw=False) == vector["fields"]
    assert packb(vector["fields"]) == payload  # canonical map
    cls = RECORD_CLASSES[RecordType(vector["type"])]
    record = cls.decode(stored, vector["key"])
    assert vars(record) == vector["fields"]
    assert cls(**vector["fields"]).encode() == stored  # byte for byte


def test_type_is_part_of_the_id() -> None:
    ids = {v["id"] for v in BLOBS}
    assert len(ids) == len(BLOBS)


@pytest.mark.parametrize("vector", json.loads((VECTORS / "msgpack.json").read_text()))
def test_canonical_msgpack_vector(vector: dict) -> None:
    packed = bytes.fromhex(vector["packed_hex"])
    value = msgpack.unpackb(packed, raw=False)
    assert packb(value) == packed


def test_golden_repository_reads_and_checks(tmp_path: Path) -> None:
    expected = json.loads((VECTORS / "golden-repo.json").read_text())
    copy = tmp_path / "golden"
    shutil.copytree(VECTORS / "golden-repo", copy)
    repo = Repository.open(LocalBackend(copy))
    root, _ = repo.read_root()
    assert (root.generation, root.seq) == (expected["head_generation"], expected["head_seq"])
    with repo.reader() as snap:
        got = [{"namespace": e.namespace, "key": e.key, "value_hex": snap.value(e).hex(),
                "refs": [r.id for r in e.refs]} for e in snap.list()]
    assert got == expected["entries"]
    assert [g.id for g in repo.log()] == expected["generations"]
    report = check(repo, read_data=True)
    assert report.ok and report.orphans == 0 and report.blobs_stored == len(list(_stored_objects()))


def _stored_objects() -> list[Path]:
    """Every loose blob and pack of the golden repository (format v2: both are storage objects)."""
    return [p for d in ("blobs", "packs") for p in (VECTORS / "golden-repo" / d).rglob("*") if p.is_file()]


def test_golden_repository_blobs_all_verify() -> None:
    for path in (VECTORS / "golden-repo" / "blobs").rglob("*"):
        if path.is_file():
            assert_sealed(path.read_bytes())
    packs = list((VECTORS / "golden-repo" / "packs").rglob("*"))
    assert [p for p in packs if p.is_file()], "the golden repository holds packs (FORMAT.md §12.3)"
    for path in packs:
        if path.is_file():
            _, pairs = split_pack(path.name, path.read_bytes())
            for item, stored in pairs:
                assert_sealed(stored)
                decode_blob(item.id, stored, item.location.type)
    for path in (VECTORS / "golden-repo" / "blobs").rglob("*"):
        if path.is_file():
            decode_blob(path.name, path.read_bytes())
    for key, cls in (("config", Config), ("root", Root)):
        stored = (VECTORS / "golden-repo" / key).read_bytes()
        assert_sealed(stored)
        cls.decode(stored, key)


FILE_VECTORS = json.loads((VECTORS / "file.json").read_text())


@pytest.mark.parametrize("vector", FILE_VECTORS["files"], ids=[v["name"] for v in FILE_VECTORS["files"]])
def test_file_vector(vector: dict) -> None:
    """Each FILE body of FORMAT.md §6.4 (leaf, index, legacy Aptos) decodes to its list through
    the one codec, flattens to its stream, and is rebuilt byte for byte by the writers."""
    from casbackup import chunklist
    from casbackup.chunklist import Piece

    payload = bytes.fromhex(vector["payload_hex"])
    assert blob_id(BlobType.FILE, payload) == vector["id"]
    refs, body = unpack_structured(payload, vector["id"])
    assert [{"type": int(r.type), "id": r.id} for r in refs] == vector["refs"]
    assert packb(msgpack.unpackb(payload, raw=False)) == payload  # canonical
    items = [Piece(i, n) for i, n in vector["items"]]
    decoded = chunklist.decode_file(vector["id"], refs, body)
    assert (decoded.parts if vector["form"] == "index" else decoded.chunks) == items
    assert decoded.size == vector["size"]
    make = {"leaf": chunklist.leaf_body, "index": chunklist.index_body, "legacy": chunklist.legacy_body}
    assert pack_structured(*make[vector["form"]](items), BlobType.FILE) == payload

    blobs = {v["id"]: unpack_structured(bytes.fromhex(v["payload_hex"]), v["id"]) for v in FILE_VECTORS["files"]}
    stream = chunklist.iter_chunks(lambda ref: blobs[ref.id], vector["id"], vector["size"])
    assert [[c.id, c.size] for c in stream] == vector["stream"]
    for c in FILE_VECTORS["chunks"]:
        assert blob_id(BlobType.CHUNK, bytes.fromhex(c["payload_hex"])) == c["id"]


def test_file_vector_bodies_of_one_list_are_the_same_content() -> None:
    """The v1 leaf and the legacy body of one chunk list: two IDs, both known to file_ids (the
    "already stored?" checks of aptos.md accept either)."""
    from casbackup import chunklist
    from casbackup.chunklist import Piece

    by_form = {v["form"]: v for v in FILE_VECTORS["files"] if v["name"].endswith("A then B")}
    chunks = [Piece(i, n) for i, n in by_form["leaf"]["items"]]
    assert chunklist.file_ids(chunks) == (by_form["leaf"]["id"], by_form["legacy"]["id"])
    assert by_form["index"]["stream"] == by_form["leaf"]["stream"] == by_form["legacy"]["stream"]
