"""One process of the concurrent soak: a continuous backup, a verify loop, or a compactor with gc.

Run as: python helpers_aptos_soak_worker.py ROLE CONFIG WORKDIR SECONDS. Every storage call goes through
the adapter config exactly as the tool makes it. A result document is written to
WORKDIR/ROLE.json; the exit status is non-zero if anything went wrong.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_aptos_dataset import (  # noqa: E402
    parse_records,
    payload,
    write_epoch_ending_backup,
    write_transaction_backup,
)
from helpers_aptos import Adapter, tool_env  # noqa: E402

from casbackup.aptos.metadata import parse_file  # noqa: E402

GC_GRACE = "3s"
OVERTIME = 30.0  # a loaded machine may need longer to reach the minimum amount of work


def running(deadline: float, done: int, minimum: int) -> bool:
    now = time.monotonic()
    return now < deadline or (done < minimum and now < deadline + OVERTIME)


def log_committed(workdir: Path, role: str, text: str) -> None:
    with open(workdir / f"{role}.log", "a") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def committed(workdir: Path, role: str) -> int:
    try:
        return len((workdir / f"{role}.log").read_text().splitlines())
    except FileNotFoundError:
        return 0


def backup_txn(a: Adapter, workdir: Path, deadline: float, stats: dict) -> None:
    rng = random.Random(11)
    i = 0
    while running(deadline, i, 2):
        first, last = i * 100, i * 100 + 99
        ln = write_transaction_backup(a, first, last, 100, rng)
        a.save_metadata_lines(f"transaction_{first}-{last}.meta", [ln])
        log_committed(workdir, "txn", f"{first} {last}")
        i += 1
    stats["ranges"] = i


def backup_epoch(a: Adapter, workdir: Path, deadline: float, stats: dict) -> None:
    rng = random.Random(12)
    e = 0
    while running(deadline, e, 2):
        ln = write_epoch_ending_backup(a, e, e, rng)
        a.save_metadata_lines(f"epoch_ending_{e}-{e}.meta", [ln])
        log_committed(workdir, "epoch", str(e))
        e += 1
        time.sleep(0.5)
    stats["epochs"] = e


def _continuous(ranges: set[tuple[int, int]], what: str) -> int:
    expected = 0
    for a, b in sorted(ranges):
        if a != expected:
            raise AssertionError(f"{what} ranges not continuous at {expected}: {sorted(ranges)}")
        expected = b + 1
    return expected


def load_all(a: Adapter) -> dict[str, list]:
    """The tool's sync_and_load with concurrent downloads; every file must be complete."""
    handles = a.list_metadata_files()
    with ThreadPoolExecutor(3) as pool:
        datas = list(pool.map(a.open_for_read, handles))
    return {h: parse_file(h.split("/")[1], d) for h, d in zip(handles, datas)}


def verify_loop(a: Adapter, workdir: Path, deadline: float, stats: dict) -> None:
    stats.update(iterations=0, files_read=0, records_read=0)
    while running(deadline, stats["records_read"] and stats["iterations"], 2):
        want_txn, want_ep = committed(workdir, "txn"), committed(workdir, "epoch")
        view = load_all(a)
        metas = [m for ms in view.values() for m in ms]
        txn = {(m["first_version"], m["last_version"], m["manifest"]) for m in metas if m.kind == "TransactionBackup"}
        ep = {(m["first_epoch"], m["last_epoch"]) for m in metas if m.kind == "EpochEndingBackup"}
        upto = _continuous({(x, y) for x, y, _ in txn}, "transaction")
        epochs = _continuous(ep, "epoch")
        if upto < want_txn * 100 or epochs < want_ep:
            raise AssertionError(f"listing incomplete: {upto} versions / {epochs} epochs, "
                                 f"but {want_txn} ranges / {want_ep} epochs were committed before it")
        if txn:
            first, last, manifest = max(txn)
            doc = json.loads(a.open_for_read(manifest))
            for ch in doc["chunks"]:
                recs = parse_records(a.open_for_read(ch["transactions"]))
                if recs != [payload("txn", v) for v in range(ch["first_version"], ch["last_version"] + 1)]:
                    raise AssertionError(f"records of {ch['transactions']} differ")
                stats["records_read"] += len(recs)
        stats["iterations"] += 1
        stats["files_read"] += len(view)
        stats["max_version"] = upto - 1


def compact_loop(a: Adapter, workdir: Path, deadline: float, stats: dict, repo: str) -> None:
    stats.update(compactions=0, moved=0, gc_runs=0, gc_deleted=0)
    while running(deadline, stats["compactions"], 1):
        time.sleep(1.0)
        view = load_all(a)
        for kind, prefix, key in (("TransactionBackup", "transaction", ("first_version", "last_version")),
                                  ("EpochEndingBackup", "epoch_ending", ("first_epoch", "last_epoch"))):
            singles = sorted((ms[0][key[0]], ms[0][key[1]], h) for h, ms in view.items()
                             if h.startswith(f"metadata/{prefix}_") and "compacted" not in h and ms[0].kind == kind)
            if len(singles) < 2:
                continue
            group = singles[:4]
            lines = [a.open_for_read(h) for _, _, h in group]  # byte for byte, as saved
            a.save_metadata_lines(f"{prefix}_compacted_{group[0][0]}-{group[-1][1]}.meta", lines)
            for _, _, h in group:
                a.backup_metadata_file(h)
            stats["compactions"] += 1
            stats["moved"] += len(group)
        proc = subprocess.run(a.base_env.get("CASBACKUP_BIN", "casbackup").split()
                              + ["-r", repo, "gc", "--grace", GC_GRACE, "--force", "--keep-last", "1", "--json"],
                              capture_output=True, env=a.base_env, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"gc failed: {proc.stderr.decode()}")
        stats["gc_runs"] += 1
        stats["gc_deleted"] += json.loads(proc.stdout)["deleted"]


def main() -> int:
    role, config, workdir, seconds = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    a = Adapter(config, tool_env())
    deadline = time.monotonic() + seconds
    stats: dict = {"role": role}
    try:
        if role == "txn":
            backup_txn(a, workdir, deadline, stats)
        elif role == "epoch":
            backup_epoch(a, workdir, deadline, stats)
        elif role == "verify":
            verify_loop(a, workdir, deadline, stats)
        elif role == "compact":
            compact_loop(a, workdir, deadline, stats, a.env_vars["CASBACKUP_REPO"])
        stats["ok"] = True
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails
        stats["ok"] = False
        stats["error"] = f"{type(exc).__name__}: {exc}"
        stats["traceback"] = traceback.format_exc()
    (workdir / f"{role}.json").write_text(json.dumps(stats))
    return 0 if stats["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
