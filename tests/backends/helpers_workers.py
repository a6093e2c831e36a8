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


def _race_chunk(kind: str, *parts: object) -> bytes:
    return f"{kind} {' '.join(map(str, parts))} ".encode() * 200


def pack_writer(url: str, options: dict[str, str], worker: int, rounds: int, barrier: Any, queue: Any) -> None:
    """Commit `rounds` entries of two chunks each: one shared by every writer (dedup against
    the others' packs, which gc condemns and repacks meanwhile) and one of its own; every even
    round also removes its entry of two rounds before (garbage for gc). A commit gc refused
    (CommitConflict) is made again. Returns (kept keys, removed keys, conflicts)."""
    def run() -> tuple[list[str], list[str], int]:
        import time

        from casbackup.codec import BlobType
        from casbackup.errors import CommitConflict
        from casbackup.repository import Repository

        repo = Repository.open(open_backend(url, options), write=True)
        barrier.wait(timeout=60)
        kept: list[str] = []
        removed: list[str] = []
        conflicts = 0
        for i in range(rounds):
            key = f"w{worker}-{i}"
            while True:
                try:
                    with repo.transaction(key) as txn:
                        shared = [txn.put_blob(BlobType.CHUNK, _race_chunk("shared", s)).ref
                                  for s in (range(4) if i == 0 else [i % 4])]
                        mine = txn.put_blob(BlobType.CHUNK, _race_chunk("unique", worker, i)).ref
                        txn.put("race", key, b"", refs=[*shared, mine])
                        if i >= 2 and i % 2 == 0:
                            txn.delete("race", f"w{worker}-{i - 2}")
                    break
                except CommitConflict:
                    conflicts += 1
            time.sleep(0.15)  # paced, so pinned views and gc runs fall between the rounds
            kept.append(key)
            if i >= 2 and i % 2 == 0:
                kept.remove(f"w{worker}-{i - 2}")
                removed.append(f"w{worker}-{i - 2}")
        return kept, removed, conflicts
    _report(queue, run)


def pack_gc(url: str, options: dict[str, str], seconds: float, barrier: Any, queue: Any) -> None:
    """gc with no grace period, over and over for `seconds`, while the writers run: (deleted, repacked)."""
    def run() -> tuple[int, int]:
        import time

        from casbackup.gc import Collector
        from casbackup.repository import Repository

        repo = Repository.open(open_backend(url, options), write=True)
        barrier.wait(timeout=60)
        deleted = repacked = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            report = Collector(repo, grace=0, keep_last=1, force=True).run()
            deleted += report.deleted
            repacked += report.repacked_packs
            time.sleep(0.05)
        return deleted, repacked
    _report(queue, run)


def pinned_reader(url: str, options: dict[str, str], seconds: float, barrier: Any, queue: Any) -> None:
    """For `seconds`: pin a generation, wait while writers remove entries and gc runs, then read
    every chunk it names (each read is checked against its ID): a pinned view must stay whole
    under gc (S2, S4). Returns the reads."""
    def run() -> int:
        import time

        from casbackup.repository import Repository

        repo = Repository.open(open_backend(url, options))
        barrier.wait(timeout=60)
        reads = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with repo.reader("race reader") as snap:
                entries = list(snap.list("race"))
                time.sleep(0.4)  # gc runs meanwhile
                for e in entries:
                    for ref in e.refs:
                        snap.read_blob(ref)
                        reads += 1
        return reads
    _report(queue, run)
