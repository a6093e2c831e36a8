#!/usr/bin/env python3
"""How right the progress ETA is: runs backup and restore with --json status messages (10 a
second) on a generated data set and compares each status's predicted end (its arrival + ETA) with
the process's real end, from the first status past --after of the work on.

Data (seeded, under --workdir): --size bytes in files of 0.5-8 MiB, half random, half text,
plus 2,000 small files (a slow start of many small files, then big ones: the case an average
over the whole run gets wrong).

Usage: python tools/bench/progress_eta.py [--size 300M] [--after 0.10] [--workdir DIR]
Prints, per command: its seconds, the first ETA's time and share done, and the worst and the
median relative error of the predicted end after --after of the work.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def make_data(root: Path, size: int) -> None:
    rng = random.Random(12)
    small = root / "small"
    small.mkdir(parents=True)
    for i in range(2000):
        (small / f"s{i:04d}").write_bytes(rng.randbytes(rng.randint(512, 8192)))
    big, left, n = root / "big", size, 0
    big.mkdir()
    while left > 0:
        part = min(left, rng.randint(1 << 19, 8 << 20))
        data = rng.randbytes(part) if n % 2 else (b"lorem ipsum %d dolor sit amet\n" % n) * (part // 28 + 1)
        (big / f"b{n:04d}").write_bytes(data[:part])
        left, n = left - part, n + 1


def run(args: list[str]) -> tuple[float, list[tuple[float, dict[str, object]]]]:
    """Run the command; each status message with the time it arrived (the JSON's own seconds
    are whole seconds, too coarse to judge a 15 s run), and the run's seconds."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), CASBACKUP_PROGRESS_FPS="10")
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "casbackup", *args, "--json"], stdout=subprocess.PIPE, env=env,
                            cwd=ROOT)
    assert proc.stdout is not None
    status = []
    for line in proc.stdout:
        doc = json.loads(line)
        if doc.get("message_type") == "status":
            status.append((time.monotonic() - start, doc))
    if proc.wait() != 0:
        raise SystemExit(f"{args[2]} failed")
    return time.monotonic() - start, status


def report(name: str, took: float, status: list[tuple[float, dict[str, object]]], after: float) -> None:
    with_eta = [(t, s) for t, s in status if "seconds_remaining" in s]
    if not with_eta:
        print(f"{name}: {took:.1f}s, {len(status)} status messages, no ETA (too short a run)")
        return
    errors = [abs(t + float(s["seconds_remaining"]) - took) / took  # type: ignore[arg-type]
              for t, s in with_eta if float(s["percent_done"]) >= after]  # type: ignore[arg-type]
    t0, first = with_eta[0]
    print(f"{name}: {took:.1f}s; first ETA at {t0:.1f}s ({100 * float(first['percent_done']):.1f}% "  # type: ignore[arg-type]
          f"done, said {first['seconds_remaining']}s left); after {100 * after:.0f}%: worst error "
          f"{100 * max(errors):.0f}%, median {100 * statistics.median(errors):.0f}% ({len(errors)} statuses)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="300M")
    ap.add_argument("--after", type=float, default=0.10)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="casbackup-eta-"))
    try:
        make_data(work / "data", parse_size(a.size))
        repo = str(work / "repo")
        subprocess.run([sys.executable, "-m", "casbackup", "-r", repo, "init"], check=True, capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
        took, status = run(["-r", repo, "backup", str(work / "data")])
        report("backup", took, status, a.after)
        took, status = run(["-r", repo, "restore", "latest", "--target", str(work / "out")])
        report("restore", took, status, a.after)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
