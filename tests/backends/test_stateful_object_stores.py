"""The core hypothesis state machine (tests/core/test_core_stateful.py: 2 writers, 2 pinned
readers and a repacking gc, interleaved step by step, with S1-S5 and S7 checked after every
step) on real object stores: S3 on moto's server and on SeaweedFS, both on 127.0.0.1.

Every request goes to the real server. Only time is injected: ClockedBackend reports the fake
clock as the storage's clock and as the mtime of what it created, so grace periods and leases
pass without waiting. Each example gets a fresh repository prefix in one bucket. Fewer examples
than on memory and local disk (each step is several HTTP round trips); --soak runs more.
"""
from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import initialize, run_state_machine_as_test

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))  # the core machine and its clock
from helpers_core import ClockedBackend  # noqa: E402
from test_core_stateful import CoreMachine  # noqa: E402

from casbackup.backends import open_backend  # noqa: E402

from .conftest import s3_target  # noqa: E402

EXAMPLES, SOAK_EXAMPLES = 30, 200


class ObjectStoreMachine(CoreMachine):
    """The core machine, on a fresh prefix of `url` for each example."""

    url = ""
    options: dict[str, str] = {}

    @initialize()
    def setup(self) -> None:  # type: ignore[override]
        inner = open_backend(f"{self.url}/ex-{secrets.token_hex(4)}", self.options)
        self.backend: Any = ClockedBackend(inner, self.clock)
        self._start()


def _run(url: str, options: dict[str, str], soak: bool, password: str | None = None, examples: int = EXAMPLES) -> None:
    machine = type("Machine", (ObjectStoreMachine,), {"url": url, "options": options, "PASSWORD": password})
    run_state_machine_as_test(machine, settings=settings(settings.default,
                                                         max_examples=SOAK_EXAMPLES if soak else examples))


@pytest.mark.slow
def test_core_protocol_on_moto(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, soak: bool) -> None:
    target = s3_target("s3-moto", moto_endpoint, monkeypatch)
    assert target.url is not None
    _run(target.url, target.options, soak)


@pytest.mark.slow
def test_core_protocol_on_moto_encrypted(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, soak: bool) -> None:
    """The same machine on an encrypted repository (FORMAT.md §13): sealed records and blobs on S3."""
    target = s3_target("s3-moto", moto_endpoint, monkeypatch)
    assert target.url is not None
    _run(target.url, target.options, soak, password="stateful on moto", examples=15)


@pytest.mark.slow
@pytest.mark.seaweedfs
def test_core_protocol_on_seaweedfs(seaweedfs_endpoint: str, monkeypatch: pytest.MonkeyPatch, soak: bool) -> None:
    target = s3_target("s3-seaweedfs", seaweedfs_endpoint, monkeypatch, bucket="casb-ready")
    assert target.url is not None
    _run(target.url, target.options, soak)
