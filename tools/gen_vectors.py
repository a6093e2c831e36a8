"""Regenerate spec/vectors/ (blob and record vectors, and the golden repository).

Run from the project root: python tools/gen_vectors.py [blobs] [records] [msgpack] [golden]
(no argument: all four). The golden repository is rebuilt from scratch, with new random IDs, so
name only what changed; commit the result together with any change to what lands on storage,
and tests/test_vectors.py checks the implementation against it. spec/vectors/README.md
describes the JSON conventions the files follow.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from casbackup.backends import LocalBackend  # noqa: E402
from casbackup.codec import BlobType, Ref, encode_blob, pack_structured, packb  # noqa: E402
from casbackup.files.snapshots import NAMESPACE as SNAPSHOTS, SnapshotInfo, new_id  # noqa: E402
from casbackup.files.tree import Node, tree_body  # noqa: E402
from casbackup.records import (GC_LEASE_KEY, PIN_PREFIX, ROOT_KEY, Config, LeaseRecord, PinRecord,  # noqa: E402
                               Root)
from casbackup.repository import Repository  # noqa: E402

VECTORS = ROOT / "spec" / "vectors"


def stream_snapshot() -> tuple[bytes, list[object]]:
    """A valid snapshot of a stream (spec/files.md §6): its root TREE payload, and the index
    entry that names it (key = snapshot ID, value = the snapshot map, refs = [the root TREE])."""
    content = b"hello, casbackup\n"
    root = [Node(b"hello.txt", "file", mode=0o644, mtime_ns=1_700_000_000_000_000_000, uid=1000, gid=1000,
                 size=len(content), data=content)]
    tree = pack_structured(*tree_body(root), BlobType.TREE)
    tree_ref = Ref(BlobType.TREE, encode_blob(BlobType.TREE, tree, level=None).id)
    value = SnapshotInfo("", 1_700_000_001.5, "host1", "alice", ["hello.txt"], ["daily"], tree_ref.id, None,
                         {"files_new": 1, "total_bytes": len(content)}).value()
    return tree, [SNAPSHOTS, new_id(value), value, None, [tree_ref.to_bytes()]]


def blob_vectors() -> list[dict[str, object]]:
    page_entry = ["ns", "key", b"value", None, []]
    chunk = encode_blob(BlobType.CHUNK, b"hello, casbackup\n", level=None)
    snapshot_tree, snapshot_entry = stream_snapshot()
    tree_ref = Ref.from_bytes(snapshot_entry[4][0], "vector")  # type: ignore[index]
    cases: list[tuple[str, BlobType, bytes, int | None]] = [
        ("empty chunk", BlobType.CHUNK, b"", None),
        ("small chunk, stored uncompressed", BlobType.CHUNK, b"hello, casbackup\n", None),
        ("same bytes as a VALUE: a different ID", BlobType.VALUE, b"hello, casbackup\n", None),
        ("compressible chunk, zstd level 3", BlobType.CHUNK, b"abcdefgh" * 512, 3),
        ("leaf page with one inline entry", BlobType.PAGE, pack_structured([], [0, [page_entry]]), None),
        ("root TREE of a stream snapshot: one inline file", BlobType.TREE, snapshot_tree, None),
        ("leaf page holding that snapshot's entry (its refs name the root TREE)", BlobType.PAGE,
         pack_structured([tree_ref], [0, [snapshot_entry]]), None),
        ("gc state", BlobType.GCSTATE,
         pack_structured([], {"kind": "condemned", "blobs": [[bytes.fromhex(chunk.id), 1700000000.0]]}), None),
    ]
    out = []
    for name, blob_type, payload, level in cases:
        enc = encode_blob(blob_type, payload, level)
        out.append({
            "name": name,
            "type": int(blob_type),
            "payload_hex": payload.hex(),
            "compression_level": level,
            "stored_hex": enc.stored.hex(),
            "id": enc.id,
        })
    return out


def record_vectors() -> list[dict[str, object]]:
    """One stored record of each type with fixed fields: the bytes are canonical (records are
    never compressed), so another implementation must reproduce them exactly."""
    gen = "3d" * 32
    records = [
        ("config", "config", Config(repo_id="0123456789abcdef0123456789abcdef", created=1700000000.25,
                                     chunk_min=262144, chunk_avg=1048576, chunk_max=4194304)),
        ("root", ROOT_KEY, Root(generation=gen, seq=7, write_id="fedcba9876543210fedcba9876543210", gc_epoch=2,
                                condemned="0e" * 32, sweeping=None, retain_floor=3, time=1700000100.5)),
        ("pin", f"{PIN_PREFIX}1700000200-00112233aabbccdd",
         PinRecord(pin_id="1700000200-00112233aabbccdd", generation=gen, seq=7, host="host1", pid=4242,
                   purpose="restore", created=1700000200.0, expires=1700000800.0)),
        ("gc lease", GC_LEASE_KEY, LeaseRecord(holder="a1b2c3d4e5f60718", host="host2", pid=99, expires=1700000900.0)),
    ]
    out = []
    for name, key, record in records:
        out.append({
            "name": name,
            "key": key,
            "type": int(record.KIND),
            "fields": {k: v for k, v in vars(record).items()},
            "stored_hex": record.encode().hex(),
        })
    return out


def msgpack_vectors() -> list[dict[str, object]]:
    values = [
        {"b": 1, "a": [1, -1, 255, 65536, 2**40], "c": None},
        ["text", b"\x00\x01", True, False, 1.5],
    ]
    return [{"value_json": json.dumps(v, default=lambda b: {"hex": b.hex()}), "packed_hex": packb(v).hex()}
            for v in values]


def golden_repository() -> dict[str, object]:
    target = VECTORS / "golden-repo"
    if target.exists():
        shutil.rmtree(target)
    repo = Repository.init(LocalBackend(target, create=True))
    repo.commit(puts=[("greetings", "en", b"hello"), ("greetings", "fr", b"bonjour")], message="first")
    with repo.transaction("second") as txn:
        ref = txn.put_blob(BlobType.CHUNK, b"chunk data " * 100).ref
        txn.put("files", "big", b"x" * 9000)  # stored as a VALUE blob
        txn.put("files", "with-ref", b"points at a chunk", refs=[ref])
        txn.delete("greetings", "fr")
    root, _ = repo.read_root()
    with repo.reader() as snap:
        entries = [{"namespace": e.namespace, "key": e.key, "value_hex": snap.value(e).hex(),
                    "refs": [r.id for r in e.refs]} for e in snap.list()]
    return {"head_generation": root.generation, "head_seq": root.seq, "entries": entries,
            "generations": [g.id for g in repo.log()]}


GENERATORS = {
    "blobs": ("blobs.json", blob_vectors),
    "records": ("records.json", record_vectors),
    "msgpack": ("msgpack.json", msgpack_vectors),
    "golden": ("golden-repo.json", golden_repository),
}


def main(which: list[str]) -> None:
    unknown = [w for w in which if w not in GENERATORS]
    if unknown:
        raise SystemExit(f"unknown vector set(s) {unknown}; choose from {sorted(GENERATORS)}")
    VECTORS.mkdir(parents=True, exist_ok=True)
    for name in which or list(GENERATORS):
        filename, build = GENERATORS[name]
        (VECTORS / filename).write_text(json.dumps(build(), indent=2) + "\n")  # type: ignore[operator]
        print(f"wrote {VECTORS / filename}")


if __name__ == "__main__":
    main(sys.argv[1:])
