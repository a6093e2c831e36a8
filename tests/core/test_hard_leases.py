"""Leases are not trusted (spec/FORMAT.md §5.3, §5.4, §8.2): issue items 10 and 11.

A renewal that lands after the holder's deadline never revives the lease; a pin or gc lease
record with invalid fields is unreadable, and a readable one counts for at most MAX_LEASE
after its storage mtime, whatever it claims.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers_core import FakeClock
from casbackup.backends import LocalBackend
from casbackup.codec import RecordType, encode_record
from casbackup.errors import GcBusy, LeaseExpired
from casbackup.gc import Collector
from casbackup.pins import MAX_LEASE, acquire_gc_lease, list_pins
from casbackup.records import GC_LEASE_KEY, PIN_PREFIX, PinRecord
from casbackup.repository import Repository

PIN_ID = "1700000000-0011223344556677"


def _pin_fields(head: str, **changes: Any) -> dict[str, Any]:
    fields = {"pin_id": PIN_ID, "generation": head, "seq": 0, "host": "h", "pid": 1, "purpose": "hostile",
              "created": 1_000_000.0, "expires": 1_000_600.0}
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not _DROP}


_DROP = object()


# ---- item 10: a late renewal -----------------------------------------------------------------

def test_a_renewal_that_lands_after_the_deadline_does_not_revive_the_lease(
        world: tuple[FakeClock, Repository], monkeypatch: pytest.MonkeyPatch) -> None:
    clock, repo = world
    repo.commit(puts=[("n", "k", b"v")])
    snap = repo.open_reader("stalled reader", ttl=100.0, renew=False)  # deadline: +90 s
    clock.advance(50)
    real_cas = repo.backend.compare_and_swap

    def slow_cas(key: str, expected: str | None, data: bytes) -> str:
        clock.advance(45)  # the write is in flight past the old deadline (+95 s)
        return real_cas(key, expected, data)

    monkeypatch.setattr(repo.backend, "compare_and_swap", slow_cas)
    with pytest.raises(LeaseExpired, match="lapsed while its renewal"):
        snap.lease.renew()  # type: ignore[union-attr]
    with pytest.raises(LeaseExpired):
        snap.get("n", "k")  # not BlobMissing later on: the reader learns it now
    monkeypatch.setattr(repo.backend, "compare_and_swap", real_cas)
    with pytest.raises(LeaseExpired):
        snap.lease.renew()  # type: ignore[union-attr]  # and never comes back
    with pytest.raises(LeaseExpired):
        snap.get("n", "k")
    snap.close()


def test_a_slow_renewal_within_the_deadline_still_extends(
        world: tuple[FakeClock, Repository], monkeypatch: pytest.MonkeyPatch) -> None:
    clock, repo = world
    repo.commit(puts=[("n", "k", b"v")])
    snap = repo.open_reader("slow but in time", ttl=100.0, renew=False)
    clock.advance(50)
    real_cas = repo.backend.compare_and_swap

    def slow_cas(key: str, expected: str | None, data: bytes) -> str:
        clock.advance(30)  # lands at +80 s, before the +90 s deadline
        return real_cas(key, expected, data)

    monkeypatch.setattr(repo.backend, "compare_and_swap", slow_cas)
    snap.lease.renew()  # type: ignore[union-attr]
    clock.advance(50)  # +130 s: alive thanks to the renewal (deadline 50 + 100 - 10 = +140 s)
    assert snap.get("n", "k") == b"v"
    snap.close()


def test_a_late_gc_lease_renewal_stops_the_collector(world: tuple[FakeClock, Repository],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    clock, repo = world
    lease = acquire_gc_lease(repo.backend, ttl=60.0, monotonic=clock)
    lease.stop_renewing()
    clock.advance(30)
    real_cas = repo.backend.compare_and_swap
    monkeypatch.setattr(repo.backend, "compare_and_swap",
                        lambda *a: (clock.advance(40), real_cas(*a))[1])
    with pytest.raises(LeaseExpired):
        lease.renew()
    with pytest.raises(LeaseExpired):
        lease.check()


# ---- item 11: hostile pin and lease records ---------------------------------------------------

HOSTILE_PINS = {
    "expires 1e300": {"expires": 1e300},
    "expires inf": {"expires": math.inf},
    "expires nan": {"expires": math.nan},
    "created negative": {"created": -5.0},
    "generation ../../x": {"generation": "../../x"},
    "generation upper-case hex": {"generation": "AB" * 32},
    "seq negative": {"seq": -1},
    "seq a string": {"seq": "1"},
    "pid a bool": {"pid": True},
    "host not a string": {"host": 7},
    "expires before created": {"created": 2_000_000.0, "expires": 1_000_000.0},
    "pin_id of another key": {"pin_id": "1700000000-ffffffffffffffff"},
    "pin_id a path": {"pin_id": "../root"},
    "missing generation": {"generation": _DROP},
}


@pytest.mark.parametrize("changes", HOSTILE_PINS.values(), ids=HOSTILE_PINS.keys())
def test_a_pin_with_invalid_fields_is_unreadable_and_never_blocks_gc(
        world: tuple[FakeClock, Repository], changes: dict[str, Any]) -> None:
    clock, repo = world
    repo.commit(puts=[("n", "k", b"v")])
    head = repo.read_root()[0].generation
    key = f"{PIN_PREFIX}{PIN_ID}"
    repo.backend.raw_put(key, encode_record(RecordType.PIN, _pin_fields(head, **changes)))  # type: ignore[attr-defined]
    (state,) = list_pins(repo.backend)
    assert state.record is None and state.error and state.error.startswith(f"{key} is corrupt: ")
    assert state.live(clock()) and not state.live(clock() + MAX_LEASE + 1)  # fail safe, but bounded
    report = Collector(repo, grace=0, force=True).run()  # never fails
    assert report.expired_pins_removed == 0
    clock.advance(MAX_LEASE + 1)
    repo.commit(puts=[("n", "k2", b"v")])
    Collector(repo, grace=0, force=True).run()
    assert list_pins(repo.backend) == []  # and it is cleaned up once it counts as dead


def test_a_pins_expiry_is_clamped_to_its_mtime_plus_the_maximum_lease(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    head = repo.read_root()[0].generation
    far = clock() + 365 * 86400.0  # a valid time, far beyond any lease
    repo.backend.raw_put(f"{PIN_PREFIX}{PIN_ID}",  # type: ignore[attr-defined]
                         PinRecord(PIN_ID, head, 0, "h", 1, "p", clock(), far).encode())
    (state,) = list_pins(repo.backend)
    assert state.record is not None and state.record.expires == far
    assert state.expires == pytest.approx(state.mtime + MAX_LEASE)
    clock.advance(MAX_LEASE - 1)
    assert list_pins(repo.backend)[0].live(clock())
    clock.advance(2)
    assert not list_pins(repo.backend)[0].live(clock())
    Collector(repo, grace=0, force=True).run()
    assert list_pins(repo.backend) == []


def test_a_gc_lease_claiming_a_year_blocks_gc_for_at_most_the_maximum_lease(
        world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    repo.backend.compare_and_swap(GC_LEASE_KEY, None, encode_record(RecordType.LEASE, {
        "holder": "ab" * 8, "host": "elsewhere", "pid": 1, "expires": clock() + 365 * 86400.0}))
    with pytest.raises(GcBusy):
        acquire_gc_lease(repo.backend, monotonic=clock)
    clock.advance(MAX_LEASE + 1)
    acquire_gc_lease(repo.backend, monotonic=clock).stop_renewing()


@pytest.mark.parametrize("expires", [1e300, math.inf, -1.0])
def test_an_unreadable_gc_lease_is_taken_over(world: tuple[FakeClock, Repository], expires: float) -> None:
    clock, repo = world
    repo.backend.compare_and_swap(GC_LEASE_KEY, None, encode_record(RecordType.LEASE, {
        "holder": "ab" * 8, "host": "elsewhere", "pid": 1, "expires": expires}))
    report = Collector(repo, grace=0, force=True).run()
    assert report is not None


@pytest.mark.slow
def test_cli_pins_and_gc_survive_hostile_pins_and_lease(tmp_path: Path, cli: Callable[..., Any]) -> None:
    path = tmp_path / "repo"
    assert cli("-r", str(path), "init").code == 0
    assert cli("-r", str(path), "meta", "put", "ns", "k", "v").code == 0
    repo = Repository.open(LocalBackend(path))
    backend = repo.backend  # sealed records: the hostile fields come from a key holder, not a forger
    head = repo.read_root()[0].generation
    now = backend.now()
    hostile = {
        "1700000000-00000000000000a1": {"expires": 1e300, "created": now},
        "1700000000-00000000000000a2": {"generation": "../../x", "expires": now + 600, "created": now},
        "1700000000-00000000000000a3": {"seq": -1, "expires": now + 600, "created": now},
    }
    for pin_id, changes in hostile.items():
        backend.compare_and_swap(f"{PIN_PREFIX}{pin_id}", None,
                                 encode_record(RecordType.PIN, _pin_fields(head, pin_id=pin_id, **changes)))
    backend.compare_and_swap(GC_LEASE_KEY, None, encode_record(RecordType.LEASE, {
        "holder": "ab" * 8, "host": "elsewhere", "pid": 1, "expires": 1e300}))
    r = cli("-r", str(path), "pins")
    assert r.code == 0, r.stderr
    assert r.out.count("unreadable") == 3 and "Traceback" not in r.stderr
    r = cli("-r", str(path), "pins", "--json")
    assert r.code == 0, r.stderr
    assert sorted(row["state"] for row in json.loads(r.out)) == ["unreadable"] * 3
    r = cli("-r", str(path), "gc")
    assert r.code == 0, r.stderr
    # check reports hostile records as damage (item 7), one line, naming each of them, no crash
    r = cli("-r", str(path), "check")
    assert r.code == 13 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert all(pin_id in r.out for pin_id in hostile), r.out
