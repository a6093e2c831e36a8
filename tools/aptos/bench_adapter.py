"""Throughput of one Aptos chunk file through the adapter, against the tool's LocalFs in the same run.

    python tools/aptos/bench_adapter.py [--mib 128]

Writes and reads one u32-length-prefixed record file (half random, half repetitive payloads,
so zstd has something to do) through tools/aptos/casbackup.yaml exactly as the tool would
(bash -c, strict mode, stdout then stdin), and the same bytes as the legacy LocalFs does
(create, write, fsync). Prints seconds, MB/s and the ratio casbackup / legacy.
"""
from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "aptos"))

from aptos_harness import Adapter, write_config  # noqa: E402

from casbackup.backends import LocalBackend  # noqa: E402
from casbackup.repository import Repository  # noqa: E402


def make_chunk(size: int) -> bytes:
    rng = random.Random(1)
    out = bytearray()
    n = 0
    while len(out) < size:
        body = rng.randbytes(300) if n % 2 else (b"account:%08d;" % n) * 20
        out += struct.pack(">I", len(body)) + body
        n += 1
    return bytes(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=128)
    args = ap.parse_args()
    data = make_chunk(args.mib * 1024 * 1024)
    mb = len(data) / 1e6
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        Repository.init(LocalBackend(tmp / "repo", create=True)).close()
        a = Adapter(write_config(tmp / "c.yaml", str(tmp / "repo")))
        bh = a.create_backup("transaction_0-.beef")
        t = time.perf_counter()
        h = a.create_for_write(bh, "0-999.chunk", data)
        w = time.perf_counter() - t
        t = time.perf_counter()
        back = a.open_for_read(h)
        r = time.perf_counter() - t
        assert back == data
        legacy = tmp / "legacy" / bh
        legacy.mkdir(parents=True)
        t = time.perf_counter()
        with open(legacy / "0-999.chunk", "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        lw = time.perf_counter() - t
        t = time.perf_counter()
        assert (legacy / "0-999.chunk").read_bytes() == data
        lr = time.perf_counter() - t
        stored = sum(p.stat().st_size for p in (tmp / "repo" / "blobs").rglob("*") if p.is_file())
    print(f"{mb:.0f} MB chunk file; stored {stored / 1e6:.0f} MB in casbackup")
    print(f"write: casbackup {w:.2f}s ({mb / w:.0f} MB/s), legacy LocalFs {lw:.2f}s ({mb / lw:.0f} MB/s), "
          f"ratio {w / lw:.1f}x")
    print(f"read:  casbackup {r:.2f}s ({mb / r:.0f} MB/s), legacy LocalFs {lr:.2f}s ({mb / lr:.0f} MB/s), "
          f"ratio {r / lr:.1f}x")


if __name__ == "__main__":
    main()
