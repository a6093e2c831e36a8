#!/usr/bin/env python3
"""Backup/restore benchmark: casbackup vs restic vs borg, same machine, same run.

Installs nothing. Peers come from Debian:  apt-get install restic borgbackup

Data sets (seeded, generated under --workdir):
  mixed    --size bytes (default 1 GiB) in files of 1-32 MiB, half compressible text, half random
  small    --small-files files (default 50,000) of 0.5-8 KiB in directories of 100
  mixed'   the mixed set after overwriting 1% of its bytes in 64 KiB pieces at random offsets
  realtree a copy of --realtree-source (default /usr/share), the first --realtree-files regular
           files (default 30,000) in sorted walk order with their directories and symlinks,
           made once under the workdir and reused (its name and file count are printed)

Shapes (--shapes, comma-separated; default mixed,small), per round (tools alternate, order
rotates each round), each on a fresh repository:
  mixed    first backup of mixed (also: objects written per GiB = files in the repository after
           it / GiB of input), second backup of mixed' (the 1% change), restore of mixed'
  small    a backup of the small-files set
  realtree a backup of the real tree and its restore
  s3       backup and restore of mixed on S3: moto's server on 127.0.0.1 (one server per tool
           run, fresh bucket); restic through s3:http://127.0.0.1:PORT/bucket, casbackup through
           s3://bucket/... -o endpoint=...; borg has no S3 backend and is skipped there
Nothing is deleted between timed commands: repositories, restores and copies are moved into
WORKDIR/trash, emptied at the end (see discard(): on ext4 a large delete slows the creates that
follow it). Reports medians over --rounds, casbackup/peer ratios, the issue-10 goal of each measure (vs the
first peer) and whether it is met, and peak RSS (from a per-command wrapper).

Tools (--tools): restic, borg, casbackup (encrypted, the default: password from CASBACKUP_PASSWORD),
casbackup-plain (init --insecure-no-encryption: with both, the encryption cost is printed as
their time ratio), casbackup@SIZE (another average chunk size).

Usage: python tools/bench/backup.py [--size 1G] [--small-files 50000] [--rounds 3] [--workdir DIR]
       [--tools casbackup,restic,borg] [--chunk-avg 512K] [--shapes mixed,small,realtree,s3]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from objectstore import make_bucket, start_moto  # noqa: E402  (moto on 127.0.0.1, as the object-store benchmark)
WORDS = [w.encode() for w in (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can about said out "
    "block chain ledger version epoch transaction state snapshot backup restore chunk tree index manifest "
    "error warning info debug value key account module event sequence number height proof root hash").split()]


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.lower().rstrip("ib")
    return int(float(t[:-1]) * units[t[-1]]) if t[-1] in units else int(t)


_VOCAB: list[bytes] = []


def text_bytes(rng: random.Random, n: int) -> bytes:
    """Compressible text (zstd-3 gets about 3x): words and random numbers, in lines."""
    if not _VOCAB:
        r = random.Random(0)
        _VOCAB.extend(WORDS * 40)
        _VOCAB.extend(b"%d" % r.getrandbits(r.choice((8, 16, 24, 32))) for _ in range(30_000))
        _VOCAB.extend(b"\n" for _ in range(300))
    parts, size = [], 0
    while size < n:
        piece = b" ".join(rng.choices(_VOCAB, k=min(200_000, n // 5 + 16)))
        parts.append(piece)
        size += len(piece)
    return b"".join(parts)[:n]


def gen_mixed(root: Path, total: int, seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    made, i = 0, 0
    while made < total:
        size = min(total - made, rng.randint(1 << 20, 32 << 20))
        d = root / f"d{i % 8}"
        d.mkdir(exist_ok=True)
        data = text_bytes(rng, size) if i % 2 == 0 else rng.randbytes(size)
        (d / f"f{i:04d}.{'txt' if i % 2 == 0 else 'bin'}").write_bytes(data)
        made += size
        i += 1


def gen_small(root: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for i in range(count):
        d = root / f"{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir()
        n = rng.randint(512, 8192)
        (d / f"s{i:05d}").write_bytes(text_bytes(rng, n) if i % 2 == 0 else rng.randbytes(n))


def change_one_percent(root: Path, seed: int) -> int:
    """Overwrite 1% of the bytes in 64 KiB pieces at random offsets of random files."""
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    piece, changed = 64 << 10, 0
    while changed < total // 100:
        p = rng.choice(files)
        size = p.stat().st_size
        if size <= piece:
            continue
        with open(p, "r+b") as f:
            f.seek(rng.randrange(0, size - piece))
            f.write(rng.randbytes(piece))
        changed += piece
    return changed


def copy_real_tree(source: Path, dest: Path, limit: int) -> tuple[int, int]:
    """Copy the first `limit` regular files of `source` (sorted walk), with the directories and
    symlinks met on the way; unreadable entries are left out. Returns (files, bytes) copied."""
    files = size = 0
    for dirpath, dirs, names in os.walk(source):
        dirs.sort()
        rel = Path(dirpath).relative_to(source)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(names):
            src, dst = Path(dirpath) / name, dest / rel / name
            try:
                if src.is_symlink():
                    os.symlink(os.readlink(src), dst)
                elif src.is_file():
                    shutil.copy2(src, dst)
                    files += 1
                    size += dst.stat().st_size
            except OSError:
                continue
            if files >= limit:
                return files, size
    return files, size


def real_tree(work: Path, source: Path, limit: int) -> tuple[Path, int, int]:
    """The real-tree data set, made once under the workdir: (path, files, bytes)."""
    base = work / "realtree"
    tree, marker = base / source.name, base / "made.json"
    if marker.exists():
        made = json.loads(marker.read_text())
        if made["source"] == str(source) and made["limit"] == limit:
            return tree, made["files"], made["bytes"]
    shutil.rmtree(base, ignore_errors=True)
    files, size = copy_real_tree(source, tree, limit)
    marker.write_text(json.dumps({"source": str(source), "limit": limit, "files": files, "bytes": size}))
    return tree, files, size


def count_files(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


WRAP = ("import resource,subprocess,sys,time;t=time.perf_counter();r=subprocess.run(sys.argv[1:],"
        "stdout=subprocess.DEVNULL,stderr=subprocess.PIPE);d=time.perf_counter()-t;"
        "print(d,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,r.returncode);"
        "sys.stderr.write(r.stderr.decode()[-2000:])")


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one command, measured by a fresh wrapper process."""
    p = subprocess.run([sys.executable, "-c", WRAP, *cmd], env=env, capture_output=True, text=True, cwd=cwd)
    secs, rss, code = p.stdout.split()
    if int(code) not in (0,):
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}): {p.stderr}")
    return float(secs), int(rss) * 1024


TRASH = "trash"


def discard(work: Path, path: Path) -> None:
    """Move a tree into work/trash instead of deleting it. On this machine's ext4, creating files
    soon after a large delete is several times slower (perf: inode allocation in
    `recently_deleted`, 37% of the cycles of a 30,000-file restore just after an `rm -rf` of the
    last one: 9.3 s against 3.3-4.7 s with nothing deleted before it), which would charge each
    tool's restore for the cleanup of the run before it. The trash is emptied at the end."""
    if not path.exists() and not path.is_symlink():
        return
    trash = work / TRASH
    trash.mkdir(exist_ok=True)
    path.rename(trash / f"{len(os.listdir(trash))}-{path.name}")


def empty_trash(work: Path) -> None:
    shutil.rmtree(work / TRASH, ignore_errors=True)


class Tool:
    name = ""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.repo = work / f"repo-{self.name}"
        self.s3: tuple[str, str] | None = None  # (endpoint, bucket) while on S3

    def reset(self) -> None:
        discard(self.work, self.repo)
        self.init()

    def init(self) -> None: ...
    def backup(self, src: Path) -> list[str]: ...
    def restore(self, dst: Path) -> list[str]: ...

    def drop(self) -> None:
        discard(self.work, self.repo)


class Casbackup(Tool):
    name = "casbackup"

    def __init__(self, work: Path, env: dict[str, str], chunk_avg: str, name: str = "casbackup",
                 encrypted: bool = True) -> None:
        self.name = name
        super().__init__(work, env)
        self.chunk_avg = chunk_avg
        self.encrypted = encrypted  # the default (password from CASBACKUP_PASSWORD); "casbackup-plain": not

    @property
    def base(self) -> list[str]:
        if self.s3 is None:
            where = ["-r", str(self.repo)]
        else:
            where = ["-r", f"s3://{self.s3[1]}/{self.name}", "-o", f"endpoint={self.s3[0]}", "-o", "allow_http=true"]
        return [sys.executable, "-m", "casbackup", "-q", *where]

    def init(self) -> None:
        avg = parse_size(self.chunk_avg)
        plain = [] if self.encrypted else ["--insecure-no-encryption"]
        subprocess.run(self.base + ["init", *plain, "--chunk-avg", self.chunk_avg, "--chunk-min", str(max(64, avg // 4)),
                                    "--chunk-max", str(avg * 4)], env=self.env, check=True, capture_output=True)

    def backup(self, src: Path) -> list[str]:
        return self.base + ["backup", str(src)]

    def restore(self, dst: Path) -> list[str]:
        return self.base + ["restore", "latest", "--target", str(dst)]


class Restic(Tool):
    name = "restic"

    @property
    def base(self) -> list[str]:
        where = str(self.repo) if self.s3 is None else f"s3:{self.s3[0]}/{self.s3[1]}/restic"
        return ["restic", "-q", "-r", where]

    def init(self) -> None:
        subprocess.run(self.base + ["init"], env=self.env, check=True, capture_output=True)

    def backup(self, src: Path) -> list[str]:
        return self.base + ["backup", str(src)]

    def restore(self, dst: Path) -> list[str]:
        return self.base + ["restore", "latest", "--target", str(dst)]


class Borg(Tool):
    name = "borg"

    def init(self) -> None:
        subprocess.run(["borg", "init", "-e", "repokey-blake2", str(self.repo)], env=self.env, check=True,
                       capture_output=True)
        self.n = 0

    def backup(self, src: Path) -> list[str]:
        self.n += 1
        return ["borg", "create", "-C", "zstd,3", f"{self.repo}::a{self.n}", str(src)]

    def restore(self, dst: Path) -> list[str]:
        dst.mkdir(parents=True, exist_ok=True)
        self.cwd = dst
        return ["borg", "extract", f"{self.repo}::a{self.n}"]


SHAPES = ("mixed", "small", "realtree", "s3")
Record = Callable[[str, float], None]


@dataclass
class Bench:
    """The data sets and the settings every shape's run needs."""

    work: Path
    env: dict[str, str]
    size: int
    mixed: Path
    mixed2: Path
    small: Path
    tree: Path | None = None
    tree_files: int = 0
    tree_bytes: int = 0

    def restore_timed(self, t: Tool, rec: Record, key: str) -> None:
        dst = self.work / "restore" / t.name
        discard(self.work, dst)
        cmd = t.restore(dst)
        secs, rss = timed(cmd, self.env, cwd=getattr(t, "cwd", None))
        rec(f"{key}_s", secs); rec(f"{key}_rss", rss)
        discard(self.work, dst)

    def linked_copy(self, data: Path) -> Path:
        """`data` hard-linked to one fixed path (no data copied): both backups of the mixed set
        back up the same path, so the second one finds the first as its parent."""
        src = self.work / "src" / "mixed"
        discard(self.work, src.parent)
        src.parent.mkdir()
        shutil.copytree(data, src, copy_function=os.link)
        return src


def run_mixed(b: Bench, t: Tool, rec: Record) -> None:
    t.reset()
    src = b.linked_copy(b.mixed)
    secs, rss = timed(t.backup(src), b.env)
    rec("first_backup_s", secs); rec("first_backup_rss", rss)
    first_size = dir_size(t.repo)
    rec("repo_size", first_size)
    rec("objects_per_gib", count_files(t.repo) / (b.size / (1 << 30)))
    src = b.linked_copy(b.mixed2)
    secs, rss = timed(t.backup(src), b.env)
    rec("second_backup_s", secs); rec("second_backup_rss", rss)
    rec("growth_after_1pct", dir_size(t.repo) - first_size)
    b.restore_timed(t, rec, "restore")
    discard(b.work, src.parent)
    t.drop()


def run_small(b: Bench, t: Tool, rec: Record) -> None:
    t.reset()
    secs, rss = timed(t.backup(b.small), b.env)
    rec("small_files_backup_s", secs); rec("small_files_rss", rss)
    t.drop()


def run_realtree(b: Bench, t: Tool, rec: Record) -> None:
    assert b.tree is not None
    t.reset()
    secs, rss = timed(t.backup(b.tree), b.env)
    rec("realtree_backup_s", secs); rec("realtree_backup_rss", rss)
    rec("realtree_objects", count_files(t.repo))
    b.restore_timed(t, rec, "realtree_restore")
    t.drop()


def run_s3(b: Bench, t: Tool, rec: Record) -> None:
    """Backup and restore of mixed on a fresh moto server (so no run pays for another's objects)."""
    if isinstance(t, Borg):
        return  # borg has no S3 backend
    proc, endpoint = start_moto()
    try:
        bucket = f"bench-{t.name}"
        make_bucket(endpoint, bucket)
        t.s3 = (endpoint, bucket)
        t.init()
        secs, rss = timed(t.backup(b.mixed), b.env)
        rec("s3_backup_s", secs); rec("s3_backup_rss", rss)
        b.restore_timed(t, rec, "s3_restore")
    finally:
        t.s3 = None
        proc.terminate()
        proc.wait(timeout=30)


RUNNERS: dict[str, Callable[[Bench, Tool, Record], None]] = {
    "mixed": run_mixed, "small": run_small, "realtree": run_realtree, "s3": run_s3}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--small-files", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--tools", default="casbackup,restic,borg",
                    help="comma-separated; casbackup@1M adds a casbackup run with that average chunk size")
    ap.add_argument("--chunk-avg", default="512K", help="casbackup's average chunk size (init --chunk-avg)")
    ap.add_argument("--shapes", default="mixed,small", help=f"comma-separated, of {','.join(SHAPES)}")
    ap.add_argument("--realtree-source", default="/usr/share")
    ap.add_argument("--realtree-files", type=int, default=30_000)
    ap.add_argument("--json", action="store_true", help="print medians and raw figures as JSON")
    ap.add_argument("--report", metavar="FILE", help="print the table from a --json output file and exit")
    args = ap.parse_args()
    args.shape_list = args.shapes.split(",")
    unknown = set(args.shape_list) - set(SHAPES)
    if unknown:
        ap.error(f"unknown shapes {', '.join(sorted(unknown))} (choose from {', '.join(SHAPES)})")
    return args


def prepare(args: argparse.Namespace, work: Path, env: dict[str, str]) -> Bench:
    size = parse_size(args.size)
    t0 = time.perf_counter()
    b = Bench(work, env, size, work / "data" / "mixed", work / "data2" / "mixed", work / "small" / "small")
    for d in (b.mixed, b.mixed2, b.small):
        discard(work, d)
    gen_mixed(b.mixed, size, args.seed)
    shutil.copytree(b.mixed, b.mixed2)
    changed = change_one_percent(b.mixed2, args.seed + 1)
    gen_small(b.small, args.small_files, args.seed + 2)
    print(f"# data: mixed {dir_size(b.mixed)/1e6:.0f} MB, changed {changed/1e6:.1f} MB, {args.small_files} small files "
          f"({time.perf_counter()-t0:.0f}s to generate) in {work}", file=sys.stderr)
    if "realtree" in args.shape_list:
        b.tree, b.tree_files, b.tree_bytes = real_tree(work, Path(args.realtree_source), args.realtree_files)
        print(f"# realtree: a copy of {args.realtree_source}, {b.tree_files} files, {b.tree_bytes / 1e6:.0f} MB, "
              f"at {b.tree}", file=sys.stderr)
    return b


def main() -> None:
    args = parse_args()
    if args.report:
        doc = json.loads(Path(args.report).read_text())
        print_table(doc["medians"], doc.get("tools", list(doc["medians"])), doc["size"], doc["small_files"],
                    doc.get("realtree"))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="casbench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), RESTIC_PASSWORD="bench", BORG_PASSPHRASE="bench", CASBACKUP_PASSWORD="bench",
               CASBACKUP_CACHE_DIR=str(work / "casbackup-cache"),
               BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
               BORG_BASE_DIR=str(work / "borg-home"), RESTIC_CACHE_DIR=str(work / "restic-cache"),
               AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_REGION="us-east-1",
               AWS_DEFAULT_REGION="us-east-1")
    names = args.tools.split(",")
    missing = [n for n in names if not n.startswith("casbackup") and shutil.which(n) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: apt-get install restic borgbackup")
    empty_trash(work)  # what an interrupted run left (deleted before the data is made, not between tools)
    b = prepare(args, work, env)
    tools: dict[str, Tool] = {}
    for n in names:
        if n.startswith("casbackup"):
            tools[n] = Casbackup(work, env, n.partition("@")[2] or args.chunk_avg, n.replace("@", "-"),
                                 encrypted=n != "casbackup-plain")
        else:
            tools[n] = {"restic": Restic, "borg": Borg}[n](work, env)
    results: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for rnd in range(args.rounds):
        for shape in args.shape_list:  # the tools alternate within each shape; the order rotates each round
            for n in names[rnd % len(names):] + names[:rnd % len(names)]:
                RUNNERS[shape](b, tools[n], lambda k, v, n=n: results[n].setdefault(k, []).append(v))  # type: ignore[misc]
                print(f"# round {rnd + 1}: {shape} {n} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
    empty_trash(work)
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    tree = {"source": args.realtree_source, "files": b.tree_files, "bytes": b.tree_bytes} if b.tree else None
    if args.json:
        print(json.dumps({"medians": med, "raw": results, "size": b.size, "small_files": args.small_files,
                          "tools": names, "rounds": args.rounds, "realtree": tree, "shapes": args.shape_list,
                          "load": os.getloadavg()}, indent=2))
        return
    print_table(med, names, b.size, args.small_files, tree)


# The issue-10 goals, as limits on casbackup/peer (the first peer named) or on casbackup's own
# figure: (key, "ratio" | "own", limit, the goal as the issue states it).
GOALS = [("first_backup_s", "ratio", 0.5, ">= 2x restic's throughput"),
         ("realtree_backup_s", "ratio", 1 / 1.5, ">= 1.5x"),
         ("restore_s", "ratio", 0.5, ">= 2x"),
         ("realtree_restore_s", "ratio", 0.5, ">= 2x"),
         ("growth_after_1pct", "ratio", 0.5, "<= 0.5x"),
         ("repo_size", "ratio", 1.05, "<= 1.05x"),
         ("objects_per_gib", "own", 100, "<= 100"),
         ("s3_backup_s", "ratio", 1.0, ">= 1x"),
         ("s3_restore_s", "ratio", 1 / 1.5, ">= 1.5x"),
         ("first_backup_rss", "own", 300e6, "< 300 MB")]
KEYS = ["first_backup_s", "second_backup_s", "restore_s", "small_files_backup_s", "realtree_backup_s",
        "realtree_restore_s", "s3_backup_s", "s3_restore_s", "repo_size", "growth_after_1pct", "objects_per_gib",
        "realtree_objects", "first_backup_rss", "restore_rss", "small_files_rss", "realtree_backup_rss",
        "s3_backup_rss", "s3_restore_rss"]


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    if key.endswith(("size", "rss", "pct")):
        return f"{v / 1e6:.1f} MB"
    return f"{v:.0f}" if key.endswith(("objects", "per_gib")) else f"{v:.2f} s"


def _goal(key: str, med: dict[str, dict[str, float]], ours: str, peer: str | None) -> str:
    for k, kind, limit, text in GOALS:
        if k != key:
            continue
        own = med[ours].get(k)
        other = med[peer].get(k) if peer else None
        value = own if kind == "own" else (own / other if own is not None and other else None)
        if value is None:
            return text
        met = value < limit if text.startswith("< ") else value <= limit
        return f"{text}: {'met' if met else 'missed'}"
    return ""


def print_table(med: dict[str, dict[str, float]], names: list[str], size: int, small_files: int,
                tree: dict[str, object] | None = None) -> None:
    peers = [n for n in names if not n.startswith("casbackup")]
    ours = [n for n in names if n.startswith("casbackup")]
    pairs = [(o, p) for o in ours for p in peers]
    print("| metric | " + " | ".join(names) + "".join(f" | {o}/{p}" for o, p in pairs) + " | goal |")
    print("|" + "---|" * (2 + len(names) + len(pairs)))
    for k in KEYS:
        if not any(k in med[n] for n in names):
            continue
        row = [_fmt(k, med[n].get(k)) for n in names]
        ratios = [f"{med[o][k] / med[p][k]:.2f}" if med[o].get(k) is not None and med[p].get(k) else "-"
                  for o, p in pairs]
        goal = _goal(k, med, ours[0], peers[0] if peers else None) if ours else ""
        print(f"| {k} | " + " | ".join(row) + "".join(f" | {r}" for r in ratios) + f" | {goal} |")
    mb = size / 1e6
    for n in names:
        m = med[n]
        parts = [f"{label} {mb / m[k]:.0f} MB/s" for label, k in (("first backup", "first_backup_s"),
                 ("restore", "restore_s"), ("S3 backup", "s3_backup_s"), ("S3 restore", "s3_restore_s")) if k in m]
        if "small_files_backup_s" in m:
            parts.append(f"small files {small_files / m['small_files_backup_s']:.0f} files/s")
        if tree and "realtree_backup_s" in m:
            parts.append(f"real tree {int(tree['files']) / m['realtree_backup_s']:.0f} files/s")  # type: ignore[call-overload]
        print(f"# {n}: " + ", ".join(parts))
    if tree:
        print(f"# realtree: a copy of {tree['source']}, {tree['files']} files, {int(tree['bytes']) / 1e6:.0f} MB")  # type: ignore[call-overload]
    if "casbackup" in med and "casbackup-plain" in med:  # issue 11's goal: encryption costs <= 10% of throughput
        enc, plain = med["casbackup"], med["casbackup-plain"]
        costs = [f"{k} {enc[k] / plain[k]:.3f}x" for k in KEYS if k.endswith("_s") and enc.get(k) and plain.get(k)]
        print("# encryption cost (casbackup / casbackup-plain time, same run; goal <= 1.10x): " + ", ".join(costs))
    print(f"# load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
