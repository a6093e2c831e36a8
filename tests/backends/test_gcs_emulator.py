"""GCS against fake-gcs-server: what obstore's requests get from the emulator unchanged, and the
write path's precondition mapping where the emulator decides (through fakegcs.GcsXmlShim).

The conformance suite (target gs-fakegcs) runs through the shim; these tests pin down the parts
that need no shim (reads, deletes, the loud refusal of obstore's plain PUT) and lost replies.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from casbackup.backends import open_backend
from casbackup.backends.objectstore import ObjectStoreBackend
from casbackup.errors import BackendError, EtagMismatch, KeyMissing, OutcomeUnknown
from casbackup.repository import Repository

from .conftest import FakeGcs, Target
from .helpers_faultproxy import Fault, FaultProxy

GENERATION_HEADER = "x-goog-if-generation-match"


def _direct(target: Target, gcs: FakeGcs) -> ObjectStoreBackend:
    """The same repository, with obstore talking to the emulator itself (no shim)."""
    b = open_backend(target.url, {**target.options, "base_url": gcs.emulator})  # type: ignore[arg-type]
    assert isinstance(b, ObjectStoreBackend)
    return b


def _conditional_put(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "PUT" and GENERATION_HEADER in headers


def _root_cas(method: str, path: str, headers: dict[str, str]) -> bool:
    return _conditional_put(method, path, headers) and path.endswith("%2Froot")


def test_generation_preconditions_are_sent_and_decided_by_the_emulator(gcs_target: Target, fake_gcs: FakeGcs) -> None:
    with FaultProxy(fake_gcs.shim) as spy:
        b = open_backend(gcs_target.url, {**gcs_target.options, "base_url": spy.url})  # type: ignore[arg-type]
        assert b.create("blobs/aa/one", b"first") is True
        assert b.create("blobs/aa/one", b"second") is False  # the emulator's 412 on ifGenerationMatch=0
        e1 = b.compare_and_swap("root", None, b"v1")
        e2 = b.compare_and_swap("root", e1, b"v2")
        with pytest.raises(EtagMismatch):
            b.compare_and_swap("root", e1, b"stale")  # the emulator's 412: generation moved on
        with pytest.raises(EtagMismatch):
            b.compare_and_swap("root", '"abc"\n', b"no generation")  # refused before sending
        assert b.read_versioned("root") == (b"v2", e2)
        assert b.get("blobs/aa/one") == b"first"
    puts = [(m, p, o) for m, p, o in spy.state.log if m == "PUT"]
    assert [o for _, _, o in puts] == ["200", "412", "200", "200", "412"]
    generations = [e.split("\n")[1] for e in (e1, e2)]
    assert all(g.isdigit() for g in generations) and generations[0] != generations[1]


@pytest.mark.slow
def test_reads_and_deletes_need_no_shim(gcs_target: Target, fake_gcs: FakeGcs, cli: object) -> None:
    repo = Repository.init(gcs_target.make())
    repo.commit(puts=[("ns", "k", b"v" * 5000)], message="via shim")
    direct = _direct(gcs_target, fake_gcs)
    _, etag = direct.read_versioned("root")
    assert etag.split("\n")[1].isdigit()  # the generation comes back on a plain XML GET
    assert {i.key.split("/")[0] for i in direct.list("")} >= {"root", "config", "blobs"}
    with pytest.raises(KeyMissing):
        direct.get("blobs/00/absent")
    with Repository.open(direct).reader(pin=False) as snap:
        assert snap.get("ns", "k") == b"v" * 5000
    run = cli  # type: ignore[assignment]
    args = ["-r", gcs_target.url, "-o", f"base_url={fake_gcs.emulator}", "-o", "allow_http=true"]  # type: ignore[list-item]
    r = run(*args, "--no-pin", "meta", "get", "ns", "k", env=gcs_target.env)
    assert (r.code, r.stdout) == (0, b"v" * 5000), r.stderr
    gcs_target.make().create("blobs/ff/doomed", b"x")
    direct.delete("blobs/ff/doomed")
    with pytest.raises(KeyMissing):
        gcs_target.make().get("blobs/ff/doomed")


def test_plain_put_to_the_emulator_is_a_loud_error(gcs_target: Target, fake_gcs: FakeGcs, cli: object) -> None:
    """Without the shim the emulator answers obstore's PUT with 400 "invalid uploadType": an error
    naming the key, never a silent success or an OutcomeUnknown."""
    direct = _direct(gcs_target, fake_gcs)
    with pytest.raises(BackendError, match="invalid uploadType") as info:
        direct.create("blobs/aa/x", b"1")
    assert not isinstance(info.value, OutcomeUnknown)
    run = cli  # type: ignore[assignment]
    args = ["-r", gcs_target.url, "-o", f"base_url={fake_gcs.emulator}", "-o", "allow_http=true"]  # type: ignore[list-item]
    r = run(*args, "init", env=gcs_target.env)
    assert r.code == BackendError.exit_code and "invalid uploadType" in r.stderr, r.stderr
    assert list(gcs_target.make().list("")) == []


@pytest.fixture
def proxy(fake_gcs: FakeGcs) -> Iterator[FaultProxy]:
    with FaultProxy(fake_gcs.shim) as p:
        yield p


def _via(target: Target, proxy: FaultProxy) -> ObjectStoreBackend:
    b = open_backend(target.url, {**target.options, "base_url": proxy.url})  # type: ignore[arg-type]
    assert isinstance(b, ObjectStoreBackend)
    return b


def test_lost_create_reply_is_outcome_unknown(gcs_target: Target, proxy: FaultProxy) -> None:
    b = _via(gcs_target, proxy)
    proxy.add(Fault(_conditional_put, "drop_after"))
    with pytest.raises(OutcomeUnknown):
        b.create("blobs/aa/lost", b"payload")
    assert gcs_target.make().get("blobs/aa/lost") == b"payload"
    assert b.create("blobs/aa/lost", b"payload") is False


def test_commit_with_lost_root_reply_lands_exactly_once(gcs_target: Target, proxy: FaultProxy) -> None:
    Repository.init(gcs_target.make())
    repo = Repository.open(_via(gcs_target, proxy), write=True)
    fault = proxy.add(Fault(_root_cas, "drop_after"))
    gen = repo.commit(puts=[("ns", "k", b"v")], message="lost reply")
    assert fault.hits == 1 and gen.seq == 1
    assert [g.message for g in repo.log()] == ["lost reply", "init"]


def test_commit_with_unapplied_root_write_and_a_rival_rebases(gcs_target: Target, proxy: FaultProxy) -> None:
    Repository.init(gcs_target.make())
    rival = Repository.open(gcs_target.make(), write=True)
    repo = Repository.open(_via(gcs_target, proxy), write=True)
    proxy.add(Fault(_root_cas, "drop_before", hook=lambda: rival.commit(puts=[("ns", "rival", b"r")], message="rival")))
    gen = repo.commit(puts=[("ns", "mine", b"m")], message="mine")
    assert gen.seq == 2
    assert [g.message for g in repo.log()] == ["mine", "rival", "init"]
