"""S3 faults on a real HTTP path (moto behind a fault-injecting proxy): lost replies, 409/503/500,
stores that ignore conditional headers, unreachable endpoints, missing buckets."""
from __future__ import annotations

import pytest

from casbackup.backends import open_backend
from casbackup.backends.objectstore import ObjectStoreBackend
from casbackup.errors import BackendError, CapabilityError, EtagMismatch, KeyMissing, OutcomeUnknown
from casbackup.repository import Repository

from .conftest import Target, free_port
from .helpers_faultproxy import CONDITIONAL_HEADERS, Fault, FaultProxy, conditional_put

CONFLICT_409 = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
                b"<Message>A conflicting conditional operation is in progress</Message></Error>")
SLOWDOWN_503 = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Reduce</Message></Error>'
INTERNAL_500 = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>x</Message></Error>'


def _via(target: Target, proxy: FaultProxy) -> ObjectStoreBackend:
    backend = open_backend(target.url, {**target.options, "endpoint": proxy.url})  # type: ignore[arg-type]
    assert isinstance(backend, ObjectStoreBackend)
    return backend


def _root_cas(method: str, path: str, headers: dict[str, str]) -> bool:
    return conditional_put(method, path, headers) and path.endswith("/root")


def _blob_create(method: str, path: str, headers: dict[str, str]) -> bool:
    return conditional_put(method, path, headers) and "/blobs/" in path


@pytest.fixture
def proxy(moto_endpoint: str):
    with FaultProxy(moto_endpoint) as p:
        yield p


# ---- lost replies: never a false conflict, never a false success ----------------------------


def test_lost_create_reply_is_outcome_unknown_not_a_conflict(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    proxy.add(Fault(conditional_put, "drop_after"))
    with pytest.raises(OutcomeUnknown):
        b.create("blobs/aa/lost", b"payload")
    assert moto_target.make().get("blobs/aa/lost") == b"payload"  # it did land
    assert [o for _, _, o in proxy.state.log] == ["applied (200), reply dropped"]  # and was not resent blindly


def test_lost_cas_reply_is_outcome_unknown_not_a_conflict(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    etag = b.compare_and_swap("root", None, b"v1")
    proxy.add(Fault(conditional_put, "drop_after"))
    with pytest.raises(OutcomeUnknown):
        b.compare_and_swap("root", etag, b"v2")
    assert b.read_versioned("root")[0] == b"v2"
    proxy.add(Fault(conditional_put, "drop_before"))  # not applied: still OutcomeUnknown, the client cannot know
    with pytest.raises(OutcomeUnknown):
        b.compare_and_swap("root", b.read_versioned("root")[1], b"v3")
    assert b.read_versioned("root")[0] == b"v2"


def test_commit_with_lost_root_reply_lands_exactly_once(moto_target: Target, proxy: FaultProxy) -> None:
    Repository.init(moto_target.make())
    repo = Repository.open(_via(moto_target, proxy), write=True)
    fault = proxy.add(Fault(_root_cas, "drop_after"))
    gen = repo.commit(puts=[("ns", "k", b"v")], message="lost reply")
    assert fault.hits == 1
    assert gen.seq == 1
    assert [g.message for g in repo.log()] == ["lost reply", "init"]  # no duplicate, no false conflict
    with repo.reader() as snap:
        assert snap.get("ns", "k") == b"v"


@pytest.mark.slow
def test_commit_with_unapplied_root_write_and_a_rival_rebases(moto_target: Target, proxy: FaultProxy) -> None:
    Repository.init(moto_target.make())
    rival = Repository.open(moto_target.make(), write=True)  # straight to moto, not through the proxy
    repo = Repository.open(_via(moto_target, proxy), write=True)
    proxy.add(Fault(_root_cas, "drop_before", hook=lambda: rival.commit(puts=[("ns", "rival", b"r")], message="rival")))
    gen = repo.commit(puts=[("ns", "mine", b"m")], message="mine")
    assert gen.seq == 2
    assert [g.message for g in repo.log()] == ["mine", "rival", "init"]  # neither commit lost
    with repo.reader() as snap:
        assert (snap.get("ns", "rival"), snap.get("ns", "mine")) == (b"r", b"m")


def test_commit_with_lost_blob_create_reply(moto_target: Target, proxy: FaultProxy) -> None:
    Repository.init(moto_target.make())
    repo = Repository.open(_via(moto_target, proxy), write=True)
    big = bytes(range(256)) * 64  # above the inline limit: stored as its own blob
    fault = proxy.add(Fault(_blob_create, "drop_after", times=2))
    repo.commit(puts=[("ns", "big", big)], message="blob reply lost")
    assert fault.hits == 2
    with repo.reader() as snap:
        assert snap.get("ns", "big") == big
    assert Repository.open(moto_target.make()).log().__next__().message == "blob reply lost"


def test_now_follows_the_storage_clock_not_the_local_one(moto_target: Target, proxy: FaultProxy) -> None:
    import time

    proxy.state.clock_skew = 3600.0  # the store's clock runs an hour ahead of ours
    b = _via(moto_target, proxy)
    assert abs(b.now() - (time.time() + 3600)) < 5
    b.create("blobs/aa/t", b"x")
    assert abs(b.stat("blobs/aa/t").mtime - b.now()) < 5
    assert abs([i.mtime for i in b.list("blobs/")][0] - b.now()) < 5


# ---- status codes ---------------------------------------------------------------------------


def test_409_conditional_request_conflict_is_retried(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    proxy.add(Fault(conditional_put, "status", 409, CONFLICT_409, times=2))
    assert b.create("blobs/bb/x", b"1") is True
    assert [o for _, _, o in proxy.state.log] == ["injected 409", "injected 409", "200"]


def test_409_on_cas_is_retried_then_real_412_is_a_conflict(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    e1 = b.compare_and_swap("pins/x", None, b"1")
    b.compare_and_swap("pins/x", e1, b"2")
    proxy.clear()
    proxy.add(Fault(conditional_put, "status", 409, CONFLICT_409))
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("pins/x", e1, b"3")
    assert [o for _, _, o in proxy.state.log] == ["injected 409", "412"]


def test_503_slowdown_is_retried(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    proxy.add(Fault(conditional_put, "status", 503, SLOWDOWN_503))
    assert b.create("blobs/cc/x", b"1") is True


def test_500_on_a_conditional_write_is_outcome_unknown(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    proxy.add(Fault(conditional_put, "status", 500, INTERNAL_500))
    with pytest.raises(OutcomeUnknown):
        b.create("blobs/dd/x", b"1")
    assert b.create("blobs/dd/x", b"1") is True  # it had not been applied


def test_reads_are_retried(moto_target: Target, proxy: FaultProxy) -> None:
    b = _via(moto_target, proxy)
    b.create("blobs/ee/x", b"data")
    proxy.add(Fault(lambda m, p, h: m == "GET", "drop_before", times=2))
    assert b.get("blobs/ee/x") == b"data"


def test_unreachable_endpoint_is_a_backend_error_not_outcome_unknown(moto_target: Target) -> None:
    b = open_backend(moto_target.url, {**moto_target.options, "endpoint": f"http://127.0.0.1:{free_port()}",  # type: ignore[arg-type]
                                       "attempts": "2", "connect_timeout": "2"})
    with pytest.raises(BackendError) as info:
        b.create("blobs/ff/x", b"1")
    assert not isinstance(info.value, OutcomeUnknown)  # the connection was refused: nothing was sent
    with pytest.raises(BackendError) as info2:
        b.get("config")
    assert not isinstance(info2.value, KeyMissing)
    with pytest.raises(BackendError):
        list(b.list("blobs/"))


def test_missing_bucket_is_an_error_not_an_empty_store(moto_target: Target, moto_endpoint: str) -> None:
    b = open_backend("s3://casb-no-such-bucket/r", moto_target.options)
    for call in (lambda: b.get("config"), lambda: list(b.list("blobs/")), lambda: b.create("config", b"x"),
                 lambda: b.compare_and_swap("root", None, b"x")):
        with pytest.raises(BackendError, match="bucket") as info:
            call()
        assert not isinstance(info.value, (KeyMissing, EtagMismatch))


# ---- stores that ignore conditional headers --------------------------------------------------


@pytest.mark.parametrize("strip, missing", [
    (CONDITIONAL_HEADERS, "create-if-absent"),
    (("if-match",), "conditional update"),
    (("if-none-match",), "create-if-absent"),
])
@pytest.mark.slow
def test_store_ignoring_conditions_is_refused_for_writing(moto_target: Target, moto_endpoint: str, cli: object,
                                                          strip: tuple[str, ...], missing: str) -> None:
    run = cli  # type: ignore[assignment]
    with FaultProxy(moto_endpoint, strip=strip) as bad:
        args = ["-r", moto_target.url, "-o", f"endpoint={bad.url}", "-o", "allow_http=true"]  # type: ignore[list-item]
        with pytest.raises(CapabilityError, match=missing):
            Repository.init(_via(moto_target, bad))
        r = run(*args, "init", env=moto_target.env)
        assert r.code == CapabilityError.exit_code
        assert missing in r.stderr and "Reading still works" in r.stderr
        # A repository made through a correct endpoint: readable through the bad one, not writable.
        good = Repository.init(moto_target.make())
        good.commit(puts=[("ns", "k", b"v")])
        r = run(*args, "meta", "get", "ns", "k", env=moto_target.env)
        assert (r.code, r.stdout) == (0, b"v"), r.stderr
        r = run(*args, "meta", "put", "ns", "k2", "v2", env=moto_target.env)
        assert r.code == CapabilityError.exit_code and missing in r.stderr
        r = run(*args, "--unsafe-single-writer", "meta", "put", "ns", "k2", "v2", env=moto_target.env)
        assert r.code == 0 and "UNSAFE" in r.stderr  # the only way past, and it is loud
        with Repository.open(moto_target.make()).reader() as snap:
            assert snap.get("ns", "k2") == b"v2"

