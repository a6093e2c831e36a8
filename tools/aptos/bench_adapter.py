"""The adapter's cost per call and per byte, each against the legacy path in the same run.

    python tools/aptos/bench_adapter.py calls [--calls 20]
    python tools/aptos/bench_adapter.py bytes [--mib 1024]

`calls`: wall time of one `open-for-read` of a 1 KiB file, run exactly as the tool runs it
(`bash -c "set -o ...; exec casbackup -q aptos open-for-read"`), median of N calls, against
`bash -c 'cat f'` of the same file and against the bare interpreter (`python -c pass`), which
no Python adapter can beat. Also the peak RSS of each adapter process (wait4's ru_maxrss).

`bytes`: one u32-length-prefixed record file (half random, half repetitive payloads) through
create-for-write and open-for-read, against the legacy configs' `gzip -c | cat > f` and
`cat f | gunzip` of the same bytes.

Python must find compiled bytecode (as after `pip install`): with PYTHONDONTWRITEBYTECODE
set and no __pycache__, every call recompiles casbackup from source; `calls` therefore
runs `compileall` on this checkout first and says so.
"""
from __future__ import annotations

import argparse
import compileall
import os
import random
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "aptos"))

from aptos_harness import STRICT, Adapter, tool_env, write_config  # noqa: E402

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
    return bytes(out[:size])


def timed_call(script: str, env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one `bash -c` call, stdout drained like the tool does. CPU time (user +
    system of the call's processes) depends much less on the machine's load than wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(["bash", "-c", STRICT + script], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"call failed ({proc.returncode}): {script}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def peak_rss(script: str, env: dict[str, str], tmp: Path) -> int | None:
    """Peak RSS in bytes of one call, through GNU time: a child forked from this (big) process would
    report this process's RSS as its own peak. None if /usr/bin/time is not installed."""
    if not Path("/usr/bin/time").exists():
        return None
    out = tmp / "rss"
    subprocess.run(["/usr/bin/time", "-o", str(out), "-f", "%M", "bash", "-c", STRICT + script],
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, check=True)
    return int(out.read_text().split()[-1]) * 1024


def bench_calls(n: int) -> None:
    compileall.compile_dir(str(ROOT / "casbackup"), quiet=1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        Repository.init(LocalBackend(tmp / "repo", create=True)).close()
        a = Adapter(write_config(tmp / "c.yaml", str(tmp / "repo")))
        data = os.urandom(1024)
        handle = a.create_for_write(a.create_backup("transaction_0-.beef"), "0-9.chunk", data)
        (tmp / "f").write_bytes(data)
        env = dict(tool_env())
        env.update(a.env_vars)
        env["FILE_HANDLE"] = handle
        cases = {
            "bash -c 'cat f'": f"cat {tmp / 'f'}",
            "python -c pass": f"exec {sys.executable} -c pass",
            "adapter open-for-read": a.commands["open_for_read"],
        }
        walls: dict[str, list[float]] = {k: [] for k in cases}
        cpus: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(n):  # interleaved, so a change in load hits every case alike
            for name, script in cases.items():
                wall, cpu = timed_call(script, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
        rss = {name: [peak_rss(script, env, tmp) for _ in range(3)] for name, script in cases.items()}
    print(f"{n} calls each, 1 KiB file, load average {os.getloadavg()[0]:.2f} (1 min), bytecode precompiled")
    for name, w in walls.items():
        peaks = [r for r in rss[name] if r is not None]
        shown = f"{max(peaks) / 1e6:5.1f} MB" if peaks else "n/a (no /usr/bin/time)"
        print(f"{name:24s} median {statistics.median(w) * 1000:6.1f} ms  min {min(w) * 1000:6.1f} ms  "
              f"CPU {statistics.median(cpus[name]) * 1000:6.1f} ms  peak RSS {shown}")


def bench_bytes(mib: int) -> None:
    data = make_chunk(mib * 1024 * 1024)
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
        del back
        gz = tmp / "legacy.gz"
        t = time.perf_counter()
        subprocess.run(["bash", "-c", STRICT + f"gzip -c | cat > {gz}"], input=data, check=True)
        lw = time.perf_counter() - t
        t = time.perf_counter()
        out = subprocess.run(["bash", "-c", STRICT + f"cat {gz} | gunzip"], stdout=subprocess.PIPE, check=True).stdout
        lr = time.perf_counter() - t
        assert out == data
        stored = sum(p.stat().st_size for p in (tmp / "repo" / "blobs").rglob("*") if p.is_file())
        gz_size = gz.stat().st_size
    print(f"{mb:.0f} MB chunk file, load average {os.getloadavg()[0]:.2f} (1 min); stored: casbackup "
          f"{stored / 1e6:.0f} MB, gzip {gz_size / 1e6:.0f} MB")
    print(f"write: casbackup {w:.2f}s ({mb / w:.0f} MB/s), gzip -c | cat > f {lw:.2f}s ({mb / lw:.0f} MB/s), "
          f"casbackup is {lw / w:.1f}x faster")
    print(f"read:  casbackup {r:.2f}s ({mb / r:.0f} MB/s), cat f | gunzip {lr:.2f}s ({mb / lr:.0f} MB/s), "
          f"casbackup is {lr / r:.1f}x faster")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("calls").add_argument("--calls", type=int, default=20)
    sub.add_parser("bytes").add_argument("--mib", type=int, default=1024)
    args = ap.parse_args()
    if args.what == "calls":
        bench_calls(args.calls)
    else:
        bench_bytes(args.mib)


if __name__ == "__main__":
    main()
