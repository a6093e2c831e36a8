"""Pins and leases: renewal, lapse with an injected clock, expiry seen by GC (S4, S7)."""
from __future__ import annotations

import time

import pytest

from helpers_core import FakeClock
from casbackup.errors import GcBusy, LeaseExpired, UsageError
from casbackup.gc import Collector
from casbackup.pins import MAX_LEASE, acquire_gc_lease, list_pins, new_pin, release_gc_lease
from casbackup.records import GC_LEASE_KEY, PinRecord
from casbackup.repository import Repository


def test_background_renewal_keeps_a_lease_alive(mem_repo: Repository) -> None:
    mem_repo.commit(puts=[("n", "k", b"v")])
    snap = mem_repo.open_reader("renewal test", ttl=0.6)
    try:
        first = PinRecord.decode(mem_repo.backend.get(snap.lease.key), snap.lease.key)
        time.sleep(1.5)  # > 2 ttl: only renewal keeps it alive
        assert snap.get("n", "k") == b"v"
        later = PinRecord.decode(mem_repo.backend.get(snap.lease.key), snap.lease.key)
        assert later.expires > first.expires and later.created == first.created
    finally:
        snap.close()
    assert list_pins(mem_repo.backend) == []  # released on close


def test_lease_expired_before_it_lapses(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    repo.commit(puts=[("n", "k", b"v")])
    snap = repo.open_reader("lapse", ttl=100.0, renew=False)
    record = PinRecord.decode(repo.backend.get(snap.lease.key), snap.lease.key)
    assert record.expires == pytest.approx(clock() + 100.0)
    clock.advance(85)
    assert snap.get("n", "k") == b"v"
    clock.advance(6)  # 91 s: inside the safety margin (10 s), before the storage expiry
    assert clock() < record.expires
    with pytest.raises(LeaseExpired):
        snap.get("n", "k")
    with pytest.raises(LeaseExpired):
        list(snap.list())
    with pytest.raises(LeaseExpired):  # and it cannot be renewed back to life
        snap.lease.renew()  # type: ignore[union-attr]
    snap.close()


def test_manual_renew_extends_the_deadline(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    snap = repo.open_reader("renew", ttl=100.0, renew=False)
    for _ in range(5):
        clock.advance(60)
        snap.lease.renew()  # type: ignore[union-attr]
    assert list(snap.list()) == []
    rec = PinRecord.decode(repo.backend.get(snap.lease.key), snap.lease.key)
    assert rec.expires == pytest.approx(clock() + 100.0)
    snap.close()


def test_expired_pin_is_ignored_by_gc_and_cleaned(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    repo.commit(puts=[("n", "old", b"o" * 20000)])
    dead = repo.open_reader("dead reader", ttl=100.0, renew=False)  # its holder "dies"
    old_gen = dead.generation.id
    repo.commit(deletes=[("n", "old")], puts=[("n", "new", b"n")])
    clock.advance(50)
    Collector(repo, grace=10, keep_last=1, force=True).run()
    assert repo.store.exists(old_gen)  # live pin: kept
    clock.advance(200)  # the pin is expired now
    report = Collector(repo, grace=10, keep_last=1, force=True).run()
    assert report.expired_pins_removed == 1 and list_pins(repo.backend) == []
    clock.advance(20)
    report = Collector(repo, grace=10, keep_last=1, force=True).run()
    assert old_gen in report.deleted_ids
    with pytest.raises(LeaseExpired):
        dead.get("n", "old")  # the dead reader finds out instead of reading a hole


def test_live_pin_keeps_history_back_to_it(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    repo.commit(puts=[("n", "k", b"0" * 10000)])
    snap = repo.open_reader("long restore", ttl=10_000.0, renew=False)
    for i in range(1, 6):
        repo.commit(puts=[("n", "k", str(i).encode() * 10000)])
    for _ in range(3):
        clock.advance(1000)
        snap.lease.renew()  # type: ignore[union-attr]
        report = Collector(repo, grace=100, keep_last=1, force=True).run()
        assert report.retained_generations == 6
    assert snap.get("n", "k") == b"0" * 10000
    snap.close()
    clock.advance(1000)
    Collector(repo, grace=100, keep_last=1, force=True).run()
    clock.advance(1000)
    report = Collector(repo, grace=100, keep_last=1, force=True).run()
    assert report.retained_generations == 1 and report.deleted > 0


def test_unreadable_pin_counts_as_live(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    repo.backend.raw_put("pins/garbage", b"not a pin")  # type: ignore[attr-defined]
    (state,) = list_pins(repo.backend)
    assert state.record is None and state.error
    assert state.live(clock())
    assert not state.live(clock() + MAX_LEASE + 1)


def test_attach_to_a_live_pin_and_to_a_gone_one(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    repo.commit(puts=[("n", "k", b"v")])
    owner = repo.open_reader("lister", ttl=100.0, renew=False)
    borrowed = repo.attach(owner.pin_id)
    assert borrowed.get("n", "k") == b"v"
    clock.advance(95)
    with pytest.raises(LeaseExpired):
        borrowed.get("n", "k")
    owner.close()
    with pytest.raises(LeaseExpired):
        repo.attach(owner.pin_id)


def test_lease_length_is_bounded(mem_repo: Repository) -> None:
    with pytest.raises(UsageError):
        new_pin(mem_repo.backend, "00" * 32, 0, "too long", ttl=MAX_LEASE + 1)
    with pytest.raises(UsageError):
        new_pin(mem_repo.backend, "00" * 32, 0, "zero", ttl=0)


def test_gc_lease_is_exclusive_and_taken_over_when_expired(world: tuple[FakeClock, Repository]) -> None:
    clock, repo = world
    first = acquire_gc_lease(repo.backend, ttl=60.0, monotonic=clock)
    first.stop_renewing()
    with pytest.raises(GcBusy, match="another gc"):
        acquire_gc_lease(repo.backend, ttl=60.0, monotonic=clock)
    with pytest.raises(GcBusy):
        Collector(repo, grace=0, force=True).run()
    clock.advance(61)  # the first holder died without releasing
    second = acquire_gc_lease(repo.backend, ttl=60.0, monotonic=clock)
    with pytest.raises(LeaseExpired):
        first.check()  # the old holder can tell it lost the lease
    release_gc_lease(first)  # a late release by the old holder must not free the new lease
    with pytest.raises(GcBusy):
        acquire_gc_lease(repo.backend, ttl=60.0, monotonic=clock)
    release_gc_lease(second)
    third = acquire_gc_lease(repo.backend, ttl=60.0, monotonic=clock)
    release_gc_lease(third)
    assert repo.backend.get(GC_LEASE_KEY)


def test_attach_clamps_a_pin_claiming_a_year_like_gc_does(world: tuple[FakeClock, Repository]) -> None:
    """A borrowed pin lasts no longer than gc counts it: mtime + MAX_LEASE, not the record's claim."""
    clock, repo = world
    repo.commit(puts=[("n", "k", b"v")])
    root, _ = repo.read_root()
    now = repo.backend.now()
    record = PinRecord("1-aaaaaaaaaaaaaaaa", root.generation, root.seq, "h", 1, "forged", now, now + 365 * 86400)
    repo.backend.compare_and_swap("pins/1-aaaaaaaaaaaaaaaa", None, record.encode())
    borrowed = repo.attach("1-aaaaaaaaaaaaaaaa")
    assert borrowed.lease.remaining <= MAX_LEASE
    clock.advance(MAX_LEASE + 1)
    with pytest.raises(LeaseExpired):
        borrowed.get("n", "k")
