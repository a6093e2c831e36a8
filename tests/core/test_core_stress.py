"""Multi-process stress on the local backend (S1-S7 under real concurrency and SIGKILL).

Writer processes commit continuously. Every commit of writer w adds a group of PARTS entries
plus a manifest, bumps w's counter, and deletes the group it wrote 3 commits ago, so every
generation must hold exactly w's last 3 groups, each complete: a reader that sees half a
commit, or a part whose chunk was collected, fails. Half the chunks come from a small pool,
so writers keep deduplicating against orphaned, condemned and swept blobs.

Reader processes pin the head and read whole generations (every entry and every chunk),
checking that invariant. A GC process collects in a loop with grace 0 (forced). The test
SIGKILLs random processes and restarts them. At the end `casbackup check --read-data`
must pass and every reader must have seen only complete, consistent generations.

Short under CI=true; --soak runs it for minutes.
"""
from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import random
import signal
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import pytest

from casbackup.backends import LocalBackend
from casbackup.codec import BlobType, Ref
from casbackup.errors import BlobMissing, CommitConflict, GcBusy, LeaseExpired
from casbackup.repository import Repository, Reader

from helpers_core import IN_CI

pytestmark = pytest.mark.slow  # multi-process stress with SIGKILL

CTX = mp.get_context("fork")
PARTS = 4
KEEP_GROUPS = 3
POOL = [f"pool chunk {j} ".encode() * 3000 for j in range(8)]


def _log(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line.replace("\n", " | ") + "\n").encode())
    finally:
        os.close(fd)


def writer(repo_path: str, name: str, logs: str, stop: str) -> None:
    rng = random.Random(os.getpid())
    repo = Repository.open(LocalBackend(repo_path), write=True)
    log = Path(logs) / f"writer-{name}.log"
    while not os.path.exists(stop):
        try:
            with repo.transaction(f"writer {name}", ttl=10.0) as txn:
                e = txn.base.entry("c", name)
                n = (int(txn.base.value(e)) if e else 0) + 1
                parts = []
                for i in range(PARTS):
                    data = rng.choice(POOL) if rng.random() < 0.5 else os.urandom(2000) * 4
                    ref = txn.put_blob(BlobType.CHUNK, data).ref
                    key = f"{name}/{n:08d}/part{i}"
                    txn.put("g", key, ref.id.encode(), refs=[ref])
                    parts.append(key)
                txn.put("g", f"{name}/{n:08d}/manifest", json.dumps(parts).encode())
                old = n - KEEP_GROUPS
                if old >= 1:
                    for i in range(PARTS):
                        txn.delete("g", f"{name}/{old:08d}/part{i}")
                    txn.delete("g", f"{name}/{old:08d}/manifest")
                txn.put("c", name, str(n).encode())
            _log(log, f"OK {n}")
        except (CommitConflict, LeaseExpired) as exc:
            _log(log, f"RETRY {type(exc).__name__}: {exc}")
        except Exception:  # noqa: BLE001 - anything else is a failure the test reports
            _log(log, "ERR " + traceback.format_exc())
            time.sleep(0.2)


def verify_generation(snap: Reader) -> int:
    """Check a whole generation; returns its number of groups. Raises on any inconsistency."""
    counters: dict[str, int] = {}
    groups: dict[tuple[str, int], dict[str, bytes]] = {}
    for e in snap.list():
        if e.namespace == "c":
            counters[e.key] = int(snap.value(e))
            continue
        assert e.namespace == "g", e
        w, n, part = e.key.split("/")
        value = snap.value(e)
        if part != "manifest":
            (ref,) = e.refs
            assert ref == Ref(BlobType.CHUNK, value.decode())
            snap.read_blob(ref)  # present and verified against its ID, or it raises
        groups.setdefault((w, int(n)), {})[part] = value
    for w, c in counters.items():
        expected = set(range(max(1, c - KEEP_GROUPS + 1), c + 1))
        present = {n for (ww, n) in groups if ww == w}
        assert present == expected, f"writer {w} at {c}: groups {sorted(present)}, expected {sorted(expected)}"
    for (w, n), members in groups.items():
        assert w in counters, f"group {w}/{n} without its counter"
        assert "manifest" in members, f"group {w}/{n} has parts but no manifest (partial commit)"
        assert json.loads(members["manifest"]) == [f"{w}/{n:08d}/part{i}" for i in range(PARTS)]
        assert sorted(members) == sorted(["manifest"] + [f"part{i}" for i in range(PARTS)]), \
            f"group {w}/{n} is incomplete: {sorted(members)}"
    return len(groups)


def reader(repo_path: str, name: str, logs: str, stop: str) -> None:
    repo = Repository.open(LocalBackend(repo_path))
    log = Path(logs) / f"reader-{name}.log"
    while not os.path.exists(stop):
        try:
            with repo.reader(f"stress reader {name}", ttl=4.0) as snap:
                repo.store.clear_cache()  # re-read storage: a collected blob must show up
                groups = verify_generation(snap)
                time.sleep(random.random() * 0.3)  # hold the pin a while, then read it all again
                repo.store.clear_cache()
                assert verify_generation(snap) == groups
            _log(log, f"OK {snap.generation.seq} {groups}")
        except LeaseExpired as exc:
            _log(log, f"EXPIRED {exc}")
        except Exception:  # noqa: BLE001
            _log(log, "ERR " + traceback.format_exc())
            time.sleep(0.2)


def collector(repo_path: str, name: str, logs: str, stop: str) -> None:
    import casbackup.gc as gcmod
    from casbackup.pins import acquire_gc_lease

    # A killed GC's lease must lapse quickly for the test, so the next GC can take over.
    gcmod.acquire_gc_lease = functools.partial(acquire_gc_lease, ttl=3.0)  # type: ignore[assignment]
    repo = Repository.open(LocalBackend(repo_path), write=True)
    log = Path(logs) / f"gc-{name}.log"
    while not os.path.exists(stop):
        try:
            report = gcmod.Collector(repo, grace=0, keep_last=1, force=True).run()
            _log(log, f"OK deleted={report.deleted} rescued={report.rescued} repacked={report.repacked_packs} "
                      f"abandoned={report.finished_abandoned_sweep}")
        except GcBusy:
            time.sleep(0.3)
        except LeaseExpired as exc:
            _log(log, f"EXPIRED {exc}")
        except Exception:  # noqa: BLE001
            _log(log, "ERR " + traceback.format_exc())
            time.sleep(0.2)
        time.sleep(0.05)


ROLES: dict[str, Callable[..., None]] = {"writer": writer, "reader": reader, "gc": collector}


def test_stress_sigkill(tmp_path: Path, cli: Callable[..., Any], soak: bool) -> None:
    duration = 300.0 if soak else (20.0 if IN_CI else 30.0)
    repo_path = tmp_path / "repo"
    logs = tmp_path / "logs"
    logs.mkdir()
    stop = tmp_path / "STOP"
    assert cli("-r", str(repo_path), "init").code == 0

    actors = [("writer", "a"), ("writer", "b"), ("reader", "r1"), ("reader", "r2"), ("gc", "g")]
    procs: dict[tuple[str, str], Any] = {}

    def start(actor: tuple[str, str]) -> None:
        role, name = actor
        p = CTX.Process(target=ROLES[role], args=(str(repo_path), name, str(logs), str(stop)), daemon=True)
        p.start()
        procs[actor] = p

    for actor in actors:
        start(actor)
    rng = random.Random(1234)
    kills = 0
    deadline = time.monotonic() + duration

    def repacked() -> bool:
        gc_log = logs / "gc-g.log"
        return gc_log.exists() and any(
            line.startswith("OK") and int(line.split("repacked=")[1].split()[0]) > 0
            for line in gc_log.read_text().splitlines())

    # On a loaded machine gc runs less often: go on (up to a minute) until the kills met a repack.
    while time.monotonic() < deadline or (not repacked() and time.monotonic() < deadline + 60):
        time.sleep(rng.uniform(0.2, 1.0))
        victim = rng.choice(actors)
        os.kill(procs[victim].pid, signal.SIGKILL)
        procs[victim].join(10)
        kills += 1
        start(victim)
    stop.write_text("stop")
    for actor, p in procs.items():
        p.join(30)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            pytest.fail(f"{actor} did not stop")

    text = {f.name: f.read_text() for f in logs.iterdir()}
    errors = [line for t in text.values() for line in t.splitlines() if line.startswith("ERR")]
    assert not errors, "\n".join(errors[:5])
    ok_reads = sum(t.count("\nOK ") + t.startswith("OK ") for n, t in text.items() if n.startswith("reader"))
    commits = sum(t.count("\nOK ") + t.startswith("OK ") for n, t in text.items() if n.startswith("writer"))
    gc_runs = text.get("gc-g.log", "")
    assert commits >= 10, f"only {commits} commits"
    assert ok_reads >= 5, f"only {ok_reads} complete reads"
    assert "deleted=" in gc_runs and any(
        int(line.split("deleted=")[1].split()[0]) > 0 for line in gc_runs.splitlines() if line.startswith("OK")
    ), "gc never deleted anything: the test would not catch a gc that deletes too much"
    assert any(int(line.split("repacked=")[1].split()[0]) > 0 for line in gc_runs.splitlines()
               if line.startswith("OK")), "gc never repacked: the kills never met a repack (format 2)"

    r = cli("-r", str(repo_path), "check", "--read-data")
    assert r.code == 0, r.out + r.stderr
    with Repository.open(LocalBackend(repo_path)).reader() as snap:
        verify_generation(snap)
    r = cli("-r", str(repo_path), "gc", "--grace", "0s", "--force", "--keep-last", "1")
    assert r.code == 0, r.stderr
    r = cli("-r", str(repo_path), "check", "--read-data", "--json")
    assert r.code == 0, r.out + r.stderr
    print(f"stress: {kills} kills, {commits} commits, {ok_reads} verified reads; check --read-data ok")
