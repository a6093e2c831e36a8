"""A fault-injecting backend wrapper: conditional writes whose reply is lost (applied or not).

Whatever the storage did, a commit must neither report a conflict that did not happen nor a
success that did not happen, and must never lose a rival's commit.
"""
from __future__ import annotations

from typing import Callable

import pytest

from casbackup.backends import MemoryBackend
from casbackup.errors import OutcomeUnknown
from casbackup.records import ROOT_KEY
from casbackup.repository import Repository
from casbackup.store import BLOB_PREFIX


class LostReplyBackend(MemoryBackend):
    """Memory storage whose next matching conditional writes lose their reply.

    `plan` holds (predicate on key, applied?, hook) entries consumed in order; `applied=True`
    performs the write and then raises OutcomeUnknown, `applied=False` raises without writing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.plan: list[tuple[Callable[[str], bool], bool, Callable[[], None] | None]] = []
        self.injected = 0

    def _fault(self, key: str) -> tuple[bool, Callable[[], None] | None] | None:
        for i, (match, applied, hook) in enumerate(self.plan):
            if match(key):
                del self.plan[i]
                self.injected += 1
                return applied, hook
        return None

    def create(self, key: str, data: bytes) -> bool:
        fault = self._fault(key)
        if fault is None:
            return super().create(key, data)
        applied, hook = fault
        if hook:
            hook()
        if applied:
            super().create(key, data)
        raise OutcomeUnknown(f"reply lost for create {key}")

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        fault = self._fault(key)
        if fault is None:
            return super().compare_and_swap(key, expected_etag, data)
        applied, hook = fault
        if hook:
            hook()
        if applied:
            super().compare_and_swap(key, expected_etag, data)
        raise OutcomeUnknown(f"reply lost for compare-and-swap {key}")


def is_root(key: str) -> bool:
    return key == ROOT_KEY


def is_blob(key: str) -> bool:
    return key.startswith(BLOB_PREFIX)


@pytest.fixture
def backend() -> LostReplyBackend:
    b = LostReplyBackend()
    Repository.init(b)
    return b


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_root_cas_lost_reply_commits_exactly_once(backend: LostReplyBackend, applied: bool) -> None:
    repo = Repository.open(backend, write=True)
    backend.plan.append((is_root, applied, None))
    gen = repo.commit(puts=[("ns", "k", b"v")], message="once")
    assert backend.injected == 1
    assert [g.message for g in repo.log()] == ["once", "init"]  # no false conflict, no duplicate
    assert gen.seq == 1
    with repo.reader() as snap:
        assert snap.get("ns", "k") == b"v"


def test_root_cas_lost_reply_not_applied_with_rival_is_no_false_success(backend: LostReplyBackend) -> None:
    repo = Repository.open(backend, write=True)
    rival = Repository.open(MemoryBackendView(backend), write=True)
    backend.plan.append((is_root, False, lambda: rival.commit(puts=[("ns", "rival", b"r")], message="rival")))
    gen = repo.commit(puts=[("ns", "mine", b"m")], message="mine")
    assert gen.seq == 2  # it rebased onto the rival's commit instead of claiming seq 1
    assert [g.message for g in repo.log()] == ["mine", "rival", "init"]
    with repo.reader() as snap:
        assert (snap.get("ns", "rival"), snap.get("ns", "mine")) == (b"r", b"m")


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_blob_create_lost_reply(backend: LostReplyBackend, applied: bool) -> None:
    repo = Repository.open(backend, write=True)
    backend.plan.append((is_blob, applied, None))
    big = bytes(range(256)) * 64
    repo.commit(puts=[("ns", "big", big)], message="blob")
    assert backend.injected == 1
    with repo.reader() as snap:
        assert snap.get("ns", "big") == big


def test_blob_create_that_never_confirms_fails_loudly(backend: LostReplyBackend) -> None:
    repo = Repository.open(backend, write=True)
    backend.plan.extend([(is_blob, False, None)] * 10)
    with pytest.raises(Exception, match="could not confirm"):
        repo.commit(puts=[("ns", "big", bytes(5000))], message="never")
    assert [g.message for g in repo.log()] == ["init"]


class MemoryBackendView:
    """The same storage without fault injection (a rival process's view)."""

    def __init__(self, inner: LostReplyBackend) -> None:
        self._inner = inner
        self.capabilities = inner.capabilities

    def __getattr__(self, name: str) -> object:
        attr = getattr(MemoryBackend, name)
        return attr.__get__(self._inner) if callable(attr) else getattr(self._inner, name)


def is_pin(key: str) -> bool:
    return key.startswith("pins/")


@pytest.mark.parametrize("applied", [True, False], ids=["applied", "not-applied"])
def test_pin_write_and_renewal_with_lost_reply_keep_one_live_pin(backend: LostReplyBackend, applied: bool) -> None:
    repo = Repository.open(backend, write=True)
    repo.commit(puts=[("ns", "k", b"v")])
    backend.plan.append((is_pin, applied, None))
    with repo.reader("lost-reply reader") as snap:
        assert backend.injected == 1
        assert snap.get("ns", "k") == b"v"
        pins = list(backend.list("pins/"))
        assert len(pins) == 1  # no orphan pin from the ambiguous first write
        backend.plan.append((is_pin, applied, None))
        snap.lease.renew()  # type: ignore[union-attr]
        assert backend.injected == 2
        snap.lease.check()
        assert snap.get("ns", "k") == b"v"
    assert list(backend.list("pins/")) == []
