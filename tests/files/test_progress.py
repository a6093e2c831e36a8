"""The progress display's figures, on a simulated clock: percent, errors, current files, the
JSON status message, and the ETA estimator (none too early; within 30% after 10% of the work)."""
from __future__ import annotations

import io
import json

import pytest

from casbackup.files import progress as progress_mod
from casbackup.files.progress import Display, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", c)
    return c


def simulate(clock: Clock, total: int, rate_at, seconds: float, tick: float = 0.25) -> list[tuple[float, float, float | None]]:
    """Run a job of `total` bytes whose speed at time t is rate_at(t) bytes/s; returns
    (time, fraction, eta) at each tick until it is done, and the real end time."""
    p = Progress("restore", False, total_bytes=total)
    start, done, rows = clock.now, 0.0, []
    while done < total and clock.now - start < seconds:
        clock.now += tick
        step = min(rate_at(clock.now - start) * tick, total - done)
        done += step
        p.add(nbytes=int(step))
        rows.append((clock.now - start, p.fraction() or 0.0, p.eta(clock.now)))
    return rows


def worst_error_after(rows: list[tuple[float, float, float | None]], share: float) -> float:
    end = rows[-1][0]
    errors = [abs(t + eta - end) / end for t, frac, eta in rows if frac >= share and eta is not None]
    assert errors, "no ETA after the first share of the work"
    return max(errors)


def test_no_eta_before_two_seconds_or_three_percent(clock: Clock) -> None:
    rows = simulate(clock, 100 << 20, lambda t: 10 << 20, seconds=60)
    assert all(eta is None for t, _f, eta in rows if t < progress_mod.ETA_AFTER_SECONDS)
    assert any(eta is not None for _t, _f, eta in rows)
    slow = simulate(clock, 1000 << 20, lambda t: 1 << 20, seconds=20)  # 2% done after 20 s
    assert all(eta is None for _t, frac, eta in slow if frac < progress_mod.ETA_AFTER_FRACTION)


def test_slow_start_does_not_make_a_wild_eta(clock: Clock) -> None:
    """Restore's case: a slow first seconds (planning, opening), then the real rate. The old
    whole-run average said 7:23 for a 35 s run; the ETA must be within 30% after 10%."""
    total = 350 << 20
    rows = simulate(clock, total, lambda t: (64 << 10) if t < 3 else (11 << 20), seconds=120)
    assert 30 < rows[-1][0] < 40
    assert worst_error_after(rows, 0.10) <= 0.30
    old = [(1 - f) * t / f for t, f, _eta in rows if f >= 0.10][0]  # the whole-run average's ETA then
    assert old > 1.3 * (rows[-1][0] - [t for t, f, _eta in rows if f >= 0.10][0])  # it was wrong here


def test_rate_change_mid_run_is_followed(clock: Clock) -> None:
    """Small files first (slow), big files after (fast): within a window of the change, the ETA
    follows the new rate (no estimator can foresee the change itself)."""
    total = 600 << 20
    rows = simulate(clock, total, lambda t: (4 << 20) if t < 10 else (20 << 20), seconds=300)
    end = rows[-1][0]
    settled = [abs(t + eta - end) / end for t, _f, eta in rows if eta is not None and t >= 10 + 0.25 * t]
    assert settled and max(settled) <= 0.30


def test_status_message_keys_and_values(clock: Clock) -> None:
    p = Progress("backup", Display(json=True), total_bytes=1000, total_files=4, stream=io.StringIO(),
                 errors=lambda: 2)
    p.item("new", "/src/a")
    p.add(files=1, nbytes=250, errors=1)
    clock.now += 3
    doc = p.status()
    assert doc["message_type"] == "status"
    assert doc["percent_done"] == pytest.approx(0.25)
    assert (doc["files_done"], doc["total_files"], doc["bytes_done"], doc["total_bytes"]) == (1, 4, 250, 1000)
    assert doc["error_count"] == 3  # its own count plus the source's
    assert doc["current_files"] == ["/src/a"]
    assert doc["seconds_elapsed"] == 3
    assert doc["seconds_remaining"] == 9  # a quarter in 3 s: three quarters in 9


def test_json_mode_writes_status_lines_after_the_interval(clock: Clock) -> None:
    out = io.StringIO()
    p = Progress("backup", Display(json=True), total_bytes=100, stream=out)
    p.add(nbytes=10)
    assert out.getvalue() == ""  # nothing before the first interval
    clock.now += progress_mod.JSON_INTERVAL
    p.add(nbytes=10)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["bytes_done"] == 20
    p.done()
    assert len(out.getvalue().splitlines()) == 1  # the summary is the command's, not the display's


def test_terminal_line_and_clear(clock: Clock) -> None:
    out = io.StringIO()
    p = Progress("restore", True, total_bytes=1000, total_files=10, stream=out)
    p.working_on("/x/\x1b[2Jevil")
    p.add(files=5, nbytes=500)
    text = out.getvalue()
    assert text.startswith("\r\x1b[K") and "50.0%" in text and "5/10 files" in text
    assert "\x1b[2J" not in text  # a file name cannot drive the terminal
    p.done()
    assert out.getvalue().endswith("\r\x1b[K")


def test_verbose_notes_and_phases(clock: Clock) -> None:
    out = io.StringIO()
    p = Progress("check", Display(verbosity=2), stream=out)
    p.phase("walking generations", total=10, unit="blobs")
    p.item("new", "/a")
    assert out.getvalue().splitlines() == ["casbackup: walking generations", "casbackup: new       /a"]
    quiet = io.StringIO()
    q = Progress("check", Display(verbosity=1), stream=quiet)
    q.item("new", "/a")
    assert quiet.getvalue() == ""  # per-file lines are -vv


def test_old_api_still_works(clock: Clock) -> None:
    out = io.StringIO()
    p = Progress("backup", False, stream=out)
    p.add(files=1, nbytes=5)
    p.total_bytes = 10
    p("a phase")  # the say(str) callback shape
    p.done()
    assert out.getvalue() == "" and p.label == "a phase"
