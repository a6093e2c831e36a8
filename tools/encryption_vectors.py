"""Write spec/vectors/encryption.json: keyed IDs, sealed blobs and records, a key slot and the
keyring it unlocks, all from fixed keys, session IDs and nonces (FORMAT.md §13), so another
implementation can check itself byte for byte. Run: python tools/encryption_vectors.py"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

from casbackup import keys  # noqa: E402
from casbackup.codec import BlobType, blob_id, encode_blob, seal_envelope  # noqa: E402
from casbackup.keys import KdfParams, Keyring, make_slot  # noqa: E402
from casbackup.packs import PackBuilder, PackClass  # noqa: E402
from casbackup.records import Root  # noqa: E402
from casbackup.sealing import Suite, session_key  # noqa: E402

REPO_ID = bytes(range(16))
ID_KEY = b"\x11" * 32
ADMIN = b"\x22" * 32
EPOCHS = {0: b"\x33" * 32, 1: b"\x44" * 32}
SESSION = b"\x55" * 16
PASSWORD = b"correct horse battery staple"
SLOT_RANDOM = [b"\x77" * 32, b"\x99" * 24, b"\x88" * 24]  # private key, box nonce, lock nonce (draw order)
KDF = KdfParams(b"\x66" * 16, ops=1, mem=8 * 1024 * 1024)


def _fixed(values: list[bytes]) -> Iterator[bytes]:
    yield from values


def build() -> dict[str, Any]:
    ring = Keyring(REPO_ID, ID_KEY, ADMIN, dict(EPOCHS), 1)
    suite = Suite(REPO_ID, ID_KEY, EPOCHS, 1, session_id=SESSION)
    out: dict[str, Any] = {"description": "encryption vectors (FORMAT.md §13): fixed keys, session and nonces",
                           "repo_id_hex": REPO_ID.hex(), "id_key_hex": ID_KEY.hex(), "admin_private_hex": ADMIN.hex(),
                           "epochs": [{"epoch": e, "data_key_hex": k.hex()} for e, k in sorted(EPOCHS.items())],
                           "current_epoch": 1, "session_id_hex": SESSION.hex(),
                           "session_key_hex": session_key(EPOCHS[1], SESSION).hex()}
    out["keyed_ids"] = [{"name": "keyed CHUNK id", "type": int(BlobType.CHUNK), "payload_hex": b"hello".hex(),
                         "id": blob_id(BlobType.CHUNK, b"hello", ID_KEY), "unkeyed_id": blob_id(BlobType.CHUNK, b"hello")}]
    blobs = []
    for counter, (name, kind, payload, level) in enumerate([
            ("sealed CHUNK, uncompressed (counter 0)", BlobType.CHUNK, b"hello, sealed world", None),
            ("sealed VALUE, uncompressed (counter 1)", BlobType.VALUE, b"\x00" * 40, None)]):
        enc = encode_blob(kind, payload, level, suite)
        blobs.append({"name": name, "type": int(kind), "payload_hex": payload.hex(), "id": enc.id, "counter": counter,
                      "stored_hex": enc.stored.hex()})
    out["sealed_blobs"] = blobs
    root = Root("ab" * 32, 7, "cd" * 16, time=1700000000.0)
    plain = root.encode()
    out["sealed_records"] = [{"name": "sealed ROOT (counter 2)", "key": "root", "plain_envelope_hex": plain.hex(),
                              "stored_hex": seal_envelope(plain, "root", suite).hex(), "counter": 2}]
    pack = PackBuilder(PackClass.DATA, pack_id="ee" * 32)
    member = encode_blob(BlobType.CHUNK, b"a packed chunk", None, suite)
    pack.add(member)
    out["sealed_packs"] = [{"name": "data pack of one sealed CHUNK (counters 3, 4: blob, TOC)", "pack_id": pack.pack_id,
                            "blob_id": member.id, "stored_hex": pack.finish(None, suite).hex()}]
    draws = _fixed(list(SLOT_RANDOM))
    saved, saved_identity = keys.random_bytes, keys._identity
    keys.random_bytes = lambda n: next(draws)
    keys._identity = lambda: ("example-host", "example-user")
    try:
        slot = make_slot(ring, PASSWORD, KDF, slot_id="00112233aabbccdd", created=1700000000.0)
    finally:
        keys.random_bytes, keys._identity = saved, saved_identity
    stored = slot.encode()
    out["key_slots"] = [{"name": "password slot (argon2id13, ops 1, 8 MiB: cheap, for the vector only)",
                         "key": slot.key, "password_hex": PASSWORD.hex(), "kek_hex": KDF.derive(PASSWORD).hex(),
                         "slot_private_hex": SLOT_RANDOM[0].hex(), "slot_public_hex": slot.public.hex(),
                         "keyring_hex": ring.to_bytes().hex(), "stored_hex": stored.hex(),
                         "host": slot.host, "user": slot.user}]
    return out


if __name__ == "__main__":
    (ROOT_DIR / "spec" / "vectors" / "encryption.json").write_text(json.dumps(build(), indent=1) + "\n")
    print("wrote spec/vectors/encryption.json")
