#!/usr/bin/env python3
"""gc's mark structure at scale: the format v2 compact mark set against the exact set gc uses today.

Simulates the part of gc whose memory grows with the number of blobs: the walk records N reached
blob IDs (here: random IDs, in random order), then the scan of the `_blobs` locations (sorted by ID,
one pack per 16 blobs) joins them and tallies live bytes per pack (FORMAT.md §12.7.7). Each
configuration runs in a fresh subprocess and reports its wall time and peak RSS. It measures the
data structure, not a whole gc (format v2 is not wired in yet).

Usage: python tools/bench/gc_scale.py [--counts 1000000,10000000] [--kinds prefix,exact]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_one(kind: str, n: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from casbackup.markset import PrefixSet

    started = time.monotonic()
    marks: PrefixSet | set[str] = PrefixSet() if kind == "prefix" else set()
    add = marks.add
    for i in range(n):  # the walk: reached blobs in walk order (random IDs)
        add(os.urandom(32).hex())
    if isinstance(marks, PrefixSet):
        marks.freeze()
    walked = time.monotonic() - started
    tally: dict[int, int] = {}
    hits = 0
    # the location scan: IDs in sorted order; here half of them reached (a fresh random half-space)
    step = (1 << 64) // max(n, 1)
    for i in range(n):
        blob_id = f"{i * step:016x}" + "0" * 48
        if blob_id in marks:
            hits += 1
        pack = i // 16
        tally[pack] = tally.get(pack, 0) + 1
    total = time.monotonic() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "blobs": n, "walk_s": round(walked, 2), "total_s": round(total, 2),
            "peak_rss_mib": round(rss, 1), "packs": len(tally), "hits": hits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="1000000,10000000")
    ap.add_argument("--kinds", default="prefix,exact")
    ap.add_argument("--one", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return
    print(f"load average {os.getloadavg()[0]:.2f}")
    rows = []
    for n in (int(c) for c in args.counts.split(",")):
        for kind in args.kinds.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", kind, str(n)], check=True, capture_output=True,
                                 text=True).stdout
            row = json.loads(out)
            rows.append(row)
            print(f"{kind:7s} {n:>11,} blobs: {row['total_s']:7.1f} s, peak RSS {row['peak_rss_mib']:8.1f} MiB, "
                  f"{row['packs']:,} packs", flush=True)
    by = {(r["kind"], r["blobs"]): r for r in rows}
    for n in sorted({r["blobs"] for r in rows}):
        if ("prefix", n) in by and ("exact", n) in by:
            p, e = by[("prefix", n)], by[("exact", n)]
            print(f"{n:,} blobs: prefix/exact RSS {p['peak_rss_mib'] / e['peak_rss_mib']:.2f}, "
                  f"time {p['total_s'] / e['total_s']:.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
