"""Authenticated encryption of stored envelopes (spec/FORMAT.md §13.4-§13.6).

One `Suite` holds an unlocked repository's secrets in memory: the ID key (keyed blob IDs) and
the data keys of every key epoch. It seals an envelope's body with AES-256-GCM under a
per-session key, and opens what any session of any epoch it holds sealed. It imports nothing
of casbackup, so the codec can call it without a cycle.

Why per-session keys, not random nonces: AES-GCM's 96-bit nonce is too short to draw at random
across many writers and years, and XChaCha20 (libsodium) runs at 1.6 GB/s here against
AES-GCM's 13 GB/s (tools/bench/aead.py). Each process draws a fresh random 128-bit session ID,
derives its own key from the epoch's data key, and counts nonces from 0: two writers, a crash
and a restart, or a copied repository never share a session key, and one session never
repeats a counter.
"""
from __future__ import annotations

import itertools
import secrets
import struct
import threading
from collections import OrderedDict
from typing import Iterator

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# The envelope's cipher byte for AES-256-GCM under a per-session key (§13.5).
CIPHER_AES256GCM = 1
# After the 8 header bytes: key epoch (u32), session ID (16 bytes), nonce counter (u64), all
# big-endian; then the ciphertext and its 16-byte tag.
SEAL_PREFIX = struct.Struct(">I16sQ")
SEAL_PREFIX_LEN = SEAL_PREFIX.size
TAG_LEN = 16
SEAL_OVERHEAD = SEAL_PREFIX_LEN + TAG_LEN
KEY_LEN = 32
REPO_ID_LEN = 16
AD_DOMAIN = b"casbackup/v2/aead\x00"
SESSION_DOMAIN = b"casbackup/v2/session\x00"
# A session seals at most this many objects; then the next one starts (a new random ID).
SESSION_MESSAGES = 1 << 32
# Session keys kept for opening (one per writer session met recently: a pack holds one).
OPEN_CACHE = 64


class SealError(Exception):
    """An object that does not open: the codec turns it into BlobCorrupt naming the object."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EpochUnavailable(SealError):
    """Sealed under a key epoch this suite does not hold (removed from it, or newer than it)."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"sealed under key epoch {epoch}, which the unlocked key does not hold")
        self.epoch = epoch


def session_key(data_key: bytes, session_id: bytes) -> bytes:
    """BLAKE3 in keyed mode (a PRF) over the domain and the session ID, keyed by the epoch's data key."""
    return blake3.blake3(SESSION_DOMAIN + session_id, key=data_key).digest(KEY_LEN)


def nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")


def associated_data(header: bytes, prefix: bytes, repo_id: bytes, name: str) -> bytes:
    """Binds a ciphertext to its header (format version, type, compression, cipher), its epoch
    and session, the repository and its name (a blob ID, a record's key, a pack's key)."""
    return b"".join((AD_DOMAIN, header, prefix, repo_id, name.encode("utf-8")))


class _Session:
    __slots__ = ("epoch", "sid", "aead", "counter")

    def __init__(self, epoch: int, data_key: bytes, sid: bytes) -> None:
        self.epoch, self.sid = epoch, sid
        self.aead = AESGCM(session_key(data_key, sid))
        self.counter: Iterator[int] = itertools.count()


class Suite:
    """An unlocked repository's keys. `epochs`: every data key the key slot gave, by epoch;
    new objects are sealed under `current`."""

    def __init__(self, repo_id: bytes, id_key: bytes, epochs: dict[int, bytes], current: int,
                 session_id: bytes | None = None) -> None:
        if len(repo_id) != REPO_ID_LEN or len(id_key) != KEY_LEN or current not in epochs:
            raise ValueError("malformed keyring")
        self.repo_id = repo_id
        self.id_key = id_key
        self.epochs = dict(epochs)
        self.current = current
        self._lock = threading.Lock()
        self._fixed_session = session_id  # test vectors only: a caller-chosen session ID
        self._session = self._new_session()
        self._open: OrderedDict[tuple[int, bytes], AESGCM] = OrderedDict()

    def _new_session(self) -> _Session:
        sid = self._fixed_session or secrets.token_bytes(16)
        return _Session(self.current, self.epochs[self.current], sid)

    def seal(self, header: bytes, body: bytes | memoryview, name: str) -> bytes:
        """prefix || ciphertext || tag of `body` (the bytes after the 8-byte header)."""
        session = self._session
        n = next(session.counter)  # atomic under the GIL: no two threads draw the same counter
        if n >= SESSION_MESSAGES:
            with self._lock:
                if self._session is session:
                    self._session = self._new_session()
            return self.seal(header, body, name)
        prefix = SEAL_PREFIX.pack(session.epoch, session.sid, n)
        return prefix + session.aead.encrypt(nonce(n), body, associated_data(header, prefix, self.repo_id, name))

    def open(self, header: bytes, sealed: bytes | memoryview, name: str) -> bytes:
        """The body that `seal` sealed; SealError if any byte, or the name, differs."""
        if len(sealed) < SEAL_OVERHEAD:
            raise SealError(f"truncated: {len(sealed)} bytes cannot hold a sealed body")
        prefix = bytes(sealed[:SEAL_PREFIX_LEN])
        epoch, sid, n = SEAL_PREFIX.unpack(prefix)
        aead = self._opener(epoch, sid)
        try:
            return aead.decrypt(nonce(n), sealed[SEAL_PREFIX_LEN:], associated_data(header, prefix, self.repo_id, name))
        except InvalidTag:
            raise SealError("authentication failed (the bytes were changed, or belong to another object)") from None

    def _opener(self, epoch: int, sid: bytes) -> AESGCM:
        with self._lock:
            aead = self._open.get((epoch, sid))
            if aead is not None:
                self._open.move_to_end((epoch, sid))
                return aead
        data_key = self.epochs.get(epoch)
        if data_key is None:
            raise EpochUnavailable(epoch)
        aead = AESGCM(session_key(data_key, sid))
        with self._lock:
            self._open[(epoch, sid)] = aead
            while len(self._open) > OPEN_CACHE:
                self._open.popitem(last=False)
        return aead
