#!/usr/bin/env python3
"""Object-store benchmark at the blob-store level, against moto's S3 server on 127.0.0.1, and
Azurite (Azure Blob emulator) beside it when `.ci/run` installed it.

Measures, in one run:
- backup throughput: compress + hash + conditional-create upload of blobs, 1/4/16 requests in flight;
- restore throughput: download + verify + decompress of the same blobs;
- the peer, measured in the same run: raw obstore PUT/GET of the same bytes (no casbackup layer)
  on the same endpoint, so the ratio shows casbackup's own overhead; and the local-disk backend;
- commit latency (one small metadata put through the root compare-and-swap);
- GC throughput (blobs condemned and deleted per second).

moto (Python) and Azurite (Node.js) are emulators: their absolute numbers say little about AWS or
Azure; the ratios against plain obstore on the same endpoint are the point.
Reproduce: python tools/bench/objectstore.py [--blobs 48 --size-mib 2 --commits 30 --gc-blobs 200]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from casbackup.backends import LocalBackend, open_backend  # noqa: E402
from casbackup.btree import INLINE_VALUE_MAX  # noqa: E402
from casbackup.codec import BlobType, encode_blob  # noqa: E402
from casbackup.gc import Collector  # noqa: E402
from casbackup.repository import Repository  # noqa: E402
from casbackup.store import BlobStore  # noqa: E402
from casbackup.transfer import get_many, put_many  # noqa: E402
from tests.backends import helpers_azurite as azurite  # noqa: E402  (finds Azurite, makes containers: shared with the tests)

MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto did not start")


def start_azurite() -> tuple[subprocess.Popen[bytes], str] | None:
    """Azurite's blob service on 127.0.0.1, or None (with a note) if it is not installed."""
    binary = azurite.find_azurite_blob()
    if binary is None:
        print(f"# Azurite not installed (run .ci/run, or npm install --prefix {azurite.cache_dir()} azurite): "
              "Azure rows skipped")
        return None
    port = free_port()
    proc = subprocess.Popen(azurite.server_command(binary, port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
        except urllib.error.HTTPError:
            return proc, f"http://127.0.0.1:{port}/{azurite.ACCOUNT}"
        except OSError:
            time.sleep(0.1)
            continue
        return proc, f"http://127.0.0.1:{port}/{azurite.ACCOUNT}"
    proc.kill()
    raise SystemExit("Azurite did not start")


def make_bucket(endpoint: str, name: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{name}", method="PUT"), timeout=10).close()


def mixed_data(n: int, size: int) -> list[bytes]:
    """Half incompressible, half text-like: zstd does real work on both."""
    out = []
    words = b"casbackup object store benchmark generation blob pin lease root swap " * 64
    for i in range(n):
        rnd = os.urandom(size // 2)
        text = (words * (size // len(words) + 1))[: size - len(rnd)]
        out.append(bytes([i % 256]) + rnd[1:] + text)
    return out


def throughput(total_bytes: int, seconds: float) -> float:
    return total_bytes / MiB / seconds


def bench_blobs(store: BlobStore, data: list[bytes], requests: int) -> tuple[float, float]:
    total = sum(map(len, data))
    t = time.perf_counter()
    # loose blobs (format 2 packs file data inside transactions; this measures the per-object path)
    results = list(put_many(store, [(BlobType.PAGE, d) for d in data], requests=requests, max_bytes=requests * 8 * MiB))
    up = throughput(total, time.perf_counter() - t)
    t = time.perf_counter()
    for got, want in zip(get_many(store, [(r.ref, r.stored_size) for r in results], requests=requests,
                                  max_bytes=requests * 8 * MiB), data):
        assert got == want
    down = throughput(total, time.perf_counter() - t)
    for r in results:  # next round uploads again instead of deduplicating
        store.delete(r.ref.id)
    return up, down


def bench_raw_obstore(endpoint: str, bucket: str, data: list[bytes], stored: list[bytes],
                      requests: int) -> tuple[float, float]:
    """The peer: plain obstore PUT/GET of the already-compressed bytes, no hashing, no verification.

    Throughput is counted in logical (uncompressed) bytes, like casbackup's, so the ratio is a
    ratio of wall times."""
    import obstore
    from obstore.store import S3Store

    from obstore.store import AzureStore

    if "/" + azurite.ACCOUNT in endpoint:
        s = AzureStore(bucket, prefix=f"raw{requests}", endpoint=endpoint, client_options={"allow_http": True})
    else:
        s = S3Store(bucket, prefix=f"raw{requests}", endpoint=endpoint, region="us-east-1",
                    client_options={"allow_http": True}, virtual_hosted_style_request=False)
    total = sum(map(len, data))
    with ThreadPoolExecutor(requests) as pool:
        t = time.perf_counter()
        list(pool.map(lambda x: obstore.put(s, f"k{x[0]}", x[1], mode="create"), enumerate(stored)))
        up = throughput(total, time.perf_counter() - t)
        t = time.perf_counter()
        list(pool.map(lambda i: bytes(obstore.get(s, f"k{i}").bytes()), range(len(data))))
        down = throughput(total, time.perf_counter() - t)
    return up, down


def bench_commits(repo: Repository, n: int) -> list[float]:
    times = []
    for i in range(n):
        t = time.perf_counter()
        repo.commit(puts=[("bench", f"k{i}", b"v" * 64)], message=f"c{i}")
        times.append((time.perf_counter() - t) * 1000)
    return times


def bench_gc(repo: Repository, n: int) -> tuple[int, float]:
    """Commit n values stored as blobs, delete them, and collect with grace 0 until they are gone."""
    payload = [os.urandom(INLINE_VALUE_MAX + 1000) for _ in range(n)]
    with repo.transaction("gc fodder") as txn:
        for i, p in enumerate(payload):
            txn.put("gc", f"v{i}", p)
    with repo.transaction("gc delete") as txn:
        for i in range(n):
            txn.delete("gc", f"v{i}")
    repo.commit(puts=[("bench", "after", b"x")], message="push fodder out of keep-last")
    time.sleep(1.1)  # S3 mtimes have one-second resolution
    deleted, seconds = 0, 0.0
    for _ in range(3):  # mark, then sweep (one run may do both when grace is 0)
        t = time.perf_counter()
        deleted += Collector(repo, grace=0, keep_last=1, force=True).run().deleted
        seconds += time.perf_counter() - t
        if deleted >= n:
            break
    assert deleted >= n, deleted
    return deleted, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blobs", type=int, default=48)
    ap.add_argument("--size-mib", type=float, default=2.0)
    ap.add_argument("--commits", type=int, default=30)
    ap.add_argument("--gc-blobs", type=int, default=200)
    ap.add_argument("--inflight", default="1,4,16")
    args = ap.parse_args()
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    proc, endpoint = start_moto()
    az = start_azurite()
    tmp = Path(tempfile.mkdtemp(prefix="casbackup-bench-"))
    try:
        make_bucket(endpoint, "bench")
        stores = [("S3 (moto)", "s3://bench", endpoint, "bench", {"endpoint": endpoint, "allow_http": "true"})]
        if az is not None:
            for k, v in {"AZURE_STORAGE_ACCOUNT_NAME": azurite.ACCOUNT, "AZURE_STORAGE_ACCOUNT_KEY": azurite.KEY}.items():
                os.environ[k] = v
            container = azurite.make_container(az[1], "bench")
            stores.append(("Azure (Azurite)", f"az://{container}", az[1], container,
                           {"endpoint": az[1], "allow_http": "true"}))
        size = int(args.size_mib * MiB)
        data = mixed_data(args.blobs, size)
        stored = [encode_blob(BlobType.CHUNK, d, 3).stored for d in data]
        total_mib = args.blobs * size / MiB
        print(f"# casbackup object-store benchmark: {', '.join(name for name, *_ in stores)} on 127.0.0.1, "
              f"{args.blobs} blobs x {args.size_mib:g} MiB "
              f"({total_mib:.0f} MiB, half random, half text), zstd level 3, {os.cpu_count()} CPUs")
        print(f"# stored (compressed) size {sum(map(len, stored)) / MiB:.0f} MiB; MiB/s are logical bytes; 'raw' = plain "
              "obstore PUT/GET of the same compressed bytes (no hash, no verify, no zstd), same endpoint")
        print(f"{'store':>15} {'in flight':>9} | {'backup MiB/s':>12} {'raw PUT MiB/s':>13} {'ratio':>5} | "
              f"{'restore MiB/s':>13} {'raw GET MiB/s':>13} {'ratio':>5}")
        for n in [int(x) for x in args.inflight.split(",")]:
            for name, base, ep, bucket, opts in stores:
                store = BlobStore(open_backend(f"{base}/blobs{n}", opts))
                up, down = bench_blobs(store, data, n)
                raw_up, raw_down = bench_raw_obstore(ep, bucket, data, stored, n)
                print(f"{name:>15} {n:>9} | {up:>12.1f} {raw_up:>13.1f} {up / raw_up:>5.2f} | {down:>13.1f} "
                      f"{raw_down:>13.1f} {down / raw_down:>5.2f}")
            local_store = BlobStore(LocalBackend(tmp / f"local{n}", create=True))
            l_up, l_down = bench_blobs(local_store, data, n)
            print(f"{'local disk':>15} {n:>9} | {l_up:>12.1f} {'':>13} {'':>5} | {l_down:>13.1f}")
        local_repo = Repository.init(LocalBackend(tmp / "repo", create=True))
        local_ms = bench_commits(local_repo, args.commits)
        q = lambda xs: (statistics.median(xs), sorted(xs)[int(len(xs) * 0.9) - 1])  # noqa: E731
        print(f"commit latency (one small put, {args.commits} commits): local disk median {q(local_ms)[0]:.1f} ms, "
              f"p90 {q(local_ms)[1]:.1f} ms")
        repos = []
        for name, base, _, _, opts in stores:
            repo = Repository.init(open_backend(f"{base}/repo", opts))
            ms = bench_commits(repo, args.commits)
            print(f"  {name}: median {q(ms)[0]:.1f} ms, p90 {q(ms)[1]:.1f} ms")
            repos.append((name, repo))
        l_deleted, l_gc = bench_gc(local_repo, args.gc_blobs)
        print(f"gc ({args.gc_blobs} unreferenced value blobs + pages, mark + sweep): local disk {l_deleted} deleted "
              f"in {l_gc:.2f} s ({l_deleted / l_gc:.0f} blobs/s)")
        for name, repo in repos:
            deleted, t_gc = bench_gc(repo, args.gc_blobs)
            print(f"  {name}: {deleted} in {t_gc:.2f} s ({deleted / t_gc:.0f} blobs/s); "
                  f"ratio to local {(deleted / t_gc) / (l_deleted / l_gc):.2f}")
        print("reproduce: python tools/bench/objectstore.py " + " ".join(sys.argv[1:]))
    finally:
        for p in [proc] + ([az[0]] if az is not None else []):
            p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
