"""A synthetic Aptos backup, shaped like the real one (shared/APTOS.md, "Data files").

Chunk files are records of a big-endian u32 length plus payload; manifests are JSON that name
chunks and proofs by handle; metadata lines are the tool's externally tagged JSON, one per
line. Payloads are derived from the version (or epoch / key index), so any read can be
checked byte for byte without keeping the data around.
"""
from __future__ import annotations

import json
import random
import struct
from typing import Any, Protocol


class Storage(Protocol):
    def create_backup(self, name: str) -> str: ...
    def create_for_write(self, backup_handle: str, name: str, data: bytes) -> str: ...
    def open_for_read(self, handle: str) -> bytes: ...
    def save_metadata_lines(self, name: str, lines: list[bytes]) -> str: ...
    def list_metadata_files(self) -> list[str]: ...


def line(kind: str, **fields: Any) -> bytes:
    """serde_json's compact, externally tagged form, newline-terminated."""
    return (json.dumps({kind: fields}, separators=(",", ":")) + "\n").encode()


def payload(tag: str, n: int) -> bytes:
    rng = random.Random(f"{tag}:{n}")
    body = rng.randbytes(rng.randint(40, 400))
    return tag.encode() + struct.pack(">Q", n) + body


def records(tag: str, first: int, last: int) -> bytes:
    out = bytearray()
    for n in range(first, last + 1):
        p = payload(tag, n)
        out += struct.pack(">I", len(p)) + p
    return bytes(out)


def parse_records(data: bytes) -> list[bytes]:
    """Split a chunk; a length running past the end is an error, never an allocation."""
    out, off = [], 0
    while off < len(data):
        if off + 4 > len(data):
            raise ValueError(f"truncated record header at {off}")
        (n,) = struct.unpack_from(">I", data, off)
        if off + 4 + n > len(data):
            raise ValueError(f"record at {off} declares {n} bytes, only {len(data) - off - 4} left")
        out.append(data[off + 4: off + 4 + n])
        off += 4 + n
    return out


def suffix(rng: random.Random) -> str:
    return f".{rng.getrandbits(16):04x}"


def write_transaction_backup(st: Storage, first: int, last: int, per_chunk: int, rng: random.Random) -> bytes:
    bh = st.create_backup(f"transaction_{first}-{suffix(rng)}")
    chunks = []
    for a in range(first, last + 1, per_chunk):
        b = min(a + per_chunk - 1, last)
        txns = st.create_for_write(bh, f"{a}-{b}.chunk", records("txn", a, b))
        proof = st.create_for_write(bh, f"{a}-{b}.proof", json.dumps({"ledger_info": b, "range_proof": a}).encode())
        chunks.append({"first_version": a, "last_version": b, "transactions": txns, "proof": proof, "format": "V1"})
    manifest = st.create_for_write(bh, "transaction.manifest", json.dumps(
        {"first_version": first, "last_version": last, "chunks": chunks}).encode())
    return line("TransactionBackup", first_version=first, last_version=last, manifest=manifest)


def epoch_first_version(epoch: int) -> int:
    return epoch * 1000


def write_epoch_ending_backup(st: Storage, first: int, last: int, rng: random.Random) -> bytes:
    bh = st.create_backup(f"epoch_ending_{first}-{suffix(rng)}")
    infos = st.create_for_write(bh, f"{first}-.chunk", records("epoch", first, last))
    manifest = st.create_for_write(bh, "epoch_ending.manifest", json.dumps(
        {"first_epoch": first, "last_epoch": last, "waypoints": [f"{e}:{e:064x}" for e in range(first, last + 1)],
         "chunks": [{"first_epoch": first, "last_epoch": last, "ledger_infos": infos}]}).encode())
    return line("EpochEndingBackup", first_epoch=first, last_epoch=last, first_version=epoch_first_version(first),
                last_version=epoch_first_version(last + 1) - 1, manifest=manifest)


def write_state_snapshot(st: Storage, epoch: int, version: int, keys: int, per_chunk: int,
                         rng: random.Random) -> bytes:
    bh = st.create_backup(f"state_epoch_{epoch}_ver_{version}{suffix(rng)}")
    chunks = []
    for i, a in enumerate(range(0, keys, per_chunk)):
        b = min(a + per_chunk, keys) - 1
        blobs = st.create_for_write(bh, f"{i}.chunk", records(f"state{version}", a, b))
        proof = st.create_for_write(bh, f"{i}.proof", json.dumps({"first_idx": a, "last_idx": b}).encode())
        chunks.append({"first_idx": a, "last_idx": b, "first_key": f"{a:064x}", "last_key": f"{b:064x}",
                       "blobs": blobs, "proof": proof})
    root_proof = st.create_for_write(bh, "root.proof", json.dumps({"version": version}).encode())
    manifest = st.create_for_write(bh, "state.manifest", json.dumps(
        {"version": version, "epoch": epoch, "root_hash": f"{version:064x}", "chunks": chunks,
         "proof": root_proof}).encode())
    return line("StateSnapshotBackup", epoch=epoch, version=version, manifest=manifest)


def txn_meta_name(first: int, last: int) -> str:
    return f"transaction_{first}-{last}.meta"


def build(st: Storage, seed: int = 7, txn_ranges: int = 6, per_range: int = 100, epochs: int = 4,
          compact_txn: int = 4) -> dict[str, list[bytes]]:
    """Write a whole backup through `st`; returns {metadata file name: lines} as saved.

    The first `compact_txn` transaction ranges and the first half of the epochs are saved as
    compacted multi-line files; the rest as one-line files; plus a snapshot, the identity and
    compaction timestamps: all five kinds.
    """
    rng = random.Random(seed)
    saved: dict[str, list[bytes]] = {}
    txn_lines = []
    for i in range(txn_ranges):
        a = i * per_range
        txn_lines.append((a, a + per_range - 1, write_transaction_backup(st, a, a + per_range - 1, per_range if i else per_range // 2, rng)))
    ep_lines = [(e, write_epoch_ending_backup(st, e, e, rng)) for e in range(epochs)]
    snap = write_state_snapshot(st, 2, 2 * per_range + 50, 200, 100, rng)
    if compact_txn:
        group = txn_lines[:compact_txn]
        name = f"transaction_compacted_{group[0][0]}-{group[-1][1]}.meta"
        saved[name] = [x[2] for x in group]
    for a, b, ln in txn_lines[compact_txn:]:
        saved[txn_meta_name(a, b)] = [ln]
    half = epochs // 2
    if half:
        saved[f"epoch_ending_compacted_0-{half - 1}.meta"] = [x[1] for x in ep_lines[:half]]
    for e, ln in ep_lines[half:]:
        saved[f"epoch_ending_{e}-{e}.meta"] = [ln]
    saved[f"state_snapshot_ver_{2 * per_range + 50}.meta"] = [snap]
    saved["identity.meta"] = [line("Identity", id=f"{rng.getrandbits(128):032x}")]
    saved["compaction_timestamps_1700000000.meta"] = [line(
        "CompactionTimestamps", file_compacted_at=1700000000,
        compaction_timestamps={"metadata/transaction_0-99.meta": 1699990000, "metadata/epoch_ending_0-0.meta": None})]
    for name, lines in saved.items():
        st.save_metadata_lines(name, lines)
    return saved


def verify(st: Storage, view: dict[str, list[dict[str, Any]]], read_data: bool = True) -> dict[str, int]:
    """What a restore needs: continuous ranges from 0, and every chunk's records intact."""
    txn = sorted({(m["TransactionBackup"]["first_version"], m["TransactionBackup"]["last_version"],
                   m["TransactionBackup"]["manifest"]) for lines in view.values() for m in lines
                  if "TransactionBackup" in m})
    expected = 0
    for a, b, _ in txn:
        if a != expected:
            raise AssertionError(f"transaction ranges not continuous: expected {expected}, found {a}-{b}")
        expected = b + 1
    epochs = sorted({(m["EpochEndingBackup"]["first_epoch"], m["EpochEndingBackup"]["last_epoch"])
                     for lines in view.values() for m in lines if "EpochEndingBackup" in m})
    e_expected = 0
    for a, b in epochs:
        if a != e_expected:
            raise AssertionError(f"epoch ranges not continuous: expected {e_expected}, found {a}-{b}")
        e_expected = b + 1
    records_read = 0
    if read_data:
        for a, b, manifest in txn:
            doc = json.loads(st.open_for_read(manifest))
            assert (doc["first_version"], doc["last_version"]) == (a, b)
            for ch in doc["chunks"]:
                recs = parse_records(st.open_for_read(ch["transactions"]))
                assert recs == [payload("txn", v) for v in range(ch["first_version"], ch["last_version"] + 1)]
                records_read += len(recs)
    return {"transactions": expected, "epochs": e_expected, "records": records_read}
