"""The adapter's cost per call and per byte, each against the legacy path in the same run.

    python tools/aptos/bench_adapter.py calls [--calls 20]
    python tools/aptos/bench_adapter.py bytes [--mib 1024]
    python tools/aptos/bench_adapter.py s3bytes [--mib 1024]

`calls`: wall time of one `open-for-read` of a 1 KiB file, run exactly as the tool runs it
(`bash -c "set -o ...; exec casbackup -q aptos open-for-read"`), median of N calls, against
`bash -c 'cat f'` of the same file and against the bare interpreter (`python -c pass`), which
no Python adapter can beat. Also the peak RSS of each adapter process (wait4's ru_maxrss).
The same call through the thin client (`casbackup aptos install-thin-client`) and its helper,
started by a first call and warm (as during a restore): its RSS is the client's, plus that of
the command's fork inside the helper (from the helper's debug log; it shares the helper's pages).

`bytes`: one u32-length-prefixed record file (half random, half repetitive payloads), streamed
from a file through create-for-write and read back through open-for-read into a file, against
the legacy configs' `gzip -c | cat > f` and `cat f | gunzip` of the same bytes, in the same run.
Both results are compared with the source byte for byte.

`s3bytes`: the same streams into and out of an S3 repository (moto's server on 127.0.0.1), against
the same bytes put and got with plain obstore (one streamed multipart PUT, one streamed GET) into
the same bucket, in the same run.

Python must find compiled bytecode (as after `pip install`): with PYTHONDONTWRITEBYTECODE
set and no __pycache__, every call recompiles casbackup from source; `calls` therefore
runs `compileall` on this checkout first and says so.
"""
from __future__ import annotations

import argparse
import compileall
import filecmp
import os
import random
import re
import resource
import shutil
import signal
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

from helpers_aptos import STRICT, Adapter, helper_pids, tool_env, wait_for_helper, write_config  # noqa: E402

from casbackup.backends import LocalBackend  # noqa: E402
from casbackup.repository import Repository  # noqa: E402


def make_chunk(size: int, seed: int = 1) -> bytes:
    """Records of a u32 length + payload: odd ones random (incompressible), even ones repetitive."""
    rng = random.Random(seed)
    out = bytearray()
    n = seed * 1_000_000
    while len(out) < size:
        body = rng.randbytes(300) if n % 2 else (b"account:%08d;" % n) * 20
        out += struct.pack(">I", len(body)) + body
        n += 1
    return bytes(out[:size])


def write_source(path: Path, size: int, block: int = 16 * 1024 * 1024) -> None:
    """The chunk file, generated block by block (every block different: nothing deduplicates)."""
    with open(path, "wb") as f:
        for i, off in enumerate(range(0, size, block)):
            f.write(make_chunk(min(block, size - off), seed=i + 1))


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
        thin_env = _thin_client(tmp, env)
        cases = {
            "bash -c 'cat f'": f"cat {tmp / 'f'}",
            "python -c pass": f"exec {sys.executable} -c pass",
            "adapter open-for-read": a.commands["open_for_read"],
            "thin client open-for-read": a.commands["open_for_read"],
        }
        envs = {name: thin_env if name.startswith("thin") else env for name in cases}
        walls: dict[str, list[float]] = {k: [] for k in cases}
        cpus: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(n):  # interleaved, so a change in load hits every case alike
            for name, script in cases.items():
                wall, cpu = timed_call(script, envs[name])
                walls[name].append(wall)
                cpus[name].append(cpu)
        rss = {name: [peak_rss(script, envs[name], tmp) for _ in range(3)] for name, script in cases.items()}
        forks_kb = [int(m) for m in re.findall(r"open-for-read: exit 0, [0-9.]+ s, peak RSS (\d+) KB",
                                               "".join(p.read_text() for p in (tmp / "h").glob("*.log")))]
        helper_kb = _stop_helpers(tmp / "h")
    print(f"{n} calls each, 1 KiB file, load average {os.getloadavg()[0]:.2f} (1 min), bytecode precompiled")
    for name, w in walls.items():
        peaks = [r for r in rss[name] if r is not None]
        shown = f"{max(peaks) / 1e6:5.1f} MB" if peaks else "n/a (no /usr/bin/time)"
        print(f"{name:26s} median {statistics.median(w) * 1000:6.1f} ms  min {min(w) * 1000:6.1f} ms  "
              f"CPU {statistics.median(cpus[name]) * 1000:6.1f} ms  peak RSS {shown}")
    if forks_kb:
        print(f"thin client: each call's command fork in the helper peaks at {max(forks_kb) / 1e3:.1f} MB "
              f"(median {statistics.median(forks_kb) / 1e3:.1f} MB, shared with the helper), the helper itself at "
              f"{helper_kb / 1e6:.1f} MB; CPU above counts the client only")


def _thin_client(tmp: Path, env: dict[str, str]) -> dict[str, str]:
    """Install the thin client, start its helper with one call, and wait until it listens."""
    client = tmp / "casbackup-aptos"
    subprocess.run([sys.executable, "-m", "casbackup", "aptos", "install-thin-client", str(client)], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    thin_env = {**env, "CASBACKUP_BIN": str(client), "CASBACKUP_APTOS_HELPER_DIR": str(tmp / "h"),
                "CASBACKUP_APTOS_HELPER_DEBUG": "1"}
    timed_call("exec ${CASBACKUP_BIN} -q aptos list-metadata-files", thin_env)  # falls back, starts the helper
    wait_for_helper(tmp / "h", timeout=60)
    return thin_env


def _stop_helpers(helper_dir: Path) -> int:
    """SIGTERM the helpers started under helper_dir; the largest one's peak RSS (bytes) before."""
    peak = 0
    for pid in helper_pids(helper_dir):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            peak = max(peak, int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024)  # type: ignore[union-attr]
            os.kill(pid, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
    return peak


def _write_through(script: str, env: dict[str, str], src: Path, handle_first: bool = True) -> tuple[str, float]:
    """The tool's write: read the handle to EOF, then stream the file into stdin. (handle, seconds)
    handle_first=False: a plain pipeline that prints nothing (the legacy commands' data part)."""
    t = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", STRICT + script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE if handle_first else subprocess.DEVNULL, env=env)
    assert proc.stdin is not None
    handle = proc.stdout.read().decode().strip() if proc.stdout is not None else ""
    with open(src, "rb") as f:
        shutil.copyfileobj(f, proc.stdin, 1024 * 1024)
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit(f"write failed: {script}")
    return handle, time.perf_counter() - t


def _read_through(script: str, env: dict[str, str], dest: Path) -> float:
    """The tool's read: the command's stdout, consumed as it comes (here into a file)."""
    t = time.perf_counter()
    with open(dest, "wb") as out:
        if subprocess.run(["bash", "-c", STRICT + script], stdin=subprocess.DEVNULL, stdout=out, env=env).returncode:
            raise SystemExit(f"read failed: {script}")
    return time.perf_counter() - t


def _same(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)


def bench_bytes(mib: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = tmp / "chunk"
        write_source(src, mib * 1024 * 1024)
        mb = src.stat().st_size / 1e6
        Repository.init(LocalBackend(tmp / "repo", create=True)).close()
        a = Adapter(write_config(tmp / "c.yaml", str(tmp / "repo")))
        env = {**tool_env(), **a.env_vars}
        load = [os.getloadavg()[0]]
        bh = a.create_backup("transaction_0-.beef")
        h, w = _write_through(a.commands["create_for_write"], {**env, "BACKUP_HANDLE": bh,
                                                               "FILE_NAME": "0-999.chunk"}, src)
        load.append(os.getloadavg()[0])
        gz = tmp / "legacy.gz"
        _, lw = _write_through(f"gzip -c | cat > {gz}", env, src, handle_first=False)  # the legacy configs' write
        load.append(os.getloadavg()[0])
        r = _read_through(a.commands["open_for_read"], {**env, "FILE_HANDLE": h}, tmp / "back")
        assert _same(src, tmp / "back")
        (tmp / "back").unlink()
        load.append(os.getloadavg()[0])
        lr = _read_through(f"cat {gz} | gunzip", env, tmp / "back")  # the legacy configs' read
        assert _same(src, tmp / "back")
        load.append(os.getloadavg()[0])
        stored = sum(p.stat().st_size for p in (tmp / "repo").rglob("*") if p.is_file())
        gz_size = gz.stat().st_size
    print(f"{mb:.0f} MB chunk file; load average {min(load):.2f}-{max(load):.2f} (1 min) during the run; "
          f"stored: casbackup {stored / 1e6:.0f} MB, gzip {gz_size / 1e6:.0f} MB")
    print(f"write: casbackup create-for-write {w:.2f}s ({mb / w:.0f} MB/s), gzip -c | cat > f {lw:.2f}s "
          f"({mb / lw:.0f} MB/s): casbackup {lw / w:.1f}x as fast")
    print(f"read:  casbackup open-for-read {r:.2f}s ({mb / r:.0f} MB/s), cat f | gunzip {lr:.2f}s "
          f"({mb / lr:.0f} MB/s): casbackup {lr / r:.1f}x as fast")


def bench_s3_bytes(mib: int) -> None:
    sys.path.insert(0, str(ROOT / "tools" / "bench"))
    import obstore
    from obstore.store import S3Store
    from objectstore import make_bucket, start_moto

    moto, endpoint = start_moto()
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            src = tmp / "chunk"
            write_source(src, mib * 1024 * 1024)
            mb = src.stat().st_size / 1e6
            make_bucket(endpoint, "bench")
            creds = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_REGION": "us-east-1"}
            env = {**tool_env(), **creds, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
            subprocess.run([sys.executable, "-m", "casbackup", "-q", "-r", "s3://bench/repo", "init"], env=env,
                           check=True, stdout=subprocess.DEVNULL)
            a = Adapter(write_config(tmp / "c.yaml", "s3://bench/repo"), env)
            env.update(a.env_vars)
            raw = S3Store("bench", prefix="raw", endpoint=endpoint, region="us-east-1",
                          access_key_id="bench", secret_access_key="bench-secret",
                          client_options={"allow_http": True}, virtual_hosted_style_request=False)
            load = [os.getloadavg()[0]]
            bh = a.create_backup("transaction_0-.beef")
            h, w = _write_through(a.commands["create_for_write"], {**env, "BACKUP_HANDLE": bh,
                                                                   "FILE_NAME": "0-999.chunk"}, src)
            load.append(os.getloadavg()[0])
            t = time.perf_counter()
            with open(src, "rb") as f:
                obstore.put(raw, "chunk", f, chunk_size=8 * 1024 * 1024, max_concurrency=8)
            pw = time.perf_counter() - t
            load.append(os.getloadavg()[0])
            r = _read_through(a.commands["open_for_read"], {**env, "FILE_HANDLE": h}, tmp / "back")
            assert _same(src, tmp / "back")
            (tmp / "back").unlink()
            load.append(os.getloadavg()[0])
            t = time.perf_counter()
            with open(tmp / "back", "wb") as out:
                for part in obstore.get(raw, "chunk").stream(min_chunk_size=8 * 1024 * 1024):
                    out.write(part)
            pr = time.perf_counter() - t
            assert _same(src, tmp / "back")
            load.append(os.getloadavg()[0])
    finally:
        moto.kill()
        moto.wait()
    print(f"{mb:.0f} MB chunk file into moto on 127.0.0.1; load average {min(load):.2f}-{max(load):.2f} (1 min)")
    print(f"write: casbackup create-for-write {w:.2f}s ({mb / w:.0f} MB/s), plain obstore PUT {pw:.2f}s "
          f"({mb / pw:.0f} MB/s): casbackup {pw / w:.2f}x the PUT's speed")
    print(f"read:  casbackup open-for-read {r:.2f}s ({mb / r:.0f} MB/s), plain obstore GET {pr:.2f}s "
          f"({mb / pr:.0f} MB/s): casbackup {pr / r:.2f}x the GET's speed")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("calls").add_argument("--calls", type=int, default=20)
    sub.add_parser("bytes").add_argument("--mib", type=int, default=1024)
    sub.add_parser("s3bytes").add_argument("--mib", type=int, default=1024)
    args = ap.parse_args()
    if args.what == "calls":
        bench_calls(args.calls)
    elif args.what == "s3bytes":
        bench_s3_bytes(args.mib)
    else:
        bench_bytes(args.mib)


if __name__ == "__main__":
    main()
