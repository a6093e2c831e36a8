"""Listing a fan-out of prefixes concurrently (blobs/00/ .. blobs/ff/ on object stores).

An object store answers a listing one page of 1000 keys per round trip, so one listing of
blobs/ over 10^6 blobs is 1000 round trips in a row. The 256 fan-out prefixes are disjoint
and their concatenation in order is the whole listing, so they can be listed at once and
merged by simply yielding them in prefix order.

Memory stays bounded: at most `workers` prefixes are listed ahead of the consumer. A failed
listing of any prefix is raised when the merge reaches it (and cancels the rest): the result
is the complete listing or an error, never a short listing.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Iterator

from ..errors import UsageError
from .base import Backend, ObjectInfo, ParallelLister

HEX_FANOUT = tuple(f"{i:02x}/" for i in range(256))


def fanout_prefixes(prefix: str) -> list[str]:
    """The 256 two-hex-digit sub-prefixes of `prefix` (which ends with '/'), in key order."""
    return [f"{prefix}{sub}" for sub in HEX_FANOUT]


def list_concurrency(backend: Backend) -> int:
    """How many listings this backend wants in flight (1: list sequentially)."""
    return max(1, backend.list_concurrency) if isinstance(backend, ParallelLister) else 1


def list_prefixes(backend: Backend, prefixes: Iterable[str], workers: int) -> Iterator[ObjectInfo]:
    """Every key under each prefix, prefix by prefix in the given order, listing up to `workers`
    prefixes concurrently. Prefixes must not overlap (each key is yielded once per prefix)."""
    if workers < 1:
        raise UsageError("listing workers must be positive")
    if workers == 1:
        for prefix in prefixes:
            yield from backend.list(prefix)
        return
    pending: deque[Future[list[ObjectInfo]]] = deque()
    todo = iter(prefixes)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="casbackup-list") as pool:
        try:
            for prefix in todo:
                pending.append(pool.submit(_list_all, backend, prefix))
                if len(pending) >= workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for fut in pending:  # an error or an abandoned generator: stop what has not started
                fut.cancel()


def _list_all(backend: Backend, prefix: str) -> list[ObjectInfo]:
    return list(backend.list(prefix))
