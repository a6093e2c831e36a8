"""A one-line status display for terminals: files, bytes, rate, ETA. Silent when disabled."""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Counters any thread may bump; the line is redrawn at most every `interval` seconds."""

    def __init__(self, label: str, enabled: bool, total_bytes: int | None = None, stream: TextIO | None = None,
                 interval: float = 0.25) -> None:
        self.label = label
        self.enabled = enabled
        self.total_bytes = total_bytes
        self.stream = stream or sys.stderr
        self.interval = interval
        self.files = 0
        self.bytes = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._drawn = False

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes
        if self.enabled:
            now = time.monotonic()
            if now - self._last >= self.interval:
                self._last = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-6)
        rate = self.bytes / elapsed
        line = f"{self.label}: {self.files} files, {human(self.bytes)}, {human(rate)}/s"
        if self.total_bytes and rate > 0 and self.bytes <= self.total_bytes:
            left = (self.total_bytes - self.bytes) / rate
            line += f", {100 * self.bytes / self.total_bytes:.0f}%, ETA {int(left // 60)}:{int(left % 60):02d}"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._drawn = True

    def done(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
