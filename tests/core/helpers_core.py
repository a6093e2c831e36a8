"""Helpers shared by the core tests: an injectable clock and a local backend that uses it."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from casbackup.backends import Backend, LocalBackend
from casbackup.backends.base import ObjectInfo

from helpers_common import IN_CI  # noqa: E402,F401


class FakeClock:
    """One clock for the storage (backend.now, mtimes) and the holders' monotonic deadlines."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class ClockedLocalBackend(LocalBackend):
    """The real local backend, whose storage clock (now() and the mtime of created blobs) is a
    FakeClock, so grace periods can be tested without waiting. Everything else is real disk."""

    def __init__(self, root: str | os.PathLike[str], clock: FakeClock) -> None:
        super().__init__(root, create=True)
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    def create(self, key: str, data: bytes) -> bool:
        created = super().create(key, data)
        if created:
            t = self._clock()
            os.utime(self._path(key), (t, t))
        return created

    def age_all(self, seconds: float) -> None:
        for p in Path(self.root).rglob("*"):
            if p.is_file():
                st = p.stat()
                os.utime(p, (st.st_atime - seconds, st.st_mtime - seconds))


class ClockedBackend:
    """Any real backend (an object store on 127.0.0.1, say) whose storage clock is a FakeClock:
    now() is the clock, and listings and stats report, as an object's mtime, the clock's time
    when this wrapper created or replaced it. Storage itself is the real one, every request
    included; only the times are the fake clock's, so grace periods pass without waiting.
    Optional abilities (batch deletes, parallel listing) are the inner backend's."""

    def __init__(self, inner: Backend, clock: FakeClock) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self._clock = clock
        self._mtimes: dict[str, float] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        """Reads, deletes, close and the optional abilities: the inner backend's own."""
        return getattr(self.inner, name)

    def _stamp(self, key: str) -> None:
        with self._lock:
            self._mtimes[key] = self._clock()

    def _clocked(self, info: ObjectInfo) -> ObjectInfo:
        with self._lock:
            mtime = self._mtimes.get(info.key, 0.0)  # not made through this wrapper: as old as can be
        return ObjectInfo(info.key, info.size, mtime)

    def create(self, key: str, data: bytes) -> bool:
        created = self.inner.create(key, data)
        if created:
            self._stamp(key)
        return created

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        etag = self.inner.compare_and_swap(key, expected_etag, data)
        self._stamp(key)
        return etag

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for info in self.inner.list(prefix):
            yield self._clocked(info)

    def stat(self, key: str) -> ObjectInfo:
        return self._clocked(self.inner.stat(key))

    def now(self) -> float:
        return self._clock()
