"""casbackup: content-addressed, snapshot-based backup storage.

Public API: open or create a Repository over a backend, read through pinned snapshots,
write through transactions, collect garbage with gc.collect and verify with check.check.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .backends import LocalBackend, MemoryBackend, open_backend  # noqa: E402
from .errors import *  # noqa: E402,F401,F403
from .repository import Repository, Reader, Transaction  # noqa: E402

__all__ = ["__version__", "Repository", "Reader", "Transaction", "LocalBackend", "MemoryBackend", "open_backend"]
