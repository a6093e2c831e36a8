"""The two races of the seed audit reports, replayed against casbackup.

(a) partial-metadata-read-race: a reader listing while a writer publishes a multi-entry update
    must see all of it or none of it.
(b) compaction-toctou-race: a compactor replaces entries and GC (grace 0, forced) runs while a
    pinned reader (a long restore) is reading; the reader must finish with every entry.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from helpers_common import head_location
from casbackup.backends import LocalBackend
from casbackup.gc import Collector
from casbackup.repository import Repository

CTX = mp.get_context("fork")
N = 60
LINES = 200


def metadata_file(version: int, i: int) -> bytes:
    """Like the Aptos metadata files: many JSON lines; here big enough for its own blob."""
    return b"".join(b'{"version": %d, "file": %d, "range": [%d, %d]}\n' % (version, i, j * 1000, j * 1000 + 999)
                    for j in range(LINES))


def check_all_or_nothing(snap: Any) -> int:
    versions = set()
    keys = []
    for e in snap.list("metadata"):
        value = snap.value(e)
        lines = value.splitlines()
        assert len(lines) == LINES, f"{e.key}: {len(lines)} of {LINES} lines (partial file)"
        v = int(lines[0].split(b",")[0].split(b":")[1])
        assert value == metadata_file(v, int(e.key)), f"{e.key} differs from what was written"
        versions.add(v)
        keys.append(e.key)
    assert len(versions) <= 1, f"a mix of updates {sorted(versions)}: a partial commit was visible"
    if versions:
        assert sorted(keys) == sorted(f"{i:04d}" for i in range(N)), "entries missing"
    return versions.pop() if versions else 0


def publish(repo: Repository, version: int) -> None:
    with repo.transaction(f"update {version}") as txn:
        for i in range(N):
            txn.put("metadata", f"{i:04d}", metadata_file(version, i))


def test_seed_a_nothing_is_visible_before_the_root_swap(local_repo: Repository) -> None:
    publish(local_repo, 1)
    txn = local_repo.transaction("update 2")
    for i in range(N):
        txn.put("metadata", f"{i:04d}", metadata_file(2, i))
    steps = txn.commit_steps()
    assert next(steps) == "cas"  # every blob, page and the generation are stored, fully written
    stored = {i for i, _ in local_repo.store.list()}
    with local_repo.reader() as snap:
        assert check_all_or_nothing(snap) == 1  # ... yet a reader sees none of update 2
    try:
        next(steps)
    except StopIteration:
        pass
    assert {i for i, _ in local_repo.store.list()} == stored  # the swap wrote only the root
    with local_repo.reader() as snap:
        assert check_all_or_nothing(snap) == 2  # and after the swap, all of it


def _writer(path: str, stop: str) -> None:
    repo = Repository.open(LocalBackend(path), write=True)
    v = 2
    while not os.path.exists(stop):
        publish(repo, v)
        v += 1


@pytest.mark.slow
def test_seed_a_concurrent_reader_sees_all_or_nothing(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = Repository.init(LocalBackend(path, create=True))
    publish(repo, 1)
    stop = tmp_path / "stop"
    writer = CTX.Process(target=_writer, args=(str(path), str(stop)))
    writer.start()
    seen = set()
    try:
        # Read for a few seconds, and on until the writer has published at least twice while
        # we were reading (fsync-bound: slow on a loaded machine), within a generous limit.
        started = time.monotonic()
        while time.monotonic() < started + 3 or (len(seen) < 3 and time.monotonic() < started + 90):
            with Repository.open(LocalBackend(path)).reader("seed a") as snap:
                seen.add(check_all_or_nothing(snap))
        os.kill(writer.pid, signal.SIGKILL)  # and a writer killed mid-commit publishes nothing
        writer.join(10)
        with Repository.open(LocalBackend(path)).reader("after kill") as snap:
            seen.add(check_all_or_nothing(snap))
    finally:
        stop.write_text("")
        writer.join(10)
    assert len(seen) >= 3, f"the writer did not publish while we read ({seen})"


# ---- (b) compaction under a long restore ------------------------------------------------


def compact(repo: Repository) -> None:
    """Replace the N metadata entries by one compacted entry, like the Aptos compactor."""
    with repo.transaction("compact") as txn:
        combined = b"".join(txn.base.get("metadata", f"{i:04d}") for i in range(N))
        for i in range(N):
            txn.delete("metadata", f"{i:04d}")
        txn.put("compacted", "0000-0059", combined)


def test_seed_b_pinned_reader_survives_compaction_and_gc(local_repo: Repository) -> None:
    publish(local_repo, 1)
    with local_repo.reader("restore", ttl=120) as restore:
        local_repo.store.clear_cache()
        got = {}
        entries = list(restore.list("metadata"))
        for e in entries[: N // 2]:  # the restore has read half of the files ...
            got[e.key] = restore.value(e)
        compact(local_repo)  # ... when the compactor replaces them
        for _ in range(2):
            report = Collector(local_repo, grace=0, force=True, keep_last=1).run()
        assert report.retained_generations >= 2  # the pinned generation was kept
        local_repo.store.clear_cache()
        for e in entries[N // 2:]:  # ... and GC ran. The restore carries on:
            got[e.key] = restore.value(e)
        assert got == {f"{i:04d}": metadata_file(1, i) for i in range(N)}
    # Not vacuous: once the restore is done, the same GC does delete the replaced files (format
    # v2: the packs that held them).
    packs = {"pack:" + head_location(local_repo, e.value_ref.id).pack for e in entries if e.value_ref}
    assert packs
    report = Collector(local_repo, grace=0, force=True, keep_last=1).run()
    assert packs <= set(report.deleted_ids)
    with local_repo.reader() as snap:
        assert list(snap.list("metadata")) == []
        assert snap.get("compacted", "0000-0059") == b"".join(metadata_file(1, i) for i in range(N))


@pytest.mark.slow
def test_seed_b_with_the_cli_gc(tmp_path: Path, cli: Callable[..., Any]) -> None:
    """The same, with the collection done by another process through the CLI."""
    path = tmp_path / "repo"
    repo = Repository.init(LocalBackend(path, create=True))
    publish(repo, 1)
    with repo.reader("restore", ttl=120) as restore:
        first = restore.get("metadata", "0000")
        packs = {repo.locate(restore.generation.id, e.value_ref.id).pack for e in restore.list("metadata") if e.value_ref}
        compact(Repository.open(LocalBackend(path), write=True))
        r = cli("-r", str(path), "gc", "--grace", "0s", "--force", "--keep-last", "1", "--json")
        assert r.code == 0, r.stderr
        pins = cli("-r", str(path), "pins", "--json")
        assert any(p["purpose"] == "restore" and p["state"] == "live" for p in __import__("json").loads(pins.out))
        repo.store.clear_cache()
        assert first == metadata_file(1, 0)
        assert {e.key: restore.value(e) for e in restore.list("metadata")} == {
            f"{i:04d}": metadata_file(1, i) for i in range(N)}
    r = cli("-r", str(path), "gc", "--grace", "0s", "--force", "--keep-last", "1", "--json")
    assert packs and __import__("json").loads(r.out)["deleted"] >= len(packs)  # format 2: their packs
    assert not any((path / "packs" / p[:2] / p).exists() for p in packs)
    assert cli("-r", str(path), "check", "--read-data").code == 0
