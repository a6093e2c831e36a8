#!/usr/bin/env python3
"""Backup/restore benchmark: casbackup vs restic vs borg, same machine, same run.

Installs nothing. Peers come from Debian:  apt-get install restic borgbackup

Data sets (seeded, generated under --workdir):
  mixed   --size bytes (default 1 GiB) in files of 1-32 MiB, half compressible text, half random
  small   --small-files files (default 50,000) of 0.5-8 KiB in directories of 100
  mixed'  the mixed set after overwriting 1% of its bytes in 64 KiB pieces at random offsets

Per round (tools alternate, order rotates each round), each tool gets a fresh repository and:
  first backup of mixed, second backup of mixed' (the 1% change), restore of mixed', and a
  backup of the small-files set. Reports medians over --rounds and casbackup/peer ratios for
  time, repository size, growth after the change, and peak RSS (from a per-command wrapper).

Usage: python tools/bench/backup.py [--size 1G] [--small-files 50000] [--rounds 3] [--workdir DIR]
       [--tools casbackup,restic,borg] [--chunk-avg 1M]
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


class Tool:
    name = ""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.repo = work / f"repo-{self.name}"

    def reset(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)
        self.init()

    def init(self) -> None: ...
    def backup(self, src: Path) -> list[str]: ...
    def restore(self, dst: Path) -> list[str]: ...

    def drop(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)


class Casbackup(Tool):
    name = "casbackup"

    def __init__(self, work: Path, env: dict[str, str], chunk_avg: str, name: str = "casbackup") -> None:
        self.name = name
        super().__init__(work, env)
        self.chunk_avg = chunk_avg
        self.base = [sys.executable, "-m", "casbackup", "-q", "-r", str(self.repo)]

    def init(self) -> None:
        avg = parse_size(self.chunk_avg)
        subprocess.run(self.base + ["init", "--chunk-avg", self.chunk_avg, "--chunk-min", str(max(64, avg // 4)),
                                    "--chunk-max", str(avg * 4)], env=self.env, check=True, capture_output=True)

    def backup(self, src: Path) -> list[str]:
        return self.base + ["backup", str(src)]

    def restore(self, dst: Path) -> list[str]:
        return self.base + ["restore", "latest", "--target", str(dst)]


class Restic(Tool):
    name = "restic"

    def init(self) -> None:
        subprocess.run(["restic", "-q", "-r", str(self.repo), "init"], env=self.env, check=True, capture_output=True)

    def backup(self, src: Path) -> list[str]:
        return ["restic", "-q", "-r", str(self.repo), "backup", str(src)]

    def restore(self, dst: Path) -> list[str]:
        return ["restic", "-q", "-r", str(self.repo), "restore", "latest", "--target", str(dst)]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G")
    ap.add_argument("--small-files", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--tools", default="casbackup,restic,borg",
                    help="comma-separated; casbackup@512K adds a casbackup run with that average chunk size")
    ap.add_argument("--chunk-avg", default="1M", help="casbackup's average chunk size (init --chunk-avg)")
    ap.add_argument("--json", action="store_true", help="print medians and raw figures as JSON")
    ap.add_argument("--report", metavar="FILE", help="print the table from a --json output file and exit")
    args = ap.parse_args()
    if args.report:
        doc = json.loads(Path(args.report).read_text())
        print_table(doc["medians"], doc.get("tools", list(doc["medians"])), doc["size"], doc["small_files"])
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="casbench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), RESTIC_PASSWORD="bench", BORG_PASSPHRASE="bench",
               BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
               BORG_BASE_DIR=str(work / "borg-home"), RESTIC_CACHE_DIR=str(work / "restic-cache"))
    names = args.tools.split(",")
    missing = [n for n in names if not n.startswith("casbackup") and shutil.which(n) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: apt-get install restic borgbackup")

    size = parse_size(args.size)
    t0 = time.perf_counter()
    mixed, mixed2, small = work / "data" / "mixed", work / "data2" / "mixed", work / "small" / "small"
    for d in (mixed, mixed2, small):
        shutil.rmtree(d, ignore_errors=True)
    gen_mixed(mixed, size, args.seed)
    shutil.copytree(mixed, mixed2)
    changed = change_one_percent(mixed2, args.seed + 1)
    gen_small(small, args.small_files, args.seed + 2)
    print(f"# data: mixed {dir_size(mixed)/1e6:.0f} MB, changed {changed/1e6:.1f} MB, {args.small_files} small files "
          f"({time.perf_counter()-t0:.0f}s to generate) in {work}", file=sys.stderr)

    tools: dict[str, Tool] = {}
    for n in names:
        if n.startswith("casbackup"):
            tools[n] = Casbackup(work, env, n.partition("@")[2] or args.chunk_avg, n.replace("@", "-"))
        else:
            tools[n] = {"restic": Restic, "borg": Borg}[n](work, env)
    results: dict[str, dict[str, list[float]]] = {n: {} for n in names}

    def rec(tool: str, key: str, value: float) -> None:
        results[tool].setdefault(key, []).append(value)

    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for n in order:
            t = tools[n]
            t.reset()
            # the second backup must see mixed' at the same path as mixed: swap directory contents by rename
            live = work / "live"
            shutil.rmtree(live, ignore_errors=True)
            live.mkdir()
            os.symlink(mixed, live / "cur")  # not followed by backups; we back up the real dir below
            src = work / "src" / "mixed"
            shutil.rmtree(src.parent, ignore_errors=True)
            src.parent.mkdir()
            shutil.copytree(mixed, src, copy_function=os.link)  # hard links: no data copy, same content
            secs, rss = timed(t.backup(src), env)
            rec(n, "first_backup_s", secs); rec(n, "first_backup_rss", rss)
            first_size = dir_size(t.repo)
            rec(n, "repo_size", first_size)
            shutil.rmtree(src)
            shutil.copytree(mixed2, src, copy_function=os.link)
            secs, rss = timed(t.backup(src), env)
            rec(n, "second_backup_s", secs); rec(n, "second_backup_rss", rss)
            rec(n, "growth_after_1pct", dir_size(t.repo) - first_size)
            dst = work / "restore" / n
            shutil.rmtree(dst, ignore_errors=True)
            cmd = t.restore(dst)
            secs, rss = timed(cmd, env, cwd=getattr(t, "cwd", None))
            rec(n, "restore_s", secs); rec(n, "restore_rss", rss)
            shutil.rmtree(dst, ignore_errors=True)
            shutil.rmtree(src.parent, ignore_errors=True)
            t.reset()
            secs, rss = timed(t.backup(small), env)
            rec(n, "small_files_backup_s", secs); rec(n, "small_files_rss", rss)
            t.drop()
        print(f"# round {rnd + 1}/{args.rounds} done", file=sys.stderr)

    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    if args.json:
        print(json.dumps({"medians": med, "raw": results, "size": size, "small_files": args.small_files,
                          "tools": names, "rounds": args.rounds}, indent=2))
        return
    print_table(med, names, size, args.small_files)


def print_table(med: dict[str, dict[str, float]], names: list[str], size: int, small_files: int) -> None:
    keys = ["first_backup_s", "second_backup_s", "restore_s", "small_files_backup_s", "repo_size",
            "growth_after_1pct", "first_backup_rss", "restore_rss", "small_files_rss"]
    peers = [n for n in names if not n.startswith("casbackup")]
    ours = [n for n in names if n.startswith("casbackup")]
    pairs = [(o, p) for o in ours for p in peers]
    print("| metric | " + " | ".join(names) + "".join(f" | {o}/{p}" for o, p in pairs) + " |")
    print("|" + "---|" * (1 + len(names) + len(pairs)))
    for k in keys:
        def fmt(v: float) -> str:
            return f"{v / 1e6:.1f} MB" if k.endswith(("size", "rss", "pct")) else f"{v:.2f} s"
        row = [fmt(med[n][k]) for n in names]
        ratios = [f"{med[o][k] / med[p][k]:.2f}" if med[p][k] else "-" for o, p in pairs]
        print(f"| {k} | " + " | ".join(row) + "".join(f" | {r}" for r in ratios) + " |")
    mb = size / 1e6
    for n in names:
        print(f"# {n}: first backup {mb / med[n]['first_backup_s']:.0f} MB/s, restore {mb / med[n]['restore_s']:.0f} MB/s, "
              f"small files {small_files / med[n]['small_files_backup_s']:.0f} files/s")


if __name__ == "__main__":
    main()
