"""On the wire (moto behind the fault proxy): a batched delete is one S3 DeleteObjects request per
batch, the blob listing is 256 fan-out listings, and a server error on one of them is an error."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import pytest

from casbackup.backends import MemoryBackend, open_backend
from casbackup.backends.base import delete_keys
from casbackup.backends.objectstore import ObjectStoreBackend
from casbackup.errors import BackendError, UsageError
from casbackup.codec import BlobType, blob_id
from casbackup.gc import Collector
from casbackup.repository import Repository
from casbackup import store as store_module
from casbackup.store import BlobStore
from helpers_common import store_orphan

from .conftest import Target
from .helpers_faultproxy import Fault, FaultProxy

INTERNAL_500 = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>x</Message></Error>'


@pytest.fixture
def proxy(moto_endpoint: str):
    with FaultProxy(moto_endpoint) as p:
        yield p


def _via(target: Target, proxy: FaultProxy) -> ObjectStoreBackend:
    backend = open_backend(target.url, {**target.options, "endpoint": proxy.url})  # type: ignore[arg-type]
    assert isinstance(backend, ObjectStoreBackend)
    return backend


def _lists(prefix: str):
    return lambda method, path, headers: method == "GET" and "list-type=2" in path and prefix in path


def test_batched_delete_is_one_delete_objects_request_per_batch(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    keys = [f"blobs/{i:02x}/k{i}" for i in range(25)]
    for key in keys:
        b.create(key, b"x")
    b.delete_batch_size = 10
    proxy.clear()
    delete_keys(b, keys + ["blobs/aa/never-stored"])
    requests = [(m, p) for m, p, _ in proxy.state.log]
    assert len(requests) == 3 and all(m == "POST" and "delete" in p for m, p in requests), requests
    assert list(b.list("blobs/")) == []


def test_blob_listing_is_one_page_or_256_concurrent_fanout_listings(moto_target: Target, proxy: FaultProxy,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    b = _via(moto_target, proxy)
    store = BlobStore(b)
    ids = sorted(f"{p}{n:062x}" for p in ("00", "9c") for n in range(2))
    for blob_id in ids:
        b.create(f"blobs/{blob_id[:2]}/{blob_id}", b"x")
    proxy.clear()
    assert [i for i, _ in store.list()] == ids
    assert len([p for m, p, _ in proxy.state.log if "list-type=2" in p]) == 1  # it fitted in one page
    monkeypatch.setattr(store_module, "LISTING_PAGE", 3)
    monkeypatch.setattr(store_module, "FANOUT_AFTER_PAGES", 1)
    proxy.clear()
    assert [i for i, _ in store.list()] == ids
    listed = [p for m, p, _ in proxy.state.log if m == "GET" and "list-type=2" in p]
    assert len(listed) == 1 + 256  # the first page, then every fan-out folder
    folders = {p.split("prefix=")[1].split("&")[0].rsplit("%2F", 2)[-2] for p in listed[1:]}
    assert folders == {f"{i:02x}" for i in range(256)}


def test_a_server_error_on_one_fanout_listing_is_an_error(moto_target: Target, proxy: FaultProxy,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "LISTING_PAGE", 1)
    monkeypatch.setattr(store_module, "FANOUT_AFTER_PAGES", 1)
    b = _via(moto_target, proxy)
    b.create("blobs/7f/" + "7f" * 32, b"x")
    b.create("blobs/80/" + "80" * 32, b"x")
    proxy.add(Fault(_lists("blobs%2F7f%2F"), "status", 500, INTERNAL_500, times=100))  # beyond obstore's retries
    with pytest.raises(BackendError, match="list"):
        list(BlobStore(b).list())


@pytest.mark.slow  # init's self-test and a whole gc on moto: ~6 s
def test_gc_sweep_deletes_through_delete_objects_in_batches(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    repo = Repository.init(b)
    orphans = {store_orphan(repo, f"orphan {i}".encode()) for i in range(12)}  # 12 packs
    time.sleep(1.1)  # S3 mtimes are whole seconds: let "now" pass them, so grace 0 finds them old
    b.delete_batch_size = 5
    proxy.clear()
    report = Collector(repo, grace=0, force=True, keep_last=1).run()
    assert set(report.deleted_ids) == orphans and report.deleted == 12
    deletes = [p for m, p, _ in proxy.state.log if m == "POST" and "delete" in p]
    single = [p for m, p, _ in proxy.state.log if m == "DELETE" and ("/blobs/" in p or "/packs/" in p)]
    assert len(deletes) >= 3 and single == []  # 12 packs in batches of 5 (plus gc state blobs, if any)
    assert not any(repo.store.exists_object(i) for i in orphans)


class BatchedMemory(MemoryBackend):
    """The memory backend with an object store's abilities: batched deletes, concurrent listing."""

    list_concurrency = 4

    def __init__(self, clock: Callable[[], float], batch: int) -> None:
        super().__init__(clock=clock)
        self.delete_batch_size = batch
        self.batches: list[int] = []

    def delete_many(self, keys: Sequence[str]) -> None:
        self.batches.append(len(keys))
        for key in keys:
            self.delete(key)


@pytest.mark.parametrize("batch", [3, 8])  # 3: mtimes from stats; 8: from one listing a batch
def test_batched_sweep_spares_a_blob_uploaded_again_after_an_interrupted_sweep(batch: int) -> None:
    now = [1_000_000.0]
    backend = BatchedMemory(lambda: now[0], batch)
    first = Repository.init(backend)
    repo = Repository(backend, first.config, writable=True, monotonic=lambda: now[0])
    payloads = [f"orphan {i}".encode() for i in range(20)]  # loose blobs: only they can be stored again under one key
    orphans = sorted(repo.store.put(BlobType.PAGE, p).ref.id for p in payloads)
    now[0] += 101
    Collector(repo, grace=100, keep_last=1, force=True).run()  # condemns them
    now[0] += 101
    steps = Collector(repo, grace=100, keep_last=1, force=True).steps()
    for step in steps:
        if step == "deleted":
            break
    steps.close()  # died after its first batch; its lease is left to expire
    assert backend.batches == [batch]
    gone = [i for i in orphans if not repo.store.exists(i)]
    assert len(gone) == batch
    now[0] += 700  # the dead gc's lease expires
    again = payloads[[blob_id(BlobType.PAGE, p) for p in payloads].index(gone[0])]
    assert repo.store.put(BlobType.PAGE, again).created  # a writer stores it anew
    now[0] += 1
    report = Collector(repo, grace=100, keep_last=1, force=True).run()
    assert report.finished_abandoned_sweep
    assert repo.store.exists(gone[0]), "a blob stored again within the grace period was deleted"
    assert [i for i in orphans if repo.store.exists(i)] == [gone[0]]
    assert all(n <= batch for n in backend.batches)


def test_an_unsigned_reader_refuses_a_batched_delete_before_sending(moto_target: Target, proxy: FaultProxy) -> None:
    b = open_backend(moto_target.url, {**moto_target.options, "endpoint": proxy.url,  # type: ignore[arg-type]
                                       "skip_signature": "true"})
    proxy.clear()
    with pytest.raises(UsageError, match="skip_signature=true"):
        delete_keys(b, ["blobs/aa/one", "blobs/ab/two"])
    assert proxy.state.log == []
