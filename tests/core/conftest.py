"""Fixtures of the core tests."""
from __future__ import annotations

import pytest

from helpers_core import FakeClock
from casbackup.backends import MemoryBackend
from casbackup.repository import Repository


@pytest.fixture
def world() -> tuple[FakeClock, Repository]:
    """A memory repository whose storage clock and holders' monotonic clock are one fake clock."""
    clock = FakeClock(1_000_000.0)
    backend = MemoryBackend(clock=clock)
    first = Repository.init(backend)
    return clock, Repository(backend, first.config, writable=True, monotonic=clock)
