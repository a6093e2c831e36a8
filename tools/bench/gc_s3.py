#!/usr/bin/env python3
"""gc on S3 (moto's server on 127.0.0.1): N unreferenced value blobs, grace 0, the time of the
collect (mark + sweep) in blobs deleted per second. `--code DIR` runs another checkout's
casbackup (e.g. the main branch) against the same benchmark, for a before/after pair.

Usage: python tools/bench/gc_s3.py [--blobs 2000] [--code DIR]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blobs", type=int, default=2000)
    ap.add_argument("--code", default=str(HERE.parents[1]), help="the checkout whose casbackup is measured")
    args = ap.parse_args()
    sys.path[:0] = [args.code, str(HERE)]
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    import casbackup
    from casbackup.backends import open_backend
    from casbackup.repository import Repository
    from objectstore import bench_gc, make_bucket, start_moto

    proc, endpoint = start_moto()
    try:
        make_bucket(endpoint, "gcbench")
        repo = Repository.init(open_backend("s3://gcbench/repo", {"endpoint": endpoint, "allow_http": "true"}))
        deleted, seconds = bench_gc(repo, args.blobs)
        print(f"gc on moto, {casbackup.__file__}: {deleted} blobs deleted in {seconds:.2f} s "
              f"({deleted / seconds:.0f} blobs/s), load {os.getloadavg()[0]:.1f}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
