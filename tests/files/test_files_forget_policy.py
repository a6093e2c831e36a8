"""forget's restic keep rules (table tests on synthetic times), its reasons, filters, --group-by and --prune;
gc's explanation of what it holds."""
from __future__ import annotations

import json
import random
import time
from calendar import timegm
from pathlib import Path

import pytest

from casbackup.errors import UsageError
from casbackup.files.forget import UNLIMITED, Policy, Within, parse_group_by, plan
from casbackup.files.snapshots import SnapshotInfo

HOUR = 3600.0


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch):
    """The tables below are restic's answers with TZ=UTC; buckets follow the local time zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()

BASE = float(timegm((2023, 5, 1, 0, 0, 0)))  # a Monday, ISO week 2023-W18


def _snaps() -> list[SnapshotInfo]:
    """One snapshot every 6 hours, 2023-05-01 00:00 to 2023-05-10 18:00 UTC (40), oldest first."""
    return [SnapshotInfo(f"{i:064x}", BASE + i * 6 * HOUR, "h", "u", ["/data"], ["x"] if i == 5 else [], "00" * 32)
            for i in range(40)]


def _when(i: int) -> str:
    day, quarter = divmod(i, 4)
    return f"05-{day + 1:02d} {quarter * 6:02d}"


W = Within.parse
CASES = [
    # (policy, kept snapshots as "MM-DD HH", newest first) -- what restic 0.17 keeps
    (Policy(last=3), ["05-10 18", "05-10 12", "05-10 06"]),
    (Policy(hourly=2), ["05-10 18", "05-10 12"]),
    (Policy(daily=3), ["05-10 18", "05-09 18", "05-08 18"]),
    (Policy(weekly=2), ["05-10 18", "05-07 18"]),
    (Policy(weekly=3), ["05-10 18", "05-07 18", "05-01 00"]),  # not enough weeks: the oldest too
    (Policy(monthly=1, yearly=1), ["05-10 18"]),
    (Policy(yearly=2), ["05-10 18", "05-01 00"]),
    (Policy(daily=UNLIMITED), [f"05-{d:02d} 18" for d in range(10, 0, -1)] + ["05-01 00"]),  # unlimited: oldest too
    (Policy(within=W("2d")), ["05-10 18", "05-10 12", "05-10 06", "05-10 00",
                              "05-09 18", "05-09 12", "05-09 06", "05-09 00"]),  # after 05-08 18, not at it
    (Policy(within_daily=W("3d")), ["05-10 18", "05-09 18", "05-08 18"]),
    (Policy(within_weekly=W("1m")), ["05-10 18", "05-07 18", "05-01 00"]),
    (Policy(keep_tags=["x"]), ["05-02 06"]),
    (Policy(keep_tags=["x,y"]), []),  # a taglist needs every tag
    (Policy(last=1, keep_tags=["x"]), ["05-10 18", "05-02 06"]),
]


@pytest.mark.parametrize("policy,expected", CASES)
def test_keep_rules_match_restic(policy: Policy, expected: list[str]) -> None:
    snaps = _snaps()
    keep, remove, reasons = plan(snaps, policy)
    assert [_when(int(s.id, 16)) for s in sorted(keep, key=lambda s: -s.time)] == expected
    assert len(keep) + len(remove) == len(snaps) and set(reasons) == {s.id for s in keep}


def test_reasons_name_the_rule_and_its_bucket() -> None:
    snaps = _snaps()
    _, _, reasons = plan(snaps, Policy(last=1, daily=2, weekly=3, within=W("1d"), within_daily=W("2d"),
                                        keep_tags=["x"]))
    assert reasons[snaps[-1].id] == ["last", "within 1d", "daily 2023-05-10", "daily within 2d",
                                     "weekly 2023-W19"]
    assert reasons[snaps[-5].id] == ["daily 2023-05-09", "daily within 2d"]
    assert reasons[snaps[0].id] == ["oldest weekly 2023-W18"]
    assert reasons[snaps[5].id] == ["tag x"]


def test_group_by() -> None:
    a = SnapshotInfo("a" * 64, BASE, "h1", "u", ["/p"], ["t"], "00" * 32)
    b = SnapshotInfo("b" * 64, BASE + 1, "h2", "u", ["/p"], [], "00" * 32)
    c = SnapshotInfo("c" * 64, BASE + 2, "h2", "u", ["/p"], ["t"], "00" * 32)
    ids = lambda keep: sorted(s.id[0] for s in keep)  # noqa: E731
    assert ids(plan([a, b, c], Policy(last=1))[0]) == ["a", "c"]  # host,paths
    assert ids(plan([a, b, c], Policy(last=1), parse_group_by(""))[0]) == ["c"]
    assert ids(plan([a, b, c], Policy(last=1), parse_group_by("tags"))[0]) == ["b", "c"]
    assert ids(plan([a, b, c], Policy(last=1), parse_group_by("host,tags"))[0]) == ["a", "b", "c"]
    with pytest.raises(UsageError):
        parse_group_by("host,colour")


def test_within_counts_back_like_go_adddate() -> None:
    march31 = float(timegm((2023, 3, 31, 12, 0, 0)))
    assert Within.parse("1m").cutoff(march31) == float(timegm((2023, 3, 3, 12, 0, 0)))  # Feb 31 -> Mar 3
    assert Within.parse("1y2d3h").cutoff(march31) == float(timegm((2022, 3, 29, 9, 0, 0)))
    for bad in ("", "7", "1w", "d1", "1d junk"):
        with pytest.raises(UsageError):
            Within.parse(bad)


def _backup(cli, repo: Path, src: Path, *args: str) -> str:
    r = cli("-r", str(repo), "backup", str(src), "--json", *args)
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)["id"]


def _forget(cli, repo: Path, *args: str) -> dict:
    r = cli("-r", str(repo), "forget", "--json", *args)
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.slow
def test_cli_forget_reasons_filters_group_by_keep_tag(cli, cli_repo: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"one")
    s1 = _backup(cli, cli_repo, src, "--host", "a", "--tag", "x")
    (src / "f").write_bytes(b"two")
    s2 = _backup(cli, cli_repo, src, "--host", "a")
    s3 = _backup(cli, cli_repo, src, "--host", "b")

    d = _forget(cli, cli_repo, "--keep-last", "1", "--dry-run")
    assert d["removed"] == [s1] and d["reasons"] == {s2: ["last"], s3: ["last"]}  # grouped by host
    assert _forget(cli, cli_repo, "--keep-last", "1", "-n", "--group-by", "")["kept"] == [s3]
    assert _forget(cli, cli_repo, "--keep-last", "1", "-n", "--keep-tag", "x")["reasons"][s1] == ["tag x"]
    d = _forget(cli, cli_repo, "--keep-last", "1", "-n", "--host", "a")
    assert (d["kept"], d["removed"]) == ([s2], [s1])  # b is not considered
    r = cli("-r", str(cli_repo), "forget", "--keep-daily", "1", "--dry-run")
    assert r.code == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].startswith(f"would remove  {s1[:8]}")
    assert lines[1].startswith(f"keep          {s2[:8]}") and "[daily 20" in lines[1]

    for bad in (["--keep-daily", "x"], ["--keep-within", "3q", "--keep-last", "1"],
                ["--group-by", "colour", "--keep-last", "1"], ["--keep-last", "1", "--prune", "--grace", "1s"]):
        r = cli("-r", str(cli_repo), "forget", *bad)
        assert r.code != 0 and "Traceback" not in r.stderr and "error" in r.stderr, (bad, r.stderr)


def _stored_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for d in ("blobs", "packs") for p in (repo / d).rglob("*") if p.is_file())


@pytest.mark.slow
def test_cli_forget_prune_explains_what_gc_holds_and_zero_grace_frees_it(cli, cli_repo: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / "big").write_bytes(random.Random(i).randbytes(300_000))
        _backup(cli, cli_repo, src)
    r = cli("-r", str(cli_repo), "gc", "--dry-run", "--grace", "0s")  # a dry run needs no --force
    assert r.code == 0, r.stderr
    r = cli("-r", str(cli_repo), "forget", "--keep-last", "1", "--prune")
    assert r.code == 0, r.stderr
    out = r.stdout.decode()
    assert "gc: " in out and "deleted 0" in out
    assert "within the grace period (86400s), freed by gc runs after 20" in out
    assert "held by the last 3 generations" in out
    before = _stored_bytes(cli_repo)
    r = cli("-r", str(cli_repo), "gc", "--json")
    rep = json.loads(r.stdout)
    assert rep["held_by_generations"] > 0 and rep["grace_held"] > 0 and rep["grace_freed_after"].endswith("Z")

    d = _forget(cli, cli_repo, "--keep-last", "1", "--prune", "--grace", "0s", "--force", "--keep-generations", "1")
    assert d["removed"] == [] and d["gc"]["deleted_bytes"] > 500_000
    assert (d["gc"]["grace_held"], d["gc"]["held_by_generations"]) == (0, 0)
    assert _stored_bytes(cli_repo) < before - 500_000
    r = cli("-r", str(cli_repo), "check")
    assert r.code == 0, r.stderr


def test_gc_report_tells_generations_pins_and_grace_apart(tmp_path: Path) -> None:
    from casbackup.files.forget import forget_snapshots
    from casbackup.gc import Collector, explain
    from helpers_files import backup, make_repo

    repo = make_repo()
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(random.Random(1).randbytes(100_000))
    backup(repo, src)
    with repo.reader("a slow restore"):  # pins the generation with the first snapshot
        (src / "f").write_bytes(random.Random(2).randbytes(100_000))
        backup(repo, src)
        forget_snapshots(repo, policy=Policy(last=1))
        for n in range(3):  # push the pinned generation out of the last 3
            (src / f"g{n}").write_bytes(b"%d" % n)
            backup(repo, src)
            forget_snapshots(repo, policy=Policy(last=1))
        held = Collector(repo, grace=0, dry_run=True).run()  # a dry run needs no force
        assert held.held_by_pins > 0 and held.held_by_pins_bytes >= 100_000
        assert held.held_by_generations > 0 and held.grace_held == 0
        assert any("held by live pins" in line for line in explain(held))
    freed = Collector(repo, grace=0, keep_last=1, force=True).run()
    assert freed.deleted_bytes >= 100_000 and (freed.held_by_pins, freed.held_by_generations) == (0, 0)
    waiting = Collector(repo, dry_run=True).run()  # gc's own state blobs are new: the 24h grace holds them
    assert waiting.grace_held == waiting.blobs_young > 0 and waiting.grace_freed_after is not None
    assert "within the grace period (86400s), freed by gc runs after" in explain(waiting)[0]


RESTIC_TIMES = [(5, 1, 0), (5, 1, 12), (5, 2, 6), (5, 3, 18), (5, 8, 1), (5, 9, 13), (5, 10, 18)]  # 2023, UTC


@pytest.mark.parametrize("policy,expected", [
    # what `restic forget --dry-run --json` 0.14 kept for backups made with --time at RESTIC_TIMES
    (Policy(daily=3), ["05-08 01", "05-09 13", "05-10 18"]),
    (Policy(within=W("2d")), ["05-09 13", "05-10 18"]),
    (Policy(within_daily=W("3d")), ["05-08 01", "05-09 13", "05-10 18"]),
    (Policy(weekly=2), ["05-03 18", "05-10 18"]),
    (Policy(hourly=4), ["05-03 18", "05-08 01", "05-09 13", "05-10 18"]),
])
def test_keep_rules_match_restic_014_output(policy: Policy, expected: list[str]) -> None:
    snaps = [SnapshotInfo(f"{i:064x}", float(timegm((2023, m, d, h, 0, 0))), "h", "u", ["/d"], [], "00" * 32)
             for i, (m, d, h) in enumerate(RESTIC_TIMES)]
    keep, _, _ = plan(snaps, policy)
    assert sorted(f"{RESTIC_TIMES[int(s.id, 16)][0]:02d}-{RESTIC_TIMES[int(s.id, 16)][1]:02d} "
                  f"{RESTIC_TIMES[int(s.id, 16)][2]:02d}" for s in keep) == expected


def test_buckets_follow_the_local_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in restic, a day is the local day: at UTC-10, 20:00Z and 06:00Z the next morning are one day."""
    at = [(4, 30, 12), (5, 1, 20), (5, 2, 6)]
    snaps = [SnapshotInfo(f"{i:064x}", float(timegm((2023, m, d, h, 0, 0))), "h", "u", ["/d"], [], "00" * 32)
             for i, (m, d, h) in enumerate(at)]
    keep, _, _ = plan(snaps, Policy(daily=2))
    assert sorted(int(s.id, 16) for s in keep) == [1, 2]  # UTC: days 05-02 and 05-01
    monkeypatch.setenv("TZ", "XXX+10")  # POSIX: ten hours behind UTC, no tz database needed
    time.tzset()
    keep, _, reasons = plan(snaps, Policy(daily=2))
    assert sorted(int(s.id, 16) for s in keep) == [0, 2]  # local: 05-01 (twice) and 04-30
    assert reasons[f"{2:064x}"] == ["daily 2023-05-01"]
    assert Within.parse("1d").cutoff(snaps[2].time) == snaps[2].time - 86400
