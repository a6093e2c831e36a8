"""On the wire (moto behind the fault proxy): a batched delete is one S3 DeleteObjects request per
batch, the blob listing is 256 fan-out listings, and a server error on one of them is an error."""
from __future__ import annotations

import pytest

from casbackup.backends import open_backend
from casbackup.backends.base import delete_keys
from casbackup.backends.objectstore import ObjectStoreBackend
from casbackup.errors import BackendError
from casbackup.codec import BlobType
from casbackup.gc import Collector
from casbackup.repository import Repository
from casbackup.store import BlobStore

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


def test_blob_listing_is_256_fanout_listings(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    store = BlobStore(b)
    proxy.clear()
    assert list(store.list()) == []
    listed = [p for m, p, _ in proxy.state.log if m == "GET" and "list-type=2" in p]
    assert len(listed) == 256
    assert {p.split("prefix=")[1].split("&")[0].rsplit("%2F", 2)[-2] for p in listed} == {f"{i:02x}" for i in range(256)}


def test_a_server_error_on_one_fanout_listing_is_an_error(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    b.create("blobs/7f/" + "7f" * 32, b"x")
    proxy.add(Fault(_lists("blobs%2F7f%2F"), "status", 500, INTERNAL_500, times=100))  # beyond obstore's retries
    with pytest.raises(BackendError, match="list"):
        list(BlobStore(b).list())


@pytest.mark.slow  # init's self-test and a whole gc on moto: ~6 s
def test_gc_sweep_deletes_through_delete_objects_in_batches(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    repo = Repository.init(b)
    orphans = {repo.store.put(BlobType.CHUNK, f"orphan {i}".encode()).ref.id for i in range(12)}
    b.delete_batch_size = 5
    proxy.clear()
    report = Collector(repo, grace=0, force=True, keep_last=1).run()
    assert set(report.deleted_ids) == orphans and report.deleted == 12
    deletes = [p for m, p, _ in proxy.state.log if m == "POST" and "delete" in p]
    single = [p for m, p, _ in proxy.state.log if m == "DELETE" and "/blobs/" in p]
    assert len(deletes) == 3 and single == []
    assert not any(repo.store.exists(i) for i in orphans)
