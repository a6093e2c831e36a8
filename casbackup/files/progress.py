"""The one progress display of long commands (backup, restore, check, gc, copy): counters any
thread bumps, shown as a redrawn status line on a terminal, as restic-style JSON-lines status
messages (--json), and as plain note lines at -v/-vv. Silent when nothing is enabled."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, TextIO

ETA_AFTER_SECONDS = 2.0    # no ETA before this much of a phase has run ...
ETA_AFTER_FRACTION = 0.03  # ... nor before this share of its work is done: early rates mislead
RATE_WINDOW = 3.0          # the ETA's rate is measured over the last RATE_WINDOW seconds (or more, see _rate)
WINDOW_SHARE = 0.25        # ... or over this share of the phase's time, when that is longer
TERMINAL_INTERVAL = 0.25   # seconds between status-line redraws
JSON_INTERVAL = 2.0        # seconds between JSON status messages (and before the first)
FILE_COST = 128 << 10      # a file's open, metadata and rename cost about as much as this many bytes' transfer
CURRENT_FILES = 2          # how many of the files being worked on a status shows


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def rfc3339(t: float) -> str:
    """A Unix time as the RFC 3339 UTC text every JSON output uses."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on (restic's style)."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _fps() -> float | None:
    """CASBACKUP_PROGRESS_FPS (like RESTIC_PROGRESS_FPS): status updates a second, both modes;
    0 turns the status (line or JSON messages) off. Unset or not a number: the defaults."""
    try:
        return min(float(os.environ.get("CASBACKUP_PROGRESS_FPS", "")), 60.0)
    except ValueError:
        return None


@dataclass
class Display:
    """What a command shows while it runs (the CLI builds it from -q, -v, --json and the terminal)."""

    terminal: bool = False  # redraw one status line on standard error
    json: bool = False      # JSON-lines status messages on standard output
    verbosity: int = 0      # 1 (-v): phases and totals as lines; 2 (-vv): a line per new/changed file

    def __bool__(self) -> bool:
        return self.terminal or self.json or self.verbosity > 0


class Progress:
    """Counters any thread may bump; the status is redrawn at most every `interval` seconds.
    Callable with a message (the older `say(str)` callback API): that starts a new phase."""

    def __init__(self, label: str, enabled: bool | Display, total_bytes: int | None = None,
                 stream: TextIO | None = None, interval: float | None = None, total_files: int | None = None,
                 unit: str = "files", errors: Callable[[], int] | None = None) -> None:
        self.display = enabled if isinstance(enabled, Display) else Display(terminal=bool(enabled))
        fps = _fps()
        self.enabled = (self.display.terminal or self.display.json) and fps != 0
        self.label, self.unit = label, unit
        self.total_bytes, self.total_files = total_bytes, total_files
        self.stream = stream or (sys.stdout if self.display.json else sys.stderr)
        self.notes = stream or sys.stderr
        default = JSON_INTERVAL if self.display.json else TERMINAL_INTERVAL
        self.interval = interval if interval is not None else (1.0 / fps if fps and fps > 0 else default)
        self.files = self.bytes = self.errors = 0
        self._error_source = errors
        self.start = self._phase_start = time.monotonic()
        self._last = self.start if self.display.json else 0.0  # JSON: the first status after one interval
        self._samples: deque[tuple[float, float]] = deque()
        self._current: deque[str] = deque(maxlen=CURRENT_FILES)
        self._lock = threading.Lock()
        self._draw_lock = threading.Lock()
        self._drawn = False

    # ---- what callers report ----

    def add(self, files: int = 0, nbytes: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes
            self.errors += errors
        self._maybe_draw()

    def working_on(self, path: str) -> None:
        """The file now being read or written (the newest CURRENT_FILES are shown)."""
        if self.enabled:
            self._current.append(path)

    def item(self, action: str, path: str) -> None:
        """-vv: one line per file ('new', 'modified'), like restic's verbose backup output."""
        self.working_on(path)
        self.note(f"{action:<9} {path}", level=2, doc={"message_type": "verbose_status", "action": action,
                                                       "item": path})

    def scanned(self, files: int, nbytes: int) -> None:
        """The totals a background scan found: percent and ETA from now on; -v says so."""
        self.total_files, self.total_bytes = files, nbytes
        self.note(f"scan finished in {time.monotonic() - self.start:.1f}s: {files} files, {human(nbytes)}", level=1)

    def phase(self, label: str, total: int | None = None, total_bytes: int | None = None,
              unit: str | None = None) -> None:
        """A new stage of the command: its own counters, totals and ETA; a line at -v."""
        with self._lock:
            self.label, self.unit = label, unit or self.unit
            self.total_files, self.total_bytes = total, total_bytes
            self.files = self.bytes = 0
            self._phase_start = time.monotonic()
            self._samples.clear()
        self.note(label, level=1)
        self._maybe_draw(force=self.display.terminal)

    __call__ = phase

    def note(self, text: str, level: int = 1, doc: dict[str, Any] | None = None) -> None:
        """A line kept above the status (at verbosity >= level); as a JSON message with --json."""
        if self.display.verbosity < level:
            return
        with self._draw_lock:
            if self.display.json:
                if doc is not None:
                    self.stream.write(json.dumps(doc) + "\n")
                    self.stream.flush()
                return
            self.notes.write(("\r\x1b[K" if self._drawn else "") + f"casbackup: {_printable(text)}\n")
            self.notes.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done()

    def done(self) -> None:
        if self.display.terminal and self._drawn:
            with self._draw_lock:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._drawn = False

    # ---- figures ----

    def error_count(self) -> int:
        return self.errors + (self._error_source() if self._error_source else 0)

    def fraction(self) -> float | None:
        """The share of the work done: bytes, plus FILE_COST per file when both totals are known
        (a tree of small files at the end of a run takes seconds that its bytes do not show)."""
        total_bytes, total_files = self.total_bytes or 0, self.total_files or 0
        if total_bytes and total_files:
            done = self.bytes + FILE_COST * min(self.files, total_files)
            return min(done / (total_bytes + FILE_COST * total_files), 1.0)
        if total_bytes:
            return min(self.bytes / total_bytes, 1.0)
        if total_files:
            return min(self.files / total_files, 1.0)
        return None

    def eta(self, now: float) -> float | None:
        """Seconds left, from the rate over a sliding window; None early in a phase (see ETA_AFTER_*)."""
        frac = self.fraction()
        if frac is None:
            return None
        rate = self._rate(now, frac)  # sampled from the start, so the first ETA has a window already
        if frac < ETA_AFTER_FRACTION or now - self._phase_start < ETA_AFTER_SECONDS:
            return None
        return (1.0 - frac) / rate if rate > 0 else None

    def _rate(self, now: float, frac: float) -> float:
        """Share of the work per second since the oldest sample in the window: short enough to
        forget a slow start (restore's planning, a dense tree of small files), growing with the
        run (WINDOW_SHARE of it) so a long run's ETA does not jump with every burst."""
        window = max(RATE_WINDOW, WINDOW_SHARE * (now - self._phase_start))
        self._samples.append((now, frac))
        while len(self._samples) > 2 and now - self._samples[1][0] >= window:
            self._samples.popleft()
        t0, f0 = self._samples[0]
        if now - t0 < 1.0:  # too short a span: the phase's average
            t0, f0 = self._phase_start, 0.0
        return (frac - f0) / (now - t0) if now > t0 else 0.0

    def status(self, now: float | None = None) -> dict[str, Any]:
        """The restic-style status message (percent_done is a fraction, as restic's)."""
        now = time.monotonic() if now is None else now
        frac, left = self.fraction(), self.eta(now)
        doc: dict[str, Any] = {"message_type": "status", "phase": self.label, "percent_done": frac or 0.0,
                               "total_files": self.total_files or 0, "files_done": self.files,
                               "total_bytes": self.total_bytes or 0, "bytes_done": self.bytes,
                               "error_count": self.error_count(), "current_files": list(self._current),
                               "seconds_elapsed": int(now - self.start)}
        if left is not None:
            doc["seconds_remaining"] = round(left)
        return doc

    def line(self, now: float) -> str:
        """The terminal's status line: [elapsed] percent, done/total, rate, errors, ETA, current file."""
        frac, left = self.fraction(), self.eta(now)
        parts = [f"[{clock(now - self.start)}]"] + ([f"{100 * frac:.1f}%"] if frac is not None else [])
        files = f"{self.files}/{self.total_files}" if self.total_files else f"{self.files}"
        size = human(self.bytes) + (f"/{human(self.total_bytes)}" if self.total_bytes else "")
        rate = self.bytes / max(now - self._phase_start, 1e-6)
        parts.append(f"{files} {self.unit}, {size}, {human(rate)}/s")
        errors = self.error_count()
        if errors:
            parts.append(f"{errors} errors")
        if left is not None:
            parts.append(f"ETA {clock(left)}")
        text = f"{self.label} " + " ".join(parts)
        return text + (f"  {self._current[-1]}" if self._current else "")

    # ---- drawing ----

    def _maybe_draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        if not self._draw_lock.acquire(blocking=False):
            return  # another thread is drawing
        try:
            self._last = now
            self._draw(now)
        finally:
            self._draw_lock.release()

    def _draw(self, now: float) -> None:
        if self.display.json:
            self.stream.write(json.dumps(self.status(now)) + "\n")
        else:
            width = _width(self.stream)
            self.stream.write("\r\x1b[K" + _printable(self.line(now))[: width - 1])
            self._drawn = True
        self.stream.flush()


def _width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80


def _printable(text: str) -> str:
    """A file name cannot move the cursor: control characters and undecodable bytes are escaped."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
