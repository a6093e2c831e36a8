"""In-memory backend for fast tests; honours the full contract, with an injectable clock."""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

from ..errors import EtagMismatch, KeyMissing
from .base import Capabilities, ObjectInfo, content_etag, validate_key


class MemoryBackend:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.capabilities = Capabilities(conditional_create=True, conditional_update=True)
        self.location = "memory://"
        self._clock = clock or time.time
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "MemoryBackend()"

    def _get(self, key: str) -> tuple[bytes, float]:
        try:
            return self._objects[validate_key(key)]
        except KeyError:
            raise KeyMissing(f"no such key: {key}") from None

    def get(self, key: str) -> bytes:
        return self._get(key)[0]

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._get(key)[0][start : start + length]

    def create(self, key: str, data: bytes) -> bool:
        validate_key(key)
        with self._lock:
            if key in self._objects:
                return False
            self._objects[key] = (bytes(data), self._clock())
            return True

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        data = self._get(key)[0]
        return data, content_etag(data)

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        validate_key(key)
        with self._lock:
            current = self._objects.get(key)
            current_etag = None if current is None else content_etag(current[0])
            if current_etag != expected_etag:
                raise EtagMismatch(f"{key} changed (expected {expected_etag}, found {current_etag})")
            self._objects[key] = (bytes(data), self._clock())
            return content_etag(data)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            items = [(k, v) for k, v in self._objects.items() if k.startswith(prefix)]
        for key, (data, mtime) in sorted(items):
            yield ObjectInfo(key, len(data), mtime)

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(validate_key(key), None)

    def stat(self, key: str) -> ObjectInfo:
        data, mtime = self._get(key)
        return ObjectInfo(key, len(data), mtime)

    def now(self) -> float:
        return self._clock()

    def close(self) -> None:
        pass

    # Test hooks: raw access to simulate corruption and loss.
    def raw_put(self, key: str, data: bytes, mtime: float | None = None) -> None:
        with self._lock:
            self._objects[key] = (data, self._clock() if mtime is None else mtime)
