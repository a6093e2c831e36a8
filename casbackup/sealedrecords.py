"""The records of an encrypted repository, sealed on their way to storage (spec/FORMAT.md §13.5).

Records (config, root, pins, the gc lease) are small and are read and swapped whole, by many
modules, through the backend. This wrapper seals each record's envelope as it is written and
opens it as it is read, so every module above sees the plaintext envelope it wrote, and the
lost-reply checks that compare a record with what was sent keep working. Blobs, packs and key
slots pass through: blobs and pack TOCs are sealed by the codec (their ranges are read apart),
and a key slot protects its own secrets.
"""
from __future__ import annotations

from typing import Any

from .backends.base import Backend
from .codec import seal_envelope, unseal_envelope
from .errors import BlobCorrupt, KeyUnavailable, RecordCorrupt
from .layout import CONFIG_KEY, GC_LEASE_KEY, PIN_PREFIX, ROOT_KEY
from .sealing import Suite


def is_record_key(key: str) -> bool:
    return key in (CONFIG_KEY, ROOT_KEY, GC_LEASE_KEY) or key.startswith(PIN_PREFIX)


def _opened(data: bytes, key: str, suite: Suite) -> bytes:
    try:
        return unseal_envelope(data, key, suite)
    except KeyUnavailable as exc:
        raise KeyUnavailable(key, exc.reason, record=True) from None
    except BlobCorrupt as exc:  # named as a record: "root is corrupt: ..."
        raise RecordCorrupt(key, exc.reason) from None


class SealedRecords:
    """`inner`, with every record sealed by `suite`. Everything else is the inner backend's own."""

    def __init__(self, inner: Backend, suite: Suite) -> None:
        self.inner = inner
        self.suite = suite
        self.capabilities = inner.capabilities

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, key: str) -> bytes:
        data = self.inner.get(key)
        return _opened(data, key, self.suite) if is_record_key(key) else data

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        data, etag = self.inner.read_versioned(key)
        return (_opened(data, key, self.suite) if is_record_key(key) else data), etag

    def create(self, key: str, data: bytes) -> bool:
        return self.inner.create(key, seal_envelope(data, key, self.suite) if is_record_key(key) else data)

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        sealed = seal_envelope(data, key, self.suite) if is_record_key(key) else data
        return self.inner.compare_and_swap(key, expected_etag, sealed)
