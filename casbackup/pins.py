"""Leases: reader pins under pins/ and the single GC lease, renewed in the background.

Expiry times are on the storage's clock (backend.now()); the holder's own deadline is kept on
its monotonic clock from *before* the write, so clock skew can only make it stop early. A
record's own times are untrusted: others' leases are clamped to their storage mtime plus
MAX_LEASE, so no record can keep anything alive (or block gc) for longer.
"""
from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .backends.base import Backend
from .errors import (BackendError, BlobCorrupt, EtagMismatch, GcBusy, KeyMissing, LeaseExpired, UnsupportedFormat,
                     UsageError)
from .layout import GC_LEASE_KEY, PIN_PREFIX, pin_key
from .records import LeaseRecord, PinRecord
from .root import swap_record

MAX_LEASE = 7 * 86400.0
DEFAULT_PIN_TTL = 600.0
DEFAULT_GC_TTL = 600.0


def _margin(ttl: float) -> float:
    """Stop using a lease this long before it lapses (room for a read in flight)."""
    return min(max(ttl * 0.1, 0.05), 60.0)


class Lease:
    """A record at a mutable key that expires unless renewed; shared by pins and the GC lease."""

    def __init__(self, backend: Backend, key: str, ttl: float, make: Callable[[float, float], bytes],
                 renew: bool = True, monotonic: Callable[[], float] = time.monotonic) -> None:
        if not 0 < ttl <= MAX_LEASE:
            raise UsageError(f"lease length {ttl:g}s is out of range (0, {MAX_LEASE:g}s]")
        self.backend = backend
        self.key = key
        self.ttl = ttl
        self._make = make
        self._monotonic = monotonic
        self._etag: str | None = None
        self._created: float | None = None
        self._deadline = 0.0
        self._renew_enabled = renew
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.released = False

    def write(self, expected_etag: str | None) -> None:
        """Create (or take over) the lease record; CAS so two holders can never both win."""
        started = self._monotonic()
        now = self.backend.now()
        if self._created is None:
            self._created = now
        self._etag = swap_record(self.backend, self.key, expected_etag, self._make(self._created, now + self.ttl))
        self._deadline = started + self.ttl - _margin(self.ttl)
        if self._renew_enabled and self._thread is None:
            self._thread = threading.Thread(target=self._renew_loop, name=f"lease:{self.key}", daemon=True)
            self._thread.start()

    def renew(self) -> None:
        with self._lock:
            if self.released:
                return
            started = self._monotonic()
            if started > self._deadline:
                # Too late: GC may already have treated the lease as expired and acted on it, so
                # extending it now would hide that. The holder must start again.
                self._renew_enabled = False
                raise LeaseExpired(f"lease {self.key} lapsed before it could be renewed; start again")
            now = self.backend.now()
            record = self._make(self._created or now, now + self.ttl)
            self._etag = swap_record(self.backend, self.key, self._etag, record)
            if self._monotonic() > self._deadline:
                # The write landed after the old deadline (the holder or the storage stalled):
                # GC may have treated the lease as lapsed in between, so the new record must not
                # revive it. The deadline stays in the past, so check() fails from now on.
                self._renew_enabled = False
                raise LeaseExpired(f"lease {self.key} lapsed while its renewal was being written; start again")
            self._deadline = started + self.ttl - _margin(self.ttl)

    def _renew_loop(self) -> None:
        interval = max(self.ttl / 3.0, 0.01)
        while not self._stop.wait(interval):
            try:
                self.renew()
            except (EtagMismatch, LeaseExpired):
                return  # lapsed, or someone took the lease over: check() fails from now on
            except Exception:  # noqa: BLE001 - transient storage errors: retry next interval
                continue

    def check(self) -> None:
        """Raise LeaseExpired if the lease has lapsed (or is within its safety margin)."""
        if self.released:
            raise LeaseExpired(f"lease {self.key} was released")
        if self._monotonic() > self._deadline:
            raise LeaseExpired(f"lease {self.key} expired; the data it protected may have been collected, start again")

    @property
    def remaining(self) -> float:
        return self._deadline - self._monotonic()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def release(self) -> None:
        self.stop_renewing()
        with self._lock:
            if self.released:
                return
            self.released = True
            try:
                self.backend.delete(self.key)
            except BackendError:
                pass  # it expires on its own


def holder_identity() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def new_pin(backend: Backend, generation: str, seq: int, purpose: str, ttl: float = DEFAULT_PIN_TTL,
            renew: bool = True, monotonic: Callable[[], float] = time.monotonic) -> Lease:
    pin_id = f"{int(backend.now())}-{secrets.token_hex(8)}"
    host, pid = holder_identity()

    def make(created: float, expires: float) -> bytes:
        return PinRecord(pin_id, generation, seq, host, pid, purpose, created, expires).encode()

    lease = Lease(backend, pin_key(pin_id), ttl, make, renew=renew, monotonic=monotonic)
    lease.pin_id = pin_id  # type: ignore[attr-defined]
    lease.write(None)
    return lease


def clamped_expiry(expires: float, mtime: float) -> float:
    """A lease's expiry as the storage clock allows it: never more than MAX_LEASE after the
    record was last written (its storage mtime). The record's `created` and `expires` are
    written by the holder, so they are as untrusted as the rest of the record."""
    return min(expires, mtime + MAX_LEASE)


@dataclass(frozen=True)
class PinState:
    key: str
    record: PinRecord | None  # None: unreadable (undecodable, or a field is invalid)
    mtime: float
    error: str | None = None

    @property
    def expires(self) -> float:
        """When the pin stops counting, on the storage clock. Unreadable pins count until
        MAX_LEASE after they were written (fail safe); readable ones until their `expires`,
        clamped to the same bound."""
        if self.record is None:
            return self.mtime + MAX_LEASE
        return clamped_expiry(self.record.expires, self.mtime)

    def live(self, now: float) -> bool:
        return now < self.expires


def read_pin(backend: Backend, key: str, mtime: float) -> PinState:
    """One pin as GC and listings see it; KeyMissing if it is gone. Never raises for bad bytes."""
    try:
        return PinState(key, PinRecord.decode(backend.get(key), key), mtime)
    except (BlobCorrupt, UnsupportedFormat) as exc:
        return PinState(key, None, mtime, str(exc))


def list_pins(backend: Backend) -> list[PinState]:
    out = []
    for info in backend.list(PIN_PREFIX):
        try:
            out.append(read_pin(backend, info.key, info.mtime))
        except KeyMissing:
            continue  # released between list and get
    return out


def acquire_gc_lease(backend: Backend, ttl: float = DEFAULT_GC_TTL, monotonic: Callable[[], float] = time.monotonic) -> Lease:
    """Take the one GC lease, taking over an expired one; GcBusy if a live GC holds it."""
    host, pid = holder_identity()
    holder = secrets.token_hex(8)

    def make(_created: float, expires: float) -> bytes:
        return LeaseRecord(holder, host, pid, expires).encode()

    lease = Lease(backend, GC_LEASE_KEY, ttl, make, monotonic=monotonic)
    try:
        current, etag = backend.read_versioned(GC_LEASE_KEY)
    except KeyMissing:
        current, etag = None, None
    if current is not None:
        try:
            record: LeaseRecord | None = LeaseRecord.decode(current, GC_LEASE_KEY)
        except (BlobCorrupt, UnsupportedFormat):
            record = None  # unreadable: nobody can prove they hold it, so it is taken over
        expires = 0.0
        if record is not None and record.expires > 0:
            try:
                # stat after the read: this mtime is at or after the write we read, so the
                # clamp never cuts a genuine lease short.
                expires = clamped_expiry(record.expires, backend.stat(GC_LEASE_KEY).mtime)
            except KeyMissing:
                expires = 0.0  # released meanwhile; the CAS below decides
        if record is not None and expires > backend.now():
            host = "".join(c if c.isprintable() else "?" for c in record.host[:64])
            raise GcBusy(f"another gc holds the lease ({host} pid {record.pid}) until "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(expires))} UTC; "
                         "it is taken over automatically once it expires")
    try:
        lease.write(etag)
    except EtagMismatch:
        raise GcBusy("another gc took the lease at the same moment; try again later") from None
    return lease


def release_gc_lease(lease: Lease) -> None:
    """Mark the lease expired with a CAS (so we never delete a lease someone else took over)."""
    lease.stop_renewing()
    with lease._lock:  # noqa: SLF001 - same module family
        if lease.released:
            return
        lease.released = True
        try:
            swap_record(lease.backend, lease.key, lease._etag, lease._make(0.0, 0.0))  # noqa: SLF001
        except BackendError:  # a mismatch included: someone took the lease over, it is theirs now
            pass
