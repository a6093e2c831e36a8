#!/usr/bin/env python3
"""Metadata benchmark on local disk (issue 2): a generation of 10^6 entries, and GC over 10^5 blobs.

Prints, with the command that reproduces them:
- building the generation (setup, not a goal);
- open + pin + look up one key, cold (goal < 50 ms), and the lookup alone;
- open + list all entries (goal < 2 s);
- commit one entry into it: time (goal < 50 ms) and bytes written (goal < 64 KiB);
- GC over 10^5 blobs (half reachable, half orphaned): mark and sweep throughput.

Usage: python tools/bench/metadata.py [--entries N] [--blobs N] [--dir DIR] [--keep]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from casbackup.backends import LocalBackend  # noqa: E402
from casbackup.btree import BTree, Entry, Op  # noqa: E402
from casbackup.codec import BlobType  # noqa: E402
from casbackup.gc import Collector  # noqa: E402
from casbackup.records import ROOT_KEY, Root, new_write_id  # noqa: E402
from casbackup.repository import Repository  # noqa: E402


class CountingBackend(LocalBackend):
    """The local backend, counting the bytes and objects every write sends to disk."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.bytes_written = 0
        self.objects_written = 0

    def create(self, key: str, data: bytes) -> bool:
        created = super().create(key, data)
        if created:
            self.bytes_written += len(data)
            self.objects_written += 1
        return created

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        etag = super().compare_and_swap(key, expected_etag, data)
        self.bytes_written += len(data)
        self.objects_written += 1
        return etag


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def key_of(i: int) -> str:
    return f"backup/{i:010d}"


def value_of(i: int) -> bytes:
    return b"epoch_ending %010d manifest %032x" % (i, i * 2654435761 % (1 << 128))


def build(path: Path, entries: int) -> Repository:
    """A repository whose head generation holds `entries` metadata entries (one commit)."""
    repo = Repository.init(LocalBackend(path, create=True))
    ops = [Op("meta", key_of(i), Entry("meta", key_of(i), value_of(i), None, ())) for i in range(entries)]
    tree = BTree(repo.store)
    new_tree, delta, _pages = tree.apply(None, ops)
    root, etag = repo.read_root()
    gen = repo._write_generation(root.seq + 1, root.generation, new_tree, delta, new_write_id(), "bench build")
    repo.backend.compare_and_swap(ROOT_KEY, etag, Root(gen.id, gen.seq, gen.write_id, time=repo.backend.now()).encode())
    return repo


def fresh(path: Path, backend: type[LocalBackend] = LocalBackend) -> Repository:
    return Repository.open(backend(path), write=True)


def bench_generation(base: Path, entries: int, rounds: int) -> dict[str, Any]:
    path = base / "gen"
    out: dict[str, Any] = {}
    out["build_s"], _ = timed(lambda: build(path, entries))
    out["pages"] = sum(1 for _ in LocalBackend(path).list("blobs/"))
    probe = [key_of(i) for i in range(0, entries, max(1, entries // rounds))][:rounds]

    lookups, lookup_only = [], []
    for k in probe:
        t0 = time.perf_counter()
        repo = Repository.open(LocalBackend(path))  # cold: new process state, empty decode cache
        with repo.reader("bench lookup", ttl=60) as snap:
            t1 = time.perf_counter()
            assert snap.get("meta", k) == value_of(int(k.split("/")[1]))
            t2 = time.perf_counter()
        lookups.append(t2 - t0)
        lookup_only.append(t2 - t1)
    out["open_pin_lookup_ms"] = statistics.median(lookups) * 1000
    out["open_pin_lookup_max_ms"] = max(lookups) * 1000
    out["lookup_only_ms"] = statistics.median(lookup_only) * 1000

    def list_all() -> int:
        repo = Repository.open(LocalBackend(path))
        with repo.reader("bench list", ttl=600) as snap:
            return sum(1 for _ in snap.list())

    lists, cpu = [], []
    for _ in range(3):
        c0 = time.process_time()
        t, n = timed(list_all)
        cpu.append(time.process_time() - c0)
        lists.append(t)
        assert n == entries, n
    out["list_all_s"], out["list_all_cpu_s"] = statistics.median(lists), statistics.median(cpu)

    commits, written, objects = [], [], []
    for i in range(rounds):
        repo = fresh(path, CountingBackend)
        backend: CountingBackend = repo.backend  # type: ignore[assignment]
        backend.bytes_written = backend.objects_written = 0  # not the open's capability self-test
        t, _ = timed(lambda: repo.commit(puts=[("meta", f"backup/new-{i:04d}", b"one more entry")]))
        commits.append(t)
        written.append(backend.bytes_written)
        objects.append(backend.objects_written)
    out["commit_ms"] = statistics.median(commits) * 1000
    out["commit_max_ms"] = max(commits) * 1000
    out["commit_bytes"] = int(statistics.median(written))
    out["commit_objects"] = int(statistics.median(objects))
    return out


def bench_gc(base: Path, blobs: int) -> dict[str, Any]:
    """`blobs` CHUNK blobs (format 2: in packs), half referenced by entries, half stored by a
    commit that references none of them (located, unreachable: their packs are garbage); GC grace 0
    (forced). `blobs_total` counts storage objects (packs and loose blobs)."""
    path = base / "gc"
    repo = Repository.init(LocalBackend(path, create=True), pack_size=1024 * 1024)
    half = blobs // 2
    with repo.transaction("bench gc: referenced") as txn:
        for i in range(half):
            ref = txn.put_blob(BlobType.CHUNK, b"chunk %d " % i * 8).ref
            txn.put("files", f"f{i:08d}", b"x", refs=[ref])
    with repo.transaction("bench gc: garbage") as txn:
        for i in range(half, blobs):
            txn.put_blob(BlobType.CHUNK, b"chunk %d " % i * 8)
    total = sum(1 for _ in repo.store.list_objects())
    out: dict[str, Any] = {"blobs": blobs, "objects": total}
    t, report = timed(lambda: Collector(fresh(path), grace=0, force=True, keep_last=1).run())
    out["gc_s"] = t
    out["gc_deleted"] = report.deleted
    out["gc_blobs_per_s"] = total / t
    t2, report2 = timed(lambda: Collector(fresh(path), grace=0, force=True, keep_last=1).run())
    out["gc_mark_only_s"] = t2  # second run: nothing left to delete, so this is mark + listing
    out["gc_mark_blobs_per_s"] = report2.blobs_total / t2
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--blobs", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=9, help="repetitions of lookup and commit (median reported)")
    ap.add_argument("--dir", default=None, help="where to build (default: a temp dir on the same disk as /tmp)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="casb-bench-", dir=args.dir))
    cmd = "python tools/bench/metadata.py " + " ".join(sys.argv[1:])
    try:
        g = bench_generation(base, args.entries, args.rounds)
        print(f"generation of {args.entries:,} entries on local disk ({base})")
        print(f"  build (one commit, setup)           {g['build_s']:8.2f} s   ({g['pages']} blobs)")
        print(f"  open + pin + look up one key (cold) {g['open_pin_lookup_ms']:8.1f} ms  median "
              f"(max {g['open_pin_lookup_max_ms']:.1f})   goal < 50 ms")
        print(f"    of which the lookup itself        {g['lookup_only_ms']:8.1f} ms")
        print(f"  open + pin + list all entries       {g['list_all_s']:8.2f} s    median of 3 "
              f"({g['list_all_cpu_s']:.2f} s CPU)   goal < 2 s")
        print(f"  commit one entry                    {g['commit_ms']:8.1f} ms  median "
              f"(max {g['commit_max_ms']:.1f})   goal < 50 ms")
        print(f"    bytes written by that commit      {g['commit_bytes']:8d} B   in {g['commit_objects']} objects "
              f"(incl. pin and root records)   goal < 65536 B")
        c = bench_gc(base, args.blobs)
        print(f"gc over {c['blobs']:,} blobs (half orphaned, grace 0 forced)")
        print(f"  mark + sweep                        {c['gc_s']:8.2f} s    {c['gc_blobs_per_s']:,.0f} blobs/s, "
              f"{c['gc_deleted']:,} deleted")
        print(f"  mark only (nothing to delete)       {c['gc_mark_only_s']:8.2f} s    "
              f"{c['gc_mark_blobs_per_s']:,.0f} blobs/s")
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"reproduce: {cmd}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
