#!/usr/bin/env python3
"""gc at scale (FORMAT.md §12.7.7): the real Collector on a simulated repository, or the mark
structure alone.

`--mode repo` (the default) builds, for each count N, a local-directory repository of N chunks in
packs (the library's own writers: PackBuilder and BlobStore.put_pack for the packs, the B-tree's
apply for the `_blobs` index and a `files` namespace, one generation naming it, then two ordinary
commits so that gc walks keep_last = 3 generations sharing pages). Its shape: FILE blobs of
`--file-chunks` chunks each, one `files` entry per FILE, and about 10% garbage -- 8% of the data
packs wholly dead (a forgotten backup), 1% half dead (gc repacks them), 40% with 3 dead chunks in
64 (kept). Then it runs the real Collector (grace 0, forced: one run condemns, repacks and
sweeps) in a fresh subprocess and reports its wall time, CPU time and peak RSS (ru_maxrss). With
`--code DIR,...` the gc runs once per code tree (a copy of the repository each; e.g. an export of
the code before a change) on the same built repository.

`--mode marks` measures only the mark structure (random IDs into a PrefixSet or a set, then a
scan joining sorted IDs against it), as before gc used it.

Usage: python tools/bench/gc_scale.py [--counts 1000000,10000000] [--code .,/tmp/old] [--dir /tmp/gcscale] [--keep]
       python tools/bench/gc_scale.py --gc REPO_DIR CODE_DIR [--dry-run]   (one gc of a kept repository)
       python tools/bench/gc_scale.py --mode marks [--counts ...] [--kinds prefix,exact]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PER_PACK = 64          # chunks per data pack
FILES_PER_PACK = 256   # FILE blobs per metadata pack
_REC = struct.Struct("<32sIIIB")  # blob id, pack number, offset, length, type: one `_blobs` entry


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the simulated repository -----------------------------------------------------------------

def build(n: int, directory: str, file_chunks: int, seed: int) -> dict[str, object]:
    """Write a repository of `n` chunks to `directory` (see the module docstring)."""
    sys.path.insert(0, str(ROOT))
    from casbackup.backends.local import LocalBackend
    from casbackup.btree import Entry, Op
    from casbackup.chunklist import Piece, leaf_body
    from casbackup.codec import BlobType, Ref, encode_blob, pack_structured
    from casbackup.packs import LOCATIONS_NAMESPACE, Location, PackBuilder, PackClass
    from casbackup.records import Root, new_write_id
    from casbackup.repository import Repository

    os.fsync = lambda fd: None  # building only: the gc run measured afterwards fsyncs as usual
    started = time.monotonic()
    rng = random.Random(seed)
    backend = LocalBackend(directory, create=True)
    repo = Repository.init(backend)
    store = repo.store
    buckets = [bytearray() for _ in range(256)]  # `_blobs` records by first ID byte: 45 B each
    packs: list[str] = []  # pack number -> ID, numbered at their first blob
    numbers: dict[str, int] = {}
    dead = files = 0
    live: list[Piece] = []
    meta = PackBuilder(PackClass.METADATA)
    file_refs: list[Ref] = []

    def locate(pack: PackBuilder, blob_id: str, loc: Location) -> None:
        raw = bytes.fromhex(blob_id)
        if pack.pack_id not in numbers:
            numbers[pack.pack_id] = len(packs)
            packs.append(pack.pack_id)
        buckets[raw[0]].extend(_REC.pack(raw, numbers[pack.pack_id], loc.offset, loc.length, int(loc.type)))

    def finish(pack: PackBuilder) -> None:
        store.put_pack(pack)

    def flush_file() -> None:
        nonlocal meta, files
        refs, body = leaf_body(live)
        blob = encode_blob(BlobType.FILE, pack_structured(refs, body, BlobType.FILE), None)
        if blob.id not in meta:
            locate(meta, blob.id, meta.add(blob))
        file_refs.append(Ref(BlobType.FILE, blob.id))
        live.clear()
        files += 1
        if len(meta) >= FILES_PER_PACK:
            finish(meta)
            meta = PackBuilder(PackClass.METADATA)

    made = 0
    while made < n:
        r = rng.random()
        dead_share = 1.0 if r < 0.08 else 0.5 if r < 0.09 else 3 / PER_PACK if r < 0.49 else 0.0
        pack = PackBuilder(PackClass.DATA)
        for _ in range(min(PER_PACK, n - made)):
            blob = encode_blob(BlobType.CHUNK, made.to_bytes(8, "big") + rng.randbytes(24), None)
            made += 1
            locate(pack, blob.id, pack.add(blob))
            if rng.random() < dead_share:
                dead += 1
                continue
            live.append(Piece(blob.id, 32))
            if len(live) >= file_chunks:
                flush_file()
        finish(pack)
    if live:
        flush_file()
    if len(meta):
        finish(meta)
    packed_s = time.monotonic() - started

    root, etag = repo.read_root()
    index, entries = None, 0
    for b in range(256):  # ascending keys: each apply only appends at the tree's right edge
        recs = sorted(_REC.iter_unpack(bytes(buckets[b])))
        buckets[b] = bytearray()
        ops = []
        for raw, p, offset, length, kind in recs:
            blob_id = raw.hex()
            value = Location(BlobType(kind), packs[p], offset, length).to_value()
            ops.append(Op(LOCATIONS_NAMESPACE, blob_id, Entry(LOCATIONS_NAMESPACE, blob_id, value, None, ())))
        index, delta, _ = repo.index.apply(index, ops)
        entries += delta
    for start in range(0, len(file_refs), 100_000):
        ops = [Op("files", f"f{i:010d}", Entry("files", f"f{i:010d}", b"", None, (ref,)))
               for i, ref in enumerate(file_refs[start:start + 100_000], start)]
        index, delta, _ = repo.index.apply(index, ops)
        entries += delta
    write_id = new_write_id()
    gen = repo._write_generation(root.seq + 1, root.generation, index, entries, write_id, f"simulated {n} chunks")
    if not repo.swap_root(etag, Root(gen.id, gen.seq, write_id, root.gc_epoch, root.condemned, root.sweeping,
                                     root.retain_floor, backend.now()), creates_generation=True):
        raise SystemExit("the root moved while building")
    for k in range(2):  # later generations sharing almost every page
        repo.commit(puts=[("files", f"later{k}", b"x")], message=f"later {k}")
    return {"blobs": n, "dead_chunks": dead, "files": files, "packs": len(packs), "entries": entries,
            "build_s": round(time.monotonic() - started, 1), "pack_s": round(packed_s, 1),
            "build_rss_mib": round(_rss_mib(), 1)}


def run_gc(directory: str, code: str, dry_run: bool = False) -> dict[str, object]:
    """One real gc (grace 0, forced) over `directory`, with the casbackup package under `code`;
    a dry run marks (the walk, the listing, the scans of `_blobs`) and changes nothing."""
    sys.path.insert(0, str(Path(code).resolve()))
    import casbackup
    from casbackup.backends.local import LocalBackend
    from casbackup.gc import Collector
    from casbackup.repository import Repository

    base = _rss_mib()
    started = time.monotonic()
    repo = Repository.open(LocalBackend(directory), write=not dry_run)
    report = Collector(repo, grace=0, keep_last=3, force=True, dry_run=dry_run).run()
    seconds = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {k: v for k, v in report.to_json().items() if isinstance(v, int) and not isinstance(v, bool)}
    return {**out, "gc_s": round(seconds, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(_rss_mib(), 1), "import_rss_mib": round(base, 1),
            "code": str(Path(casbackup.__file__).parent.parent)}


def _child(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    out = done.stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def repo_mode(args: argparse.Namespace) -> None:
    codes = args.code.split(",")
    for n in (int(c) for c in args.counts.split(",")):
        base = Path(args.dir) / f"repo-{n}"
        shutil.rmtree(base, ignore_errors=True)
        built = _child("--build", str(n), str(base), str(args.file_chunks), str(args.seed))
        print(f"built {n:,} chunks: {built['files']:,} files, {built['packs']:,} packs, {built['dead_chunks']:,} "
              f"dead chunks, {built['entries']:,} entries in {built['build_s']} s (load {os.getloadavg()[0]:.2f})",
              flush=True)
        for code in codes:
            target = base if len(codes) == 1 else Path(f"{base}-gc")
            if len(codes) > 1:
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(base, target)
            row = _child("--gc", str(target), code)
            print(f"gc {n:>11,} blobs [{row['code']}]: {row['gc_s']:7.1f} s ({row['cpu_s']} s CPU), peak RSS {row['peak_rss_mib']:7.1f} MiB "
                  f"(imports {row['import_rss_mib']} MiB); deleted {row['deleted']:,}, repacked "
                  f"{row['repacked_packs']:,} packs, held by generations {row['held_by_generations']:,} "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
            print("  " + json.dumps(row), flush=True)
            if len(codes) > 1:
                shutil.rmtree(target, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


# ---- the mark structure alone -------------------------------------------------------------------

def run_marks(kind: str, n: int) -> dict[str, object]:
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
    return {"kind": kind, "blobs": n, "walk_s": round(walked, 2), "total_s": round(total, 2),
            "peak_rss_mib": round(_rss_mib(), 1), "packs": len(tally), "hits": hits}


def marks_mode(args: argparse.Namespace) -> None:
    rows = []
    for n in (int(c) for c in args.counts.split(",")):
        for kind in args.kinds.split(","):
            row = _child("--marks", kind, str(n))
            rows.append(row)
            print(f"{kind:7s} {n:>11,} blobs: {row['total_s']:7.1f} s, peak RSS {row['peak_rss_mib']:8.1f} MiB, "
                  f"{row['packs']:,} packs", flush=True)
    by = {(r["kind"], r["blobs"]): r for r in rows}
    for n in sorted({int(str(r["blobs"])) for r in rows}):
        if ("prefix", n) in by and ("exact", n) in by:
            p, e = by[("prefix", n)], by[("exact", n)]
            print(f"{n:,} blobs: prefix/exact RSS {float(str(p['peak_rss_mib'])) / float(str(e['peak_rss_mib'])):.2f}, "
                  f"time {float(str(p['total_s'])) / float(str(e['total_s'])):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("repo", "marks"), default="repo")
    ap.add_argument("--counts", default="1000000,10000000")
    ap.add_argument("--kinds", default="prefix,exact", help="marks mode: prefix, exact")
    ap.add_argument("--code", default=str(ROOT), help="repo mode: comma-separated code trees to run gc with")
    ap.add_argument("--dir", default="/tmp/casbackup-gc-scale", help="repo mode: where repositories are built")
    ap.add_argument("--file-chunks", type=int, default=16, help="repo mode: chunks per FILE blob")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="repo mode: keep the built repositories")
    ap.add_argument("--marks", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--build", nargs=4, metavar=("N", "DIR", "FILE_CHUNKS", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--gc", nargs=2, metavar=("DIR", "CODE"), help=argparse.SUPPRESS)
    ap.add_argument("--dry-run", action="store_true", help="with --gc DIR CODE: a dry run (the mark alone)")
    args = ap.parse_args()
    if args.marks:
        print(json.dumps(run_marks(args.marks[0], int(args.marks[1]))))
        return
    if args.build:
        print(json.dumps(build(int(args.build[0]), args.build[1], int(args.build[2]), int(args.build[3]))))
        return
    if args.gc:
        print(json.dumps(run_gc(args.gc[0], args.gc[1], args.dry_run)))
        return
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    (repo_mode if args.mode == "repo" else marks_mode)(args)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
