"""Key slots and the keyring of an encrypted repository (spec/FORMAT.md §13.1-§13.2, §13.7).

The keyring is the repository's secrets: its ID key, one data key per key epoch, and the
admin key that authenticates keyrings. Each slot (`keys/<slot-id>`) holds an X25519 key pair:
its private half locked under a password (Argon2id, then XChaCha20-Poly1305), and the keyring
boxed to its public half by the admin key (libsodium's crypto_box). So `key rotate` can give a
new epoch to every slot without their passwords, a removed slot is left out of every later
epoch, and a store that does not hold the admin key cannot plant a keyring of its own.
"""
from __future__ import annotations

import getpass
import os
import secrets
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.pwhash

from .backends.base import Backend
from .codec import RecordType, decode_record, encode_record, packb, unpackb
from .errors import (BackendError, BlobCorrupt, EtagMismatch, KeyMissing, KeyRemoved, NotFound, RecordCorrupt, UsageError,
                     WrongPassword)
from .layout import KEY_PREFIX, key_slot_key
from .sealing import KEY_LEN, REPO_ID_LEN, Suite

SLOT_DOMAIN = b"casbackup/v2/keyslot\x00"
KDF_ALG = "argon2id13"
# RFC 9106's second recommended option (64 MiB, 3 passes); libsodium runs one lane. About
# 0.08-0.12 s here (tools/bench/aead.py): paid once per command and per slot tried.
KDF_OPS = 3
KDF_MEM = 64 * 1024 * 1024
# The weakest parameters a reader accepts from a slot (a store could lower them, spec §13.2).
KDF_MIN_OPS = 1
KDF_MIN_MEM = 8 * 1024
KDF_MAX_MEM = 4 * 1024 * 1024 * 1024
SALT_LEN = 16
XNONCE_LEN = 24

# Fresh random bytes. Replaced only by spec/vectors' generator to make fixed vectors.
random_bytes: Callable[[int], bytes] = secrets.token_bytes


@dataclass(frozen=True)
class KdfParams:
    salt: bytes
    ops: int = KDF_OPS
    mem: int = KDF_MEM

    def to_doc(self) -> dict[str, Any]:
        return {"alg": KDF_ALG, "salt": self.salt, "ops": self.ops, "mem": self.mem}

    @classmethod
    def from_doc(cls, doc: Any, name: str) -> "KdfParams":
        if not (isinstance(doc, dict) and doc.get("alg") == KDF_ALG and isinstance(doc.get("salt"), bytes)
                and len(doc["salt"]) == SALT_LEN and type(doc.get("ops")) is int and type(doc.get("mem")) is int):
            raise RecordCorrupt(name, "key slot has malformed KDF parameters")
        if not (KDF_MIN_OPS <= doc["ops"] <= 64 and KDF_MIN_MEM <= doc["mem"] <= KDF_MAX_MEM):
            raise RecordCorrupt(name, f"key slot KDF parameters ops={doc['ops']} mem={doc['mem']} are out of range")
        return cls(doc["salt"], doc["ops"], doc["mem"])

    def derive(self, password: bytes) -> bytes:
        return bytes(nacl.pwhash.argon2id.kdf(KEY_LEN, password, self.salt, opslimit=self.ops, memlimit=self.mem))


def new_kdf(ops: int = KDF_OPS, mem: int = KDF_MEM) -> KdfParams:
    return KdfParams(random_bytes(SALT_LEN), ops, mem)


@dataclass(frozen=True)
class Keyring:
    """The secrets a slot unlocks. `epochs`: data key by key epoch; new writes use `current`."""

    repo_id: bytes
    id_key: bytes
    admin: bytes  # the admin X25519 private key: boxes keyrings to slots
    epochs: dict[int, bytes] = field(default_factory=dict)
    current: int = 0

    @classmethod
    def new(cls, id_key: bytes | None = None) -> "Keyring":
        """Fresh secrets; `id_key` shared with another repository (init --copy-id-key-from) if given."""
        return cls(random_bytes(REPO_ID_LEN), id_key or random_bytes(KEY_LEN), random_bytes(KEY_LEN),
                   {0: random_bytes(KEY_LEN)}, 0)

    def suite(self) -> Suite:
        return Suite(self.repo_id, self.id_key, self.epochs, self.current)

    def rotated(self) -> "Keyring":
        epoch = max(self.epochs) + 1
        return Keyring(self.repo_id, self.id_key, self.admin, {**self.epochs, epoch: random_bytes(KEY_LEN)}, epoch)

    @property
    def admin_public(self) -> bytes:
        return bytes(nacl.public.PrivateKey(self.admin).public_key)

    def to_bytes(self) -> bytes:
        return packb({"v": 1, "repo": self.repo_id, "id_key": self.id_key, "admin": self.admin,
                      "epochs": [[e, k] for e, k in sorted(self.epochs.items())], "current": self.current})

    @classmethod
    def from_bytes(cls, raw: bytes, name: str) -> "Keyring":
        doc = unpackb(raw, name)
        try:
            epochs = {int(e): bytes(k) for e, k in doc["epochs"]}
            ring = cls(bytes(doc["repo"]), bytes(doc["id_key"]), bytes(doc["admin"]), epochs, int(doc["current"]))
        except (KeyError, TypeError, ValueError):
            raise RecordCorrupt(name, "malformed keyring") from None
        if (doc.get("v") != 1 or len(ring.repo_id) != REPO_ID_LEN or len(ring.id_key) != KEY_LEN
                or len(ring.admin) != KEY_LEN or ring.current not in epochs or any(len(k) != KEY_LEN for k in epochs.values())):
            raise RecordCorrupt(name, "malformed keyring")
        return ring


@dataclass(frozen=True)
class Slot:
    """One `keys/<slot-id>` record. kind "password": a usable key; "removed": a tombstone that
    still recognises its password, so a removed key gets its own error (KeyRemoved)."""

    slot_id: str
    kind: str
    created: float
    host: str
    user: str
    kdf: KdfParams
    locked: bytes
    public: bytes = b""
    sealed: bytes = b""
    epoch: int = 0
    removed: float | None = None

    @property
    def key(self) -> str:
        return key_slot_key(self.slot_id)

    def lock_ad(self) -> bytes:
        """What the password's AEAD binds: the slot, its KDF parameters and its public key."""
        return SLOT_DOMAIN + self.slot_id.encode() + packb(self.kdf.to_doc()) + self.public

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"v": 1, "slot": self.slot_id, "kind": self.kind, "created": self.created,
                               "host": self.host, "user": self.user, "kdf": self.kdf.to_doc(), "locked": self.locked,
                               "epoch": self.epoch}
        doc["public"] = self.public
        if self.kind == "password":
            doc["sealed"] = self.sealed
        else:
            doc["removed"] = self.removed
        return encode_record(RecordType.KEYSLOT, doc)

    @classmethod
    def decode(cls, stored: bytes, name: str) -> "Slot":
        doc = decode_record(stored, RecordType.KEYSLOT, name)
        try:
            slot = cls(str(doc["slot"]), str(doc["kind"]), float(doc["created"]), str(doc["host"]), str(doc["user"]),
                       KdfParams.from_doc(doc["kdf"], name), bytes(doc["locked"]), bytes(doc.get("public", b"")),
                       bytes(doc.get("sealed", b"")), int(doc["epoch"]),
                       float(doc["removed"]) if doc.get("removed") is not None else None)
        except (KeyError, TypeError, ValueError):
            raise RecordCorrupt(name, "malformed key slot") from None
        if doc.get("v") != 1 or name != slot.key or slot.kind not in ("password", "removed"):
            raise RecordCorrupt(name, "malformed key slot (or stored under another slot's name)")
        if len(slot.public) != KEY_LEN:
            raise RecordCorrupt(name, "key slot has no public key")
        return slot

    def summary(self, current: str | None = None) -> dict[str, Any]:
        return {"id": self.slot_id, "kind": self.kind, "created": self.created, "host": self.host, "user": self.user,
                "epoch": self.epoch, "current": self.slot_id == current, "kdf": f"{KDF_ALG} ops={self.kdf.ops} "
                f"mem={self.kdf.mem // (1024 * 1024)}MiB", **({"removed": self.removed} if self.removed else {})}


def _lock(kek: bytes, plain: bytes, ad: bytes) -> bytes:
    nonce = random_bytes(XNONCE_LEN)
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, ad, nonce, kek)


def _unlock(kek: bytes, locked: bytes, ad: bytes) -> bytes | None:
    try:
        return bytes(nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(locked[XNONCE_LEN:], ad,
                                                                              locked[:XNONCE_LEN], kek))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return None


def _box(ring: Keyring, public: bytes) -> bytes:
    box = nacl.public.Box(nacl.public.PrivateKey(ring.admin), nacl.public.PublicKey(public))
    return bytes(box.encrypt(ring.to_bytes(), random_bytes(nacl.public.Box.NONCE_SIZE)))


def _identity() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return socket.gethostname(), user


def _relocked(slot: Slot, password: bytes, kdf: KdfParams, private: bytes, admin_public: bytes) -> Slot:
    """`slot` with its private key (and the admin public key) locked by `password` under `kdf`."""
    draft = replace(slot, kdf=kdf)
    return replace(draft, locked=_lock(kdf.derive(password), packb({"private": private, "admin": admin_public}),
                                       draft.lock_ad()))


def new_slot(ring: Keyring, password: bytes, kdf: KdfParams | None = None, slot_id: str | None = None,
             created: float | None = None) -> "Unlocked":
    """A new password slot for `ring` (a fresh key pair, locked by `password`, the keyring boxed to
    it), already open: its maker needs no second Argon2id run to use it."""
    private = random_bytes(KEY_LEN)
    public = bytes(nacl.public.PrivateKey(private).public_key)
    host, user = _identity()
    slot = Slot(slot_id or random_bytes(8).hex(), "password", time.time() if created is None else created, host,
                user, kdf or new_kdf(), b"", public, _box(ring, public), ring.current)
    return Unlocked(ring, _relocked(slot, password, slot.kdf, private, ring.admin_public), private)


def make_slot(ring: Keyring, password: bytes, kdf: KdfParams | None = None, slot_id: str | None = None,
              created: float | None = None) -> Slot:
    return new_slot(ring, password, kdf, slot_id, created).slot


@dataclass(frozen=True)
class Unlocked:
    """What a password opened: the keyring, and the slot that opened it (with its private key)."""

    ring: Keyring
    slot: Slot
    private: bytes


def open_slot(slot: Slot, password: bytes) -> Unlocked | None:
    """The keyring `slot` gives for `password`; None if the password does not fit it.
    KeyRemoved if it fits a removed slot's tombstone."""
    kek = slot.kdf.derive(password)
    plain = _unlock(kek, slot.locked, slot.lock_ad())
    if plain is None:
        return None
    if slot.kind == "removed":
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(slot.removed or 0))
        raise KeyRemoved(f"this password belongs to key {slot.slot_id}, which was removed on {when}: "
                         "it no longer opens the repository; use another key")
    doc = unpackb(plain, slot.key)
    try:
        private, admin_public = bytes(doc["private"]), bytes(doc["admin"])
    except (KeyError, TypeError):
        raise RecordCorrupt(slot.key, "key slot's locked part is malformed") from None
    box = nacl.public.Box(nacl.public.PrivateKey(private), nacl.public.PublicKey(admin_public))
    try:
        raw = bytes(box.decrypt(slot.sealed))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise RecordCorrupt(slot.key, "the keyring boxed in this slot does not authenticate (changed, or not "
                            "written by a holder of the repository's admin key)") from None
    ring = Keyring.from_bytes(raw, slot.key)
    if ring.admin_public != admin_public:
        raise RecordCorrupt(slot.key, "the keyring in this slot is not the repository's")
    return Unlocked(ring, slot, private)


def list_slots(backend: Backend, warn: Callable[[str], None] | None = None) -> list[Slot]:
    """Every slot, in ID order. A damaged slot is reported through `warn` (check reports it
    too) and skipped: one damaged slot must not lock every other key out."""
    out: list[Slot] = []
    for info in sorted(backend.list(KEY_PREFIX), key=lambda i: i.key):
        try:
            out.append(Slot.decode(backend.get(info.key), info.key))
        except KeyMissing:
            continue
        except BlobCorrupt as exc:
            if warn is None:
                raise
            warn(f"key slot {info.key} is damaged ({exc.reason}); skipped")
    return out


def has_slots(backend: Backend, fresh: bool = False) -> bool:
    """Whether any key slot is stored. `fresh` (no config yet): a location some backends cannot
    list because keys/ does not exist (rclone on a new path) has none."""
    try:
        return any(True for _ in backend.list(KEY_PREFIX))
    except BackendError:
        if not fresh:
            raise
        return False


def unlock(backend: Backend, password: bytes, warn: Callable[[str], None] | None = None) -> Unlocked:
    """Try the password on every slot (one KDF each). WrongPassword if none opens; KeyRemoved
    if only a removed slot's tombstone recognises it."""
    slots = list_slots(backend, warn)
    removed: KeyRemoved | None = None
    for slot in sorted(slots, key=lambda s: s.kind != "password"):
        try:
            opened = open_slot(slot, password)
        except KeyRemoved as exc:
            removed = exc
            continue
        if opened is not None:
            return opened
    if removed is not None:
        raise removed
    if not slots:
        raise NotFound("the repository has no key slots (keys/ is empty): it cannot be opened")
    raise WrongPassword(f"wrong password: it opens none of the repository's {len(slots)} key slot(s)")


def write_new_slot(backend: Backend, slot: Slot) -> None:
    if not backend.create(slot.key, slot.encode()):
        raise UsageError(f"key slot {slot.slot_id} already exists")


def _replace(backend: Backend, slot: Slot, new: Slot) -> None:
    """Replace one slot's record, if it is still the one read (CAS on its etag)."""
    data, etag = backend.read_versioned(slot.key)
    if Slot.decode(data, slot.key) != slot:
        raise EtagMismatch(f"key slot {slot.slot_id} changed while being rewritten; run the command again")
    backend.compare_and_swap(slot.key, etag, new.encode())


def change_password(backend: Backend, opened: Unlocked, password: bytes, kdf: KdfParams | None = None) -> Slot:
    """The opened slot, locked by a new password (same ID, same key pair)."""
    old = opened.slot
    new = _relocked(old, password, kdf or new_kdf(), opened.private, opened.ring.admin_public)
    _replace(backend, old, new)
    return new


def remove_slot(backend: Backend, opened: Unlocked, slot_id: str) -> Slot:
    """Replace slot `slot_id` by a tombstone: its boxed keyring is dropped, and no later epoch is
    boxed to it. Its password lock is kept, so that password is recognised and refused with its
    own error (KeyRemoved) instead of "wrong password". Refused for the last usable key and for
    the key this command opened the repository with."""
    slots = [s for s in list_slots(backend) if s.kind == "password"]
    target = next((s for s in slots if s.slot_id == slot_id), None)
    if target is None:
        raise NotFound(f"no key {slot_id!r} in this repository (see 'casbackup key list')")
    if len(slots) == 1:
        raise UsageError(f"refusing to remove key {slot_id}: it is the repository's last key, and without it nothing "
                         "could ever be read again")
    if slot_id == opened.slot.slot_id:
        raise UsageError(f"refusing to remove key {slot_id}: it is the key this command opened the repository with; "
                         "open it with another key to remove this one")
    tomb = replace(target, kind="removed", sealed=b"", removed=time.time())
    _replace(backend, target, tomb)
    return tomb


def rotate(backend: Backend, opened: Unlocked) -> Keyring:
    """A new key epoch, boxed to every usable slot (a removed slot gets nothing). New writes use
    it; every older epoch stays in the keyring, so old data stays readable."""
    ring = opened.ring.rotated()
    for _ in range(8):  # a slot added meanwhile (with the old epoch) is re-boxed on the next pass
        stale = [s for s in list_slots(backend) if s.kind == "password" and s.epoch < ring.current]
        if not stale:
            return ring
        for slot in stale:
            new = replace(slot, sealed=_box(ring, slot.public), epoch=ring.current)
            try:
                _replace(backend, slot, new)
            except EtagMismatch:
                continue  # changed meanwhile (a passwd): the next pass sees it again
    raise EtagMismatch("key slots kept changing during the rotation; run 'casbackup key rotate' again")
