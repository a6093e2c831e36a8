"""Parallel transfers: input order kept, requests and bytes in flight capped, errors surface."""
from __future__ import annotations

import threading
import time

import pytest

from casbackup.backends import MemoryBackend
from casbackup.codec import BlobType
from casbackup.errors import BlobMissing
from casbackup.store import BlobStore
from casbackup.transfer import get_many, put_many


class SlowMemory(MemoryBackend):
    """Counts concurrent requests and bytes, and sleeps a little in each create."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.active = self.active_bytes = self.peak = self.peak_bytes = 0

    def create(self, key: str, data: bytes) -> bool:
        with self.lock:
            self.active += 1
            self.active_bytes += len(data)
            self.peak = max(self.peak, self.active)
            self.peak_bytes = max(self.peak_bytes, self.active_bytes)
        time.sleep(0.01)
        try:
            return super().create(key, data)
        finally:
            with self.lock:
                self.active -= 1
                self.active_bytes -= len(data)


def test_put_and_get_many_keep_order_and_caps() -> None:
    backend = SlowMemory()
    store = BlobStore(backend, level=None)
    payloads = [bytes([i]) * 100_000 for i in range(40)]
    # loose blobs (format v2 packs CHUNK/VALUE/TREE/FILE inside transactions): PAGE payloads here
    results = list(put_many(store, [(BlobType.PAGE, p) for p in payloads], requests=8, max_bytes=300_000))
    assert [r.ref for r in results] == [store.put(BlobType.PAGE, p).ref for p in payloads]
    assert 1 < backend.peak <= 8
    assert backend.peak_bytes <= 300_000 + 200  # envelope overhead only
    got = list(get_many(store, [(r.ref, r.stored_size) for r in results], requests=4))
    assert got == payloads


def test_errors_surface() -> None:
    store = BlobStore(MemoryBackend(), level=None)
    ref = store.put(BlobType.PAGE, b"x").ref
    store.delete(ref.id)
    with pytest.raises(BlobMissing):
        list(get_many(store, [(ref, 1)]))
