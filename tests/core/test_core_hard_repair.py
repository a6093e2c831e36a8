"""A lost or corrupt root (init refuses, repair root reinstalls), check reading every record and
every stored blob, and check running beside gc."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from casbackup.backends import LocalBackend, MemoryBackend
from casbackup.check import check
from casbackup.codec import BlobType, Ref
from casbackup.errors import RepositoryExists, RepositoryNotFound, UsageError
from casbackup.gc import Collector
from casbackup.records import CONFIG_KEY, GC_LEASE_KEY, PIN_PREFIX, ROOT_KEY, Config
from casbackup.repair import repair_root
from casbackup.repository import Repository
from casbackup.layout import pack_key
from helpers_common import head_location, store_orphan


def _repo_with_history(path: Path) -> Repository:
    repo = Repository.init(LocalBackend(path, create=True))
    for i in range(3):
        repo.commit(puts=[("snapshots-like", f"k{i}", bytes([65 + i]) * 10000)])  # a VALUE blob each
    return repo


# ---- item 1: init refuses, repair root reinstalls -----------------------------------------------

def test_init_refuses_a_location_that_holds_blobs_when_root_is_lost(tmp_path: Path, cli) -> None:
    repo = _repo_with_history(tmp_path / "repo")
    before = sorted(p.name for p in (tmp_path / "repo" / "blobs").rglob("*") if p.is_file())
    repo.backend.delete(ROOT_KEY)
    with pytest.raises(RepositoryExists, match="repair root"):
        Repository.init(LocalBackend(tmp_path / "repo"))
    r = cli("-r", str(tmp_path / "repo"), "init")
    assert r.code == 9 and str(tmp_path / "repo") in r.stderr and "repair root" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "repo" / ROOT_KEY).exists()
    after = sorted(p.name for p in (tmp_path / "repo" / "blobs").rglob("*") if p.is_file())
    assert after == before


def test_init_still_completes_a_crashed_init_with_only_config(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo", create=True)
    backend.create(CONFIG_KEY, Config(repo_id="ab" * 16, created=1.0).encode())
    repo = Repository.init(backend)
    assert repo.config.repo_id == "ab" * 16
    assert check(repo).ok


@pytest.mark.slow
def test_a_missing_root_points_to_repair_root_never_to_init(tmp_path: Path, cli) -> None:
    repo = _repo_with_history(tmp_path / "repo")
    repo.backend.delete(ROOT_KEY)
    with pytest.raises(RepositoryNotFound) as exc:
        repo.read_root()
    assert "repair root" in str(exc.value) and "init" not in str(exc.value)
    assert str(tmp_path / "repo") in str(exc.value)
    for args in (("meta", "get", "snapshots-like", "k0"), ("check",), ("log",)):
        r = cli("-r", str(tmp_path / "repo"), *args)
        assert r.code == 9 and "repair root" in r.stderr and "init" not in r.stderr, r.stderr


def test_repository_messages_name_the_location(tmp_path: Path) -> None:
    with pytest.raises(RepositoryNotFound, match="memory://"):
        Repository.open(MemoryBackend())
    Repository.init(LocalBackend(tmp_path / "r", create=True))
    with pytest.raises(RepositoryExists, match=str(tmp_path / "r")):
        Repository.init(LocalBackend(tmp_path / "r"))
    empty = LocalBackend(tmp_path / "empty", create=True)
    with pytest.raises(RepositoryNotFound, match=str(tmp_path / "empty")):
        Repository.open(empty)
    assert MemoryBackend().location == "memory://"
    assert empty.location == str(tmp_path / "empty")


@pytest.mark.slow
def test_repair_root_dry_run_then_install_through_the_cli(tmp_path: Path, cli) -> None:
    path = tmp_path / "repo"
    repo = _repo_with_history(path)
    head, _ = repo.read_root()
    repo.backend.delete(ROOT_KEY)

    r = cli("-r", str(path), "repair", "root")
    assert r.code == 0, r.stderr
    assert "would install: generation 3" in r.out and head.generation in r.out and "dry run" in r.out
    assert not (path / ROOT_KEY).exists()

    r = cli("-r", str(path), "repair", "root", "--json")
    doc = json.loads(r.out)
    assert doc["dry_run"] and not doc["applied"] and doc["previous_root"] == "missing"
    g = doc["generation"]
    # entries: the 3 user entries and (format 2) the locations of their 3 VALUE blobs
    assert (g["seq"], g["id"], g["entries"], g["snapshots"]) == (3, head.generation, 6, 0)
    assert g["namespaces"]["_blobs"] == 3
    assert isinstance(g["time"], float)

    r = cli("-r", str(path), "repair", "root", "--yes", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.out)["applied"]
    root, _ = Repository.open(LocalBackend(path)).read_root()
    assert (root.generation, root.seq, root.retain_floor) == (head.generation, 3, 0)
    assert cli("-r", str(path), "check", "--read-data").code == 0
    assert cli("-r", str(path), "meta", "get", "snapshots-like", "k2").stdout == b"C" * 10000

    # A readable root is never replaced.
    r = cli("-r", str(path), "repair", "root", "--yes")
    assert r.code == 2 and "readable root" in r.stderr


def test_repair_root_replaces_a_corrupt_root_by_cas(tmp_path: Path, cli) -> None:
    path = tmp_path / "repo"
    repo = _repo_with_history(path)
    head, _ = repo.read_root()
    (path / ROOT_KEY).write_bytes(b"CASB\x01\x11\x00\x00garbage")
    assert cli("-r", str(path), "check").code == 13
    r = cli("-r", str(path), "repair", "root", "--yes")
    assert r.code == 0 and "root is corrupt" in r.out, r.out + r.stderr
    assert repo.read_root()[0].generation == head.generation


def test_repair_root_passes_over_an_incomplete_newest_generation(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = _repo_with_history(path)
    head, _ = repo.read_root()
    with repo.reader() as snap:
        value_blob = snap.entry("snapshots-like", "k2").value_ref  # type: ignore[union-attr]
    assert value_blob is not None
    repo.backend.delete(pack_key(head_location(repo, value_blob.id).pack))  # its pack is lost
    repo.backend.delete(ROOT_KEY)
    out = repair_root(repo, apply=True)
    assert out.generation is not None and out.generation["seq"] == 2
    assert out.passed_over[0].seq == 3 and value_blob.id in out.passed_over[0].reason
    assert out.retain_floor == 0
    assert check(repo, read_data=True).ok


def test_repair_root_refuses_a_readable_root(world) -> None:
    _clock, repo = world
    with pytest.raises(UsageError, match="readable root"):
        repair_root(repo, apply=True)


# ---- item 7: every stored object and record ---------------------------------------------------

def test_check_read_data_reports_damage_to_unreferenced_blobs(tmp_path: Path, cli) -> None:
    path = tmp_path / "repo"
    repo = _repo_with_history(path)
    orphan = store_orphan(repo, b"orphan data " * 100)  # a pack no generation locates
    f = path / pack_key(orphan[len("pack:"):])
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    assert check(repo).ok  # without --read-data unreferenced blobs are not read
    report = check(repo, read_data=True)
    assert not report.ok and not report.corrupt and [p.blob for p in report.corrupt_unreferenced] == [orphan]
    r = cli("-r", str(path), "check", "--read-data", "--json")
    assert r.code == 13
    assert [p["blob"] for p in json.loads(r.out)["corrupt_unreferenced"]] == [orphan]


def test_check_reports_corrupt_pin_and_lease_records(world, cli, tmp_path: Path) -> None:
    path = tmp_path / "repo"
    repo = _repo_with_history(path)
    repo.backend.compare_and_swap(f"{PIN_PREFIX}123-abc", None, b"CASB\x01\x12\x00\x00\xc1")
    repo.backend.compare_and_swap(GC_LEASE_KEY, None, b"not a record")
    report = check(repo)
    assert not report.ok
    assert sorted(p.blob for p in report.corrupt_records) == sorted([f"{PIN_PREFIX}123-abc", GC_LEASE_KEY])
    r = cli("-r", str(path), "check", "--json")
    assert r.code == 13 and "Traceback" not in r.stderr
    assert len(json.loads(r.out)["corrupt_records"]) == 2


# ---- item 9: check beside gc --------------------------------------------------------------------

class _GcDuringListing(MemoryBackend):
    """Runs `hook` once, the first time blobs/ is listed after `armed` is set."""

    def __init__(self, clock) -> None:  # type: ignore[no-untyped-def]
        super().__init__(clock=clock)
        self.hook = None
        self.armed = False

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        if self.armed and prefix == "blobs/" and self.hook is not None:
            self.armed = False
            self.hook()
        return super().list(prefix)


def test_check_is_not_fooled_by_gc_collecting_history_under_it() -> None:
    t = [1_000_000.0]
    backend = _GcDuringListing(lambda: t[0])
    repo = Repository.init(backend)
    for i in range(4):
        repo.commit(puts=[("ns", f"k{i}", b"x" * 9000)])
        t[0] += 10

    def forget_and_gc() -> None:
        for i in range(4):
            repo.commit(deletes=[("ns", f"k{i}")])
        t[0] += 10
        Collector(repo, grace=0, keep_last=1, force=True).run()
        t[0] += 10
        Collector(repo, grace=0, keep_last=1, force=True).run()

    backend.hook = forget_and_gc
    backend.armed = True
    report = check(repo, read_data=True)
    assert report.ok, report
    assert report.collected_during_check > 0
    assert check(repo, read_data=True).ok


def test_check_allows_a_live_pin_on_a_collected_generation(world) -> None:
    clock, repo = world
    repo.commit(puts=[("ns", "a", b"1" * 9000)])
    old, _ = repo.read_root()
    repo.commit(deletes=[("ns", "a")])
    clock.advance(10)
    Collector(repo, grace=0, keep_last=1, force=True).run()
    clock.advance(10)
    Collector(repo, grace=0, keep_last=1, force=True).run()
    assert not repo.store.exists(old.generation)
    from casbackup.pins import new_pin
    lease = new_pin(repo.backend, old.generation, old.seq, "late reader", renew=False, monotonic=clock)
    try:
        report = check(repo, read_data=True)
        assert report.ok, report
        assert report.pins_on_collected_generations == [lease.key]
    finally:
        lease.release()


def test_check_beside_concurrent_forget_and_gc_never_fails_falsely(tmp_path: Path) -> None:
    """Real threads on a real disk: commit+forget+gc (grace 0) in a loop while check runs."""
    path = tmp_path / "repo"
    repo = Repository.init(LocalBackend(path, create=True))
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        writer = Repository.open(LocalBackend(path), write=True)
        n = 0
        try:
            while not stop.is_set():
                writer.commit(puts=[("ns", f"k{n}", bytes([n % 256]) * 9000)])
                if n:
                    writer.commit(deletes=[("ns", f"k{n - 1}")])
                Collector(writer, grace=0, keep_last=1, force=True).run()
                n += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        checker = Repository.open(LocalBackend(path))
        for _ in range(15):
            report = check(checker, read_data=True)
            assert report.ok, report
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors


@pytest.mark.slow
def test_cli_check_beside_forget_and_gc(tmp_path: Path, cli) -> None:
    """The CLI form of the race: check --read-data in a subprocess while gc collects."""
    path = tmp_path / "repo"
    repo = Repository.init(LocalBackend(path, create=True))
    for i in range(20):
        repo.commit(puts=[("ns", f"k{i}", bytes([i]) * 9000)])
    import subprocess
    import sys
    from helpers_common import cli_env
    procs = [subprocess.Popen([sys.executable, "-m", "casbackup", "-r", str(path), "check", "--read-data"],
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    for i in range(20):
        repo.commit(deletes=[("ns", f"k{i}")])
        Collector(repo, grace=0, keep_last=1, force=True).run()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode() + err.decode()
    assert Ref(BlobType.GENERATION, repo.read_root()[0].generation)
