"""Commits: rebase instead of lost updates, lost CAS replies, conditional puts, and the
capability self-test (S3)."""
from __future__ import annotations

import threading

import pytest

from casbackup.backends import MemoryBackend
from casbackup.errors import CapabilityError, CommitConflict, EtagMismatch, OutcomeUnknown
from casbackup.repository import Repository, Step


def test_racing_transactions_both_land(mem_repo: Repository) -> None:
    a = mem_repo.transaction("a")
    b = mem_repo.transaction("b")
    a.put("n", "a", b"1")
    b.put("n", "b", b"2")
    steps_a, steps_b = a.commit_steps(), b.commit_steps()
    assert next(steps_a) == "cas" and next(steps_b) == "cas"  # both read the same head
    with pytest.raises(StopIteration):
        next(steps_a)  # a wins the swap
    assert next(steps_b) is Step.WAIT_ROOT  # b lost it: it rebases instead of overwriting
    assert next(steps_b) == "cas"
    with pytest.raises(StopIteration) as done:
        next(steps_b)
    assert done.value.value.parent == a.result.id  # type: ignore[union-attr]
    with mem_repo.reader() as snap:
        assert snap.get("n", "a") == b"1" and snap.get("n", "b") == b"2"
    assert [g.message for g in mem_repo.log()][:2] == ["b", "a"]


def test_many_threads_commit_without_losing_any(mem_repo: Repository) -> None:
    def work(t: int) -> None:
        for i in range(15):
            mem_repo.commit(puts=[("n", f"{t}-{i}", b"x")])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with mem_repo.reader() as snap:
        assert len(list(snap.list("n"))) == 60
    assert mem_repo.read_root()[0].seq == 60


def test_if_absent_conflicts_after_rebase(mem_repo: Repository) -> None:
    a = mem_repo.transaction()
    a.put("snap", "s1", b"mine", if_absent=True)
    mem_repo.commit(puts=[("snap", "s1", b"theirs")])
    with pytest.raises(CommitConflict, match="already exists"):
        a.commit()
    with mem_repo.reader() as snap:
        assert snap.get("snap", "s1") == b"theirs"


class LossyBackend(MemoryBackend):
    """Applies the root CAS but loses the reply once (the S3 timeout case)."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next = False

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        etag = super().compare_and_swap(key, expected_etag, data)
        if key == "root" and self.lose_next:
            self.lose_next = False
            raise OutcomeUnknown("reply lost")
        return etag


def test_lost_cas_reply_is_resolved_by_the_write_id() -> None:
    backend = LossyBackend()
    repo = Repository.init(backend)
    backend.lose_next = True
    gen = repo.commit(puts=[("n", "k", b"v")])
    assert repo.read_root()[0].generation == gen.id
    assert [g.seq for g in repo.log()] == [1, 0]  # applied exactly once, not twice


class NotConditional(MemoryBackend):
    def create(self, key: str, data: bytes) -> bool:
        self.raw_put(key, data)
        return True


class BlindCas(MemoryBackend):
    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        self.raw_put(key, data)
        return "etag"


@pytest.mark.parametrize("backend_cls,what", [(NotConditional, "create-if-absent"), (BlindCas, "conditional update")])
def test_capability_self_test_refuses_unsafe_storage(backend_cls: type, what: str) -> None:
    with pytest.raises(CapabilityError, match=what):
        Repository.init(backend_cls())
    good = MemoryBackend()
    Repository.init(good)
    assert Repository.open(good, write=True)


def test_stale_root_cas_is_refused(mem_repo: Repository) -> None:
    _, etag = mem_repo.read_root()
    mem_repo.commit(puts=[("n", "k", b"v")])
    with pytest.raises(EtagMismatch):
        mem_repo.backend.compare_and_swap("root", etag, b"overwrite")
