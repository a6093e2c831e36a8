"""The implementation reproduces spec/vectors/ and reads the golden repository (spec §4, §6)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgpack
import pytest

from casbackup.backends import LocalBackend
from casbackup.check import check
from casbackup.codec import BlobType, blob_id, decode_blob, encode_blob, packb, unpack_structured
from casbackup.repository import Repository

VECTORS = Path(__file__).resolve().parent.parent / "spec" / "vectors"
BLOBS = json.loads((VECTORS / "blobs.json").read_text())


@pytest.mark.parametrize("vector", BLOBS, ids=[v["name"] for v in BLOBS])
def test_blob_vector(vector: dict) -> None:
    blob_type = BlobType(vector["type"])
    payload = bytes.fromhex(vector["payload_hex"])
    stored = bytes.fromhex(vector["stored_hex"])
    assert blob_id(blob_type, payload) == vector["id"]
    assert decode_blob(vector["id"], stored) == (blob_type, payload)
    encoded = encode_blob(blob_type, payload, vector["compression_level"])
    assert encoded.id == vector["id"]
    if vector["compression_level"] is None:
        assert encoded.stored == stored  # uncompressed encodings are canonical byte for byte
    if blob_type not in (BlobType.CHUNK, BlobType.VALUE):
        obj = msgpack.unpackb(payload, raw=False)
        assert packb(obj) == payload  # canonical: re-encoding gives the same bytes
        unpack_structured(payload, vector["id"])


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
    assert report.ok and report.orphans == 0 and report.blobs_reachable == report.blobs_stored


def test_golden_repository_blobs_all_verify() -> None:
    for path in (VECTORS / "golden-repo" / "blobs").rglob("*"):
        if path.is_file():
            decode_blob(path.name, path.read_bytes())
