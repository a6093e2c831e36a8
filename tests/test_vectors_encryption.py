"""spec/vectors/encryption.json (FORMAT.md §13) is reproduced by the library and, for the AEAD
layout, by an independent reading of the spec: pyca's AES-GCM and BLAKE3 called directly."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import blake3
import nacl.bindings
import nacl.public
import nacl.pwhash
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from casbackup import keys
from casbackup.codec import BlobType, blob_id, decode_blob, unseal_envelope
from casbackup.keys import Keyring, Slot, open_slot
from casbackup.records import Root
from casbackup.sealing import Suite

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "spec" / "vectors" / "encryption.json").read_text())
REPO_ID = bytes.fromhex(VECTORS["repo_id_hex"])
ID_KEY = bytes.fromhex(VECTORS["id_key_hex"])
EPOCHS = {e["epoch"]: bytes.fromhex(e["data_key_hex"]) for e in VECTORS["epochs"]}
SESSION = bytes.fromhex(VECTORS["session_id_hex"])


def suite() -> Suite:
    return Suite(REPO_ID, ID_KEY, EPOCHS, VECTORS["current_epoch"], session_id=SESSION)


def spec_open(stored: bytes, name: str) -> bytes:
    """FORMAT.md §13.5 by hand: header, epoch/session/counter, AES-256-GCM with the session key."""
    header, prefix = stored[:8], stored[8:36]
    epoch, sid, counter = struct.unpack(">I16sQ", prefix)
    key = blake3.blake3(b"casbackup/v2/session\x00" + sid, key=EPOCHS[epoch]).digest(32)
    ad = b"casbackup/v2/aead\x00" + header + prefix + REPO_ID + name.encode()
    return AESGCM(key).decrypt(b"\x00" * 4 + counter.to_bytes(8, "big"), stored[36:], ad)


def test_session_key_and_keyed_ids() -> None:
    assert blake3.blake3(b"casbackup/v2/session\x00" + SESSION, key=EPOCHS[1]).digest(32).hex() == VECTORS["session_key_hex"]
    for v in VECTORS["keyed_ids"]:
        payload = bytes.fromhex(v["payload_hex"])
        by_hand = blake3.blake3(b"casbackup/v1/blob\x00" + bytes([v["type"]]) + payload, key=ID_KEY).hexdigest()
        assert blob_id(v["type"], payload, ID_KEY) == v["id"] == by_hand != v["unkeyed_id"]


@pytest.mark.parametrize("v", VECTORS["sealed_blobs"], ids=lambda v: v["name"])
def test_sealed_blob(v: dict) -> None:
    stored, payload = bytes.fromhex(v["stored_hex"]), bytes.fromhex(v["payload_hex"])
    assert stored[:8] == b"CASB" + bytes([2, v["type"], 0, 1])
    assert spec_open(stored, v["id"]) == payload
    assert decode_blob(v["id"], stored, BlobType(v["type"]), suite()) == (BlobType(v["type"]), payload)
    s = suite()
    for _ in range(v["counter"]):
        s.seal(b"x" * 8, b"", "skip")  # the vector's counter: the same session sealed others first
    from casbackup.codec import encode_blob
    assert encode_blob(BlobType(v["type"]), payload, None, s).stored == stored


@pytest.mark.parametrize("v", VECTORS["sealed_records"], ids=lambda v: v["name"])
def test_sealed_record(v: dict) -> None:
    stored, plain = bytes.fromhex(v["stored_hex"]), bytes.fromhex(v["plain_envelope_hex"])
    assert spec_open(stored, v["key"]) == plain[8:-16]  # the body of the plaintext envelope
    assert unseal_envelope(stored, v["key"], suite()) == plain
    assert Root.decode(plain).seq == 7
    with pytest.raises(Exception, match="authentication failed"):
        unseal_envelope(stored, "pins/other", suite())  # the name is bound: not replayable elsewhere


def test_sealed_pack() -> None:
    from casbackup.packs import split_pack
    v = VECTORS["sealed_packs"][0]
    data = bytes.fromhex(v["stored_hex"])
    _, pairs = split_pack(v["pack_id"], data, suite())
    (item, stored), = list(pairs)
    assert item.id == v["blob_id"] and decode_blob(item.id, stored, None, suite())[1] == b"a packed chunk"
    toc_len = struct.unpack("<I", data[-12:-8])[0]
    toc = data[-12 - toc_len:-12]
    assert toc[7] == 1 and spec_open(toc, f"packs/{v['pack_id'][:2]}/{v['pack_id']}")  # the TOC is bound to its key


def test_key_slot_opens_to_the_keyring_by_hand_and_by_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    v = VECTORS["key_slots"][0]
    slot = Slot.decode(bytes.fromhex(v["stored_hex"]), v["key"])
    kek = nacl.pwhash.argon2id.kdf(32, bytes.fromhex(v["password_hex"]), slot.kdf.salt, opslimit=slot.kdf.ops,
                                   memlimit=slot.kdf.mem)
    assert kek.hex() == v["kek_hex"]
    locked_plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(slot.locked[24:], slot.lock_ad(),
                                                                            slot.locked[:24], kek)
    assert bytes.fromhex(v["slot_private_hex"]) in locked_plain
    ring_bytes = nacl.public.Box(nacl.public.PrivateKey(bytes.fromhex(v["slot_private_hex"])),
                                 nacl.public.PrivateKey(bytes.fromhex(VECTORS["admin_private_hex"])).public_key
                                 ).decrypt(slot.sealed)
    assert ring_bytes.hex() == v["keyring_hex"]
    opened = open_slot(slot, bytes.fromhex(v["password_hex"]))
    assert opened is not None and opened.ring == Keyring.from_bytes(ring_bytes, v["key"])
    assert opened.ring.epochs == EPOCHS and opened.ring.id_key == ID_KEY
    assert open_slot(slot, b"wrong password") is None
    # the generator reproduces the slot byte for byte from the same draws
    draws = iter([bytes.fromhex(v["slot_private_hex"]), slot.sealed[:24], slot.locked[:24]])
    monkeypatch.setattr(keys, "random_bytes", lambda n: next(draws))
    monkeypatch.setattr(keys, "_identity", lambda: (v["host"], v["user"]))
    again = keys.make_slot(opened.ring, bytes.fromhex(v["password_hex"]), slot.kdf, slot.slot_id, slot.created)
    assert again.encode().hex() == v["stored_hex"]
