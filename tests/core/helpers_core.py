"""Helpers shared by the core tests: an injectable clock and a local backend that uses it."""
from __future__ import annotations

import os
import time
from pathlib import Path

from casbackup.backends import LocalBackend

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
