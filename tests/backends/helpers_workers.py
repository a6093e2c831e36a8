"""Entry points for race tests run in separate (spawned) processes; results go back by queue."""
from __future__ import annotations

import traceback
from typing import Any

from casbackup.backends import open_backend
from casbackup.errors import EtagMismatch


def _report(queue: Any, fn: Any) -> None:
    try:
        queue.put(("ok", fn()))
    except BaseException:  # noqa: BLE001 - the parent asserts on it
        queue.put(("error", traceback.format_exc()))


def race_create(url: str, options: dict[str, str], key: str, payload: bytes, barrier: Any, queue: Any) -> None:
    def run() -> tuple[bytes, bool]:
        backend = open_backend(url, options)
        barrier.wait(timeout=60)
        return payload, backend.create(key, payload)
    _report(queue, run)


def race_counter(url: str, options: dict[str, str], key: str, rounds: int, barrier: Any, queue: Any) -> None:
    """Increment a counter by read + compare-and-swap; a lost update would show in the total."""
    def run() -> int:
        backend = open_backend(url, options)
        barrier.wait(timeout=60)
        conflicts = 0
        for _ in range(rounds):
            while True:
                data, etag = backend.read_versioned(key)
                try:
                    backend.compare_and_swap(key, etag, str(int(data) + 1).encode())
                    break
                except EtagMismatch:
                    conflicts += 1
        return conflicts
    _report(queue, run)


def race_commits(url: str, options: dict[str, str], worker: int, rounds: int, barrier: Any, queue: Any) -> None:
    """Commit `rounds` distinct keys through the repository; the parent checks none was lost."""
    def run() -> list[int]:
        from casbackup.repository import Repository

        repo = Repository.open(open_backend(url, options), write=True)
        barrier.wait(timeout=60)
        seqs = []
        for i in range(rounds):
            gen = repo.commit(puts=[("race", f"w{worker}-{i}", f"{worker}:{i}".encode())], message=f"w{worker}-{i}")
            seqs.append(gen.seq)
        return seqs
    _report(queue, run)
