"""The one lost-reply primitive (cas.resolve) and its two users in root.py.

Each lost reply here is one whose write DID land: resending the same conditional write would
then meet our own write and answer a false conflict, so these tests fail if the read-back
were removed and the write simply repeated.
"""
from __future__ import annotations

import pytest

from casbackup.backends import MemoryBackend
from casbackup.cas import REASK_LIMIT, resolve
from casbackup.errors import BackendError, EtagMismatch, OutcomeUnknown
from casbackup.layout import GC_LEASE_KEY, ROOT_KEY
from casbackup.records import Root, new_write_id
from casbackup.repository import Repository
from casbackup.root import RootRecord, swap_record


class LosesReplies(MemoryBackend):
    """Memory storage whose next `lose` compare-and-swaps of `key` (None: any) apply (if
    `applied`) and then lose their reply."""

    def __init__(self) -> None:
        super().__init__()
        self.lose = 0
        self.applied = True
        self.key: str | None = None
        self.swaps = 0

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        self.swaps += 1
        if self.lose and self.key in (None, key):
            self.lose -= 1
            if self.applied:
                super().compare_and_swap(key, expected_etag, data)
            raise OutcomeUnknown(f"reply lost for {key}")
        return super().compare_and_swap(key, expected_etag, data)


def test_resolve_takes_the_read_back_answer_without_resending() -> None:
    calls = []

    def attempt() -> str:
        calls.append("attempt")
        raise OutcomeUnknown("lost")

    assert resolve(attempt, lambda: "landed", "a write") == "landed"
    assert calls == ["attempt"]


def test_resolve_resends_only_while_nothing_applied() -> None:
    outcomes = iter([OutcomeUnknown("lost"), OutcomeUnknown("lost"), None])
    read_backs = []

    def attempt() -> str:
        exc = next(outcomes)
        if exc is not None:
            raise exc
        return "sent"

    def landed() -> str | None:
        read_backs.append(1)
        return None

    assert resolve(attempt, landed, "a write") == "sent"
    assert len(read_backs) == 2


def test_resolve_gives_up_loudly_after_the_one_limit() -> None:
    attempts = []

    def attempt() -> str:
        attempts.append(1)
        raise OutcomeUnknown("lost")

    with pytest.raises(BackendError, match="could not confirm whether a write was applied"):
        resolve(attempt, lambda: None, "a write")
    assert len(attempts) == REASK_LIMIT


def test_resolve_passes_a_conflict_from_the_read_back_on() -> None:
    def attempt() -> str:
        raise OutcomeUnknown("lost")

    def landed() -> str | None:
        raise EtagMismatch("someone else's write")

    with pytest.raises(EtagMismatch):
        resolve(attempt, landed, "a write")


def test_lease_record_swap_whose_reply_was_lost_after_it_landed() -> None:
    backend = LosesReplies()
    backend.lose = 1
    etag = swap_record(backend, GC_LEASE_KEY, None, b"lease 1")
    assert backend.swaps == 1  # decided by reading back, not by resending (that would mismatch)
    assert backend.read_versioned(GC_LEASE_KEY) == (b"lease 1", etag)
    swap_record(backend, GC_LEASE_KEY, etag, b"lease 2")  # the etag it returned is the live one


def test_lease_record_swap_lost_before_it_landed_is_resent() -> None:
    backend = LosesReplies()
    backend.lose, backend.applied = 1, False
    etag = swap_record(backend, GC_LEASE_KEY, None, b"lease 1")
    assert backend.swaps == 2
    assert backend.read_versioned(GC_LEASE_KEY) == (b"lease 1", etag)


def test_lease_record_swap_lost_while_a_rival_wrote_is_a_conflict() -> None:
    backend = LosesReplies()
    first = swap_record(backend, GC_LEASE_KEY, None, b"ours")

    backend.lose, backend.applied = 1, False
    original = backend.read_versioned

    def read_after_rival(key: str) -> tuple[bytes, str]:
        MemoryBackend.compare_and_swap(backend, key, first, b"rival")
        backend.read_versioned = original  # type: ignore[method-assign]
        return original(key)

    backend.read_versioned = read_after_rival  # type: ignore[method-assign]
    with pytest.raises(EtagMismatch):
        swap_record(backend, GC_LEASE_KEY, first, b"ours again")
    assert original(GC_LEASE_KEY)[0] == b"rival"


def _root_record() -> tuple[LosesReplies, Repository, RootRecord]:
    backend = LosesReplies()
    repo = Repository.init(backend)
    return backend, repo, repo.root


def test_root_swap_whose_reply_was_lost_after_it_landed() -> None:
    backend, repo, roots = _root_record()
    root, etag = roots.read()
    ours = Root(root.generation, root.seq, new_write_id(), root.gc_epoch + 1, time=backend.now())
    backend.swaps, backend.lose = 0, 1
    assert roots.swap(etag, ours, creates_generation=False) is True
    assert backend.swaps == 1
    assert roots.read()[0].write_id == ours.write_id


def test_root_swap_lost_after_a_rival_swapped_is_a_conflict() -> None:
    backend, repo, roots = _root_record()
    root, etag = roots.read()
    rival = Root(root.generation, root.seq, new_write_id(), root.gc_epoch, time=backend.now())
    backend.compare_and_swap(ROOT_KEY, etag, rival.encode())
    ours = Root("ab" * 32, root.seq + 1, new_write_id(), root.gc_epoch, time=backend.now())
    backend.lose, backend.applied = 1, False
    assert roots.swap(etag, ours, creates_generation=True) is False
    assert roots.read()[0].write_id == rival.write_id


def test_a_commit_survives_a_lost_reply_of_its_root_swap() -> None:
    backend, repo, _ = _root_record()
    backend.lose, backend.key = 1, ROOT_KEY
    gen = repo.commit(puts=[("ns", "k", b"v")], message="lost reply")
    assert repo.read_root()[0].generation == gen.id
    assert [g.message for g in repo.log()] == ["lost reply", "init"]


def test_root_install_over_a_corrupt_root_whose_reply_was_lost() -> None:
    backend, repo, roots = _root_record()
    root, etag = roots.read()
    backend.compare_and_swap(ROOT_KEY, etag, b"not a root record")
    _, corrupt_etag = backend.read_versioned(ROOT_KEY)
    fresh = Root(root.generation, root.seq, new_write_id(), root.gc_epoch, time=backend.now())
    backend.swaps, backend.lose = 0, 1
    assert roots.install(corrupt_etag, fresh) is True
    assert backend.swaps == 1
    assert roots.read()[0].write_id == fresh.write_id
    assert roots.install(corrupt_etag, Root(root.generation, root.seq, new_write_id(), time=backend.now())) is False
