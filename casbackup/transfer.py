"""Parallel blob uploads and downloads with a cap on requests and on bytes in flight.

Object stores need several requests in flight to approach their bandwidth (each request pays a
round trip), but an unbounded queue of 4 MiB blobs would make memory grow with the input. The
backends are thread-safe and obstore releases the GIL while it waits, so threads suffice.
Results come back in input order.
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

from .codec import BlobType, Ref
from .errors import UsageError
from .store import BlobStore, PutResult

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_REQUESTS = 8
DEFAULT_BYTES = 64 * 1024 * 1024


class ByteBudget:
    """A counting limit on bytes; one item larger than the whole budget still passes alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cond:
            while self.used and self.used + n > self.limit:
                self._cond.wait()
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


def _ordered(items: Iterable[T], size: Callable[[T], int], work: Callable[[T], R], requests: int,
             max_bytes: int) -> Iterator[R]:
    if requests < 1 or max_bytes < 1:
        raise UsageError("requests and bytes in flight must be positive")
    budget = ByteBudget(max_bytes)
    pending: deque[Future[R]] = deque()

    def run(item: T, n: int) -> R:
        try:
            return work(item)
        finally:
            budget.release(n)

    with ThreadPoolExecutor(max_workers=requests, thread_name_prefix="casbackup-transfer") as pool:
        try:
            for item in items:
                n = size(item)
                while len(pending) >= requests * 2:  # keep the queue short: results are yielded in order
                    yield pending.popleft().result()
                budget.acquire(n)
                pending.append(pool.submit(run, item, n))
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def put_many(store: BlobStore, blobs: Iterable[tuple[BlobType, bytes]], requests: int = DEFAULT_REQUESTS,
             max_bytes: int = DEFAULT_BYTES) -> Iterator[PutResult]:
    """Compress, hash and upload blobs in parallel; yields PutResults in input order."""
    return _ordered(blobs, lambda b: len(b[1]), lambda b: store.put(b[0], b[1]), requests, max_bytes)


def get_many(store: BlobStore, refs: Iterable[tuple[Ref, int]], requests: int = DEFAULT_REQUESTS,
             max_bytes: int = DEFAULT_BYTES, generation: str | None = None) -> Iterator[bytes]:
    """Download and verify blobs in parallel; `refs` pairs each Ref with its expected size (for the cap)."""
    return _ordered(refs, lambda r: max(r[1], 1), lambda r: store.get(r[0], generation), requests, max_bytes)
