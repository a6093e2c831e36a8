"""Azure faults on a real HTTP path (Azurite behind the fault-injecting proxy): lost replies of
creates, compare-and-swaps and whole commits, 500s, retried reads, a missing container, and an
endpoint that strips If-Match/If-None-Match. The offline answers (412, 409 BlobAlreadyExists,
403, ...) are in test_cloud_config.py; here the store itself decides.
"""
from __future__ import annotations

from typing import Iterator
from urllib.parse import urlsplit

import pytest

from casbackup.backends import open_backend
from casbackup.backends.objectstore import ObjectStoreBackend
from casbackup.errors import BackendError, EtagMismatch, KeyMissing, OutcomeUnknown, UsageError, WriteRefused
from casbackup.repository import Repository

from .helpers_azurite import ACCOUNT
from .conftest import Target
from .helpers_faultproxy import CONDITIONAL_HEADERS, Fault, FaultProxy, conditional_put

INTERNAL_500 = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InternalError</Code>'
                b"<Message>x</Message></Error>")


def _via(target: Target, proxy: FaultProxy) -> ObjectStoreBackend:
    backend = open_backend(target.url, {**target.options, "endpoint": f"{proxy.url}/{ACCOUNT}"})  # type: ignore[arg-type]
    assert isinstance(backend, ObjectStoreBackend)
    return backend


def _root_cas(method: str, path: str, headers: dict[str, str]) -> bool:
    return conditional_put(method, path, headers) and path.endswith("/root")


def _blob_create(method: str, path: str, headers: dict[str, str]) -> bool:
    return conditional_put(method, path, headers) and "/blobs/" in path


def _server(target: Target) -> str:
    ep = urlsplit(target.options["endpoint"])
    return f"{ep.scheme}://{ep.netloc}"


@pytest.fixture
def proxy(azurite_target: Target) -> Iterator[FaultProxy]:
    with FaultProxy(_server(azurite_target)) as p:
        yield p


@pytest.mark.slow
def test_lost_create_reply_is_outcome_unknown_not_a_conflict(azurite_target: Target, proxy: FaultProxy) -> None:
    b = _via(azurite_target, proxy)
    proxy.add(Fault(conditional_put, "drop_after"))
    with pytest.raises(OutcomeUnknown):
        b.create("blobs/aa/lost", b"payload")
    assert azurite_target.make().get("blobs/aa/lost") == b"payload"  # it did land
    assert [o for _, _, o in proxy.state.log] == ["applied (201), reply dropped"]  # not resent blindly
    assert b.create("blobs/aa/lost", b"payload") is False  # Azurite itself refuses the second create


def test_lost_cas_reply_is_outcome_unknown_not_a_conflict(azurite_target: Target, proxy: FaultProxy) -> None:
    b = _via(azurite_target, proxy)
    etag = b.compare_and_swap("root", None, b"v1")
    proxy.add(Fault(conditional_put, "drop_after"))
    with pytest.raises(OutcomeUnknown):
        b.compare_and_swap("root", etag, b"v2")
    assert b.read_versioned("root")[0] == b"v2"
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("root", etag, b"stale")  # the first etag is stale now: Azurite answers 412
    proxy.add(Fault(conditional_put, "drop_before"))
    with pytest.raises(OutcomeUnknown):
        b.compare_and_swap("root", b.read_versioned("root")[1], b"v3")
    assert b.read_versioned("root")[0] == b"v2"


def test_commit_with_lost_root_reply_lands_exactly_once(azurite_target: Target, proxy: FaultProxy) -> None:
    Repository.init(azurite_target.make())
    repo = Repository.open(_via(azurite_target, proxy), write=True)
    fault = proxy.add(Fault(_root_cas, "drop_after"))
    gen = repo.commit(puts=[("ns", "k", b"v")], message="lost reply")
    assert fault.hits == 1
    assert gen.seq == 1
    assert [g.message for g in repo.log()] == ["lost reply", "init"]  # no duplicate, no false conflict
    with repo.reader() as snap:
        assert snap.get("ns", "k") == b"v"


def test_commit_with_unapplied_root_write_and_a_rival_rebases(azurite_target: Target, proxy: FaultProxy) -> None:
    Repository.init(azurite_target.make())
    rival = Repository.open(azurite_target.make(), write=True)  # straight to Azurite
    repo = Repository.open(_via(azurite_target, proxy), write=True)
    proxy.add(Fault(_root_cas, "drop_before", hook=lambda: rival.commit(puts=[("ns", "rival", b"r")], message="rival")))
    gen = repo.commit(puts=[("ns", "mine", b"m")], message="mine")
    assert gen.seq == 2
    assert [g.message for g in repo.log()] == ["mine", "rival", "init"]  # neither commit lost
    with repo.reader() as snap:
        assert (snap.get("ns", "rival"), snap.get("ns", "mine")) == (b"r", b"m")


def test_commit_with_lost_blob_create_reply(azurite_target: Target, proxy: FaultProxy) -> None:
    Repository.init(azurite_target.make())
    repo = Repository.open(_via(azurite_target, proxy), write=True)
    big = bytes(range(256)) * 64  # above the inline limit: stored as its own blob
    fault = proxy.add(Fault(_blob_create, "drop_after", times=2))
    repo.commit(puts=[("ns", "big", big)], message="blob reply lost")
    assert fault.hits == 2
    with repo.reader() as snap:
        assert snap.get("ns", "big") == big
    assert Repository.open(azurite_target.make()).log().__next__().message == "blob reply lost"


def test_500_on_a_conditional_write_is_outcome_unknown(azurite_target: Target, proxy: FaultProxy) -> None:
    b = _via(azurite_target, proxy)
    proxy.add(Fault(conditional_put, "status", 500, INTERNAL_500))
    with pytest.raises(OutcomeUnknown):
        b.create("blobs/dd/x", b"1")
    assert b.create("blobs/dd/x", b"1") is True  # it had not been applied


def test_reads_are_retried(azurite_target: Target, proxy: FaultProxy) -> None:
    b = _via(azurite_target, proxy)
    b.create("blobs/ee/x", b"data")
    proxy.add(Fault(lambda m, p, h: m == "GET", "drop_before", times=2))
    assert b.get("blobs/ee/x") == b"data"


def test_missing_container_is_an_error_not_an_empty_store(azurite_target: Target) -> None:
    b = open_backend("az://casb-no-such-container/r", azurite_target.options)
    for call in (lambda: b.get("config"), lambda: list(b.list("blobs/")), lambda: b.create("config", b"x"),
                 lambda: b.compare_and_swap("root", None, b"x")):
        with pytest.raises(BackendError) as info:
            call()
        assert not isinstance(info.value, (KeyMissing, EtagMismatch))


@pytest.mark.parametrize("strip", [CONDITIONAL_HEADERS, ("if-match",), ("if-none-match",)])
@pytest.mark.slow
def test_endpoint_stripping_conditions_cannot_write(azurite_target: Target, cli: object,
                                                   strip: tuple[str, ...]) -> None:
    """Unlike S3's, Azure's SharedKey signature covers If-Match and If-None-Match: a proxy that drops
    them breaks the signature, so the write is refused with 403 (never applied unconditionally)."""
    run = cli  # type: ignore[assignment]
    with FaultProxy(_server(azurite_target), strip=strip) as bad:
        with pytest.raises(WriteRefused, match="403"):
            Repository.init(_via(azurite_target, bad))
        assert [i.key for i in azurite_target.make().list("")] == []  # nothing landed
        good = Repository.init(azurite_target.make())
        good.commit(puts=[("ns", "k", b"v")])
        args = ["-r", azurite_target.url, "-o", f"endpoint={bad.url}/{ACCOUNT}", "-o", "allow_http=true"]  # type: ignore[list-item]
        r = run(*args, "--no-pin", "meta", "get", "ns", "k", env=azurite_target.env)
        assert (r.code, r.stdout) == (0, b"v"), r.stderr  # reading (without a pin, itself a write) still works
        r = run(*args, "meta", "put", "ns", "k2", "v2", env=azurite_target.env)
        assert r.code == WriteRefused.exit_code and "403" in r.stderr, r.stderr
        with Repository.open(azurite_target.make()).reader() as snap:
            with pytest.raises(Exception):
                snap.get("ns", "k2")


def test_use_emulator_follows_azurite_blob_storage_url(azurite_target: Target, azurite_endpoint: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`use_emulator=true` pins obstore to 127.0.0.1:10000 and Azurite's own key unless
    AZURITE_BLOB_STORAGE_URL names the server; `endpoint` is the other way to any port."""
    server = azurite_endpoint.rsplit("/", 1)[0]
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", server)
    container = azurite_target.url.split("/")[2]  # type: ignore[union-attr]
    b = open_backend(f"az://{container}/emu", {"use_emulator": "true", "allow_http": "true"})
    assert b.create("blobs/aa/emu", b"via use_emulator") is True
    assert b.create("blobs/aa/emu", b"again") is False
    assert open_backend(f"az://{container}/emu", azurite_target.options).get("blobs/aa/emu") == b"via use_emulator"
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", "http://emulator.example.net:10000")
    with pytest.raises(UsageError, match="loopback"):
        open_backend(f"az://{container}/emu", {"use_emulator": "true", "allow_http": "true"})
