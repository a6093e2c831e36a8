"""The one bounded, ordered work pipeline, and parallel blob transfers built on it.

Object stores need several requests in flight to approach their bandwidth (each request pays a
round trip), and zstd, BLAKE3 and obstore release the GIL, so worker threads overlap hashing,
compression and network waits. An unbounded queue of 4 MiB blobs would make memory grow with
the input, so every user bounds what is in flight:

- `Pipeline`: the owning thread submits work and takes results back in submission order. An
  item counts against `max_items` and `max_bytes` (its declared cost) from its submit until it
  is taken, so the bound covers the data a task holds (an upload's input) and the data a result
  holds (a download's output) alike. The owner makes room by taking; it never blocks on workers
  except for the oldest item. The first error cancels the work queued behind it.
- `ordered_map`: the same as a generator over an input iterable (uploads, downloads, streams).

Only the owning thread touches a Pipeline's bookkeeping, so it needs no lock.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from .codec import BlobType, Ref
from .errors import UsageError
from .store import BlobStore, PutResult

T = TypeVar("T")
R = TypeVar("R")

# Requests in flight by default (object stores need many to hide their round trips; threads
# waiting on the network or fsync hold no GIL), and the bytes they may hold between them, which
# is what bounds memory: more requests never mean more memory than DEFAULT_BYTES (+ one item).
DEFAULT_REQUESTS = 16
DEFAULT_BYTES = 64 * 1024 * 1024


class Pipeline(Generic[R]):
    """Work on `workers` threads, results taken back in submission order, with bounded items and
    bytes between submit and take (one item larger than `max_bytes` still passes alone)."""

    def __init__(self, workers: int, max_items: int | None = None, max_bytes: int | None = None,
                 name: str = "casbackup-pipeline") -> None:
        if workers < 1 or (max_items is not None and max_items < 1) or (max_bytes is not None and max_bytes < 1):
            raise UsageError("workers, items and bytes in flight must be positive")
        self.max_items, self.max_bytes = max_items, max_bytes
        self.bytes = 0
        self._pending: deque[tuple[Future[R], int]] = deque()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._closed = False

    def __len__(self) -> int:
        return len(self._pending)

    def full(self, cost: int = 0) -> bool:
        """Would one more item of `cost` bytes pass a bound? Then take() before submit()."""
        if not self._pending:
            return False
        if self.max_items is not None and len(self._pending) >= self.max_items:
            return True
        return self.max_bytes is not None and self.bytes + cost > self.max_bytes

    def submit(self, fn: Callable[..., R], *args: Any, cost: int = 0) -> Future[R]:
        """Start fn(*args) on the pool; its `cost` counts until the result is taken. The returned
        Future also gives the result, for owners that consume out of order (backup)."""
        if self._closed:
            raise UsageError("the pipeline is closed")
        fut = self._pool.submit(fn, *args)
        self._pending.append((fut, cost))
        self.bytes += cost
        return fut

    def take(self) -> R:
        """The oldest item's result (waiting for it); its error cancels everything behind it."""
        fut, cost = self._pending.popleft()
        self.bytes -= cost
        try:
            return fut.result()
        except BaseException:
            self.cancel()
            raise

    def make_room(self, cost: int = 0) -> None:
        """Take (and drop) the oldest results that are done, then more until `cost` fits: for
        owners that read results through the Futures submit() returned (the pipeline then
        holds no finished Future longer than it must)."""
        while self._pending and self._pending[0][0].done():
            self.take()
        while self.full(cost):
            self.take()

    def cancel(self) -> None:
        """Drop every item not yet taken; those not started never run. Does not wait."""
        for fut, _ in self._pending:
            fut.cancel()
        self._pending.clear()
        self.bytes = 0

    def close(self, cancel: bool = True) -> None:
        """Stop the workers: cancel what is queued (or, cancel=False, finish it), then wait for
        the tasks that are running, so no work continues behind the caller's back."""
        if cancel:
            self.cancel()
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> "Pipeline[R]":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(cancel=exc_type is not None or bool(self._pending))


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, max_items: int,
                max_bytes: int | None = None, cost: Callable[[T], int] | None = None,
                name: str = "casbackup-pipeline") -> Iterator[R]:
    """fn(item) for each item on `workers` threads, yielded in input order. `items` is read
    lazily in the calling thread, only when an item fits the bounds; the first error is
    re-raised and cancels the pending work, and closing the generator does the same."""
    with Pipeline[R](workers, max_items, max_bytes, name) as pipe:
        for item in items:
            n = cost(item) if cost is not None else 0
            while pipe.full(n):
                yield pipe.take()
            pipe.submit(fn, item, cost=n)
            del item  # the pipeline holds it until it is taken; do not keep it alive here too
        while pipe:
            yield pipe.take()


def put_many(store: BlobStore, blobs: Iterable[tuple[BlobType, bytes]], requests: int = DEFAULT_REQUESTS,
             max_bytes: int = DEFAULT_BYTES) -> Iterator[PutResult]:
    """Compress, hash and upload blobs in parallel; yields PutResults in input order."""
    return ordered_map(lambda b: store.put(b[0], b[1]), blobs, requests, 2 * requests, max_bytes,
                       cost=lambda b: len(b[1]), name="casbackup-transfer")


def get_many(store: BlobStore, refs: Iterable[tuple[Ref, int]], requests: int = DEFAULT_REQUESTS,
             max_bytes: int = DEFAULT_BYTES, generation: str | None = None) -> Iterator[bytes]:
    """Download and verify blobs in parallel; `refs` pairs each Ref with its expected size (for the cap)."""
    return ordered_map(lambda r: store.get(r[0], generation), refs, requests, 2 * requests, max_bytes,
                       cost=lambda r: max(r[1], 1), name="casbackup-transfer")
