"""Values of any size round-trip (a FILE of CHUNKs), bounded core structures (entry refs, GCSTATE
parts), through the library and a real CLI subprocess (issue item 2)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import blake3
import pytest

from casbackup.backends import LocalBackend
from casbackup.check import check
from casbackup.codec import MAX_STRUCTURED_PAYLOAD, BlobType, Ref, unpack_structured
from casbackup.errors import BlobMissing, UsageError
from casbackup.gc import Collector
from casbackup import gcstate
from casbackup.gcstate import load_gcstate, write_gcstate
from casbackup.reach import Reachability
from casbackup.repository import VALUE_PIECE, Repository
from casbackup.layout import pack_key

from helpers_common import cli_env, head_location, run_cli

MiB = 1024 * 1024


def _pattern(n: int, seed: int = 0) -> bytes:
    """n bytes that differ per piece (so chunks do not deduplicate) and compress poorly."""
    block = blake3.blake3(bytes([seed])).digest(length=MiB)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += bytes([i & 0xFF]) + block
        i += 1
    return bytes(out[:n])


@pytest.mark.slow
def test_put_over_64mib_round_trips_and_passes_check(mem_repo: Repository) -> None:
    value = _pattern(64 * MiB + 1)
    mem_repo.commit(puts=[("ns", "big", value)])
    with mem_repo.reader() as snap:
        e = snap.entry("ns", "big")
        assert e is not None and e.value_ref is not None and e.value_ref.type == BlobType.FILE
        assert snap.get("ns", "big") == value
        assert [len(p) for p in snap.iter_value(e)] == [VALUE_PIECE] * 16 + [1]
    report = check(mem_repo, read_data=True)
    assert report.ok, report.to_json()


def test_put_stream_and_open_value_stream(mem_repo: Repository) -> None:
    value = _pattern(9 * MiB + 5, seed=1)
    with mem_repo.transaction() as txn:
        assert txn.put_stream("ns", "s", io.BytesIO(value)) == len(value)
        assert txn.put_stream("ns", "small", io.BytesIO(b"tiny")) == 4
        assert txn.put_stream("ns", "mid", io.BytesIO(b"m" * (3 * MiB))) == 3 * MiB
        touched = set(txn.touched)
    with mem_repo.reader() as snap:
        e = snap.entry("ns", "s")
        assert e is not None and e.value_ref is not None
        with snap.open_value(e) as f:
            assert f.read(10) == value[:10]
            assert f.read() == value[10:]
        assert snap.get("ns", "small") == b"tiny"
        mid = snap.entry("ns", "mid")
        assert mid is not None and mid.value_ref is not None and mid.value_ref.type == BlobType.VALUE
        # every chunk of the value was touched (the gc rescue rule sees them) and is reachable
        chunks = [r for r in touched if r.type == BlobType.CHUNK]
        assert len(chunks) == 3 and e.value_ref in touched
    # same bytes through put() and put_stream() give the same entry
    with mem_repo.transaction() as txn:
        txn.put("ns", "s2", value)
    with mem_repo.reader() as snap:
        assert snap.entry("ns", "s2").value_ref == snap.entry("ns", "s").value_ref  # type: ignore[union-attr]


def test_large_value_survives_gc_and_a_missing_chunk_is_loud(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo", create=True)
    repo = Repository.init(backend)
    value = _pattern(8 * MiB + 3, seed=2)
    repo.commit(puts=[("ns", "v", value)])
    repo.commit(deletes=[("ns", "nothing")])
    Collector(repo, grace=0, force=True).run()
    Collector(repo, grace=0, force=True).run()
    with repo.reader() as snap:
        assert snap.get("ns", "v") == value
        e = snap.entry("ns", "v")
        assert e is not None and e.value_ref is not None
        refs, _ = repo.store.get_structured(e.value_ref, snap.generation.id)
    chunk = sorted(r for r in refs if r.type == BlobType.CHUNK)[1]
    os.unlink(backend.root / pack_key(head_location(repo, chunk.id).pack))  # the pack holding it is lost
    with repo.reader() as snap:
        with pytest.raises(BlobMissing, match="|".join(r.id for r in refs)):
            snap.get("ns", "v")


def test_entry_refs_are_capped(mem_repo: Repository) -> None:
    many = [Ref(BlobType.CHUNK, blake3.blake3(str(i).encode()).hexdigest()) for i in range(4097)]
    txn = mem_repo.transaction()
    with pytest.raises(UsageError, match="refs, over the limit"):
        txn.put("ns", "k", b"v", refs=many)
    txn.put("ns", "k", b"v", refs=many[:4096])
    txn.abort()


@pytest.mark.parametrize("ns,key", [("\udcff", "k"), ("ns", "k\udcfe"), ("n" * 1025, "k"), ("ns", "")])
def test_names_must_be_short_utf8(mem_repo: Repository, ns: str, key: str) -> None:
    txn = mem_repo.transaction()
    with pytest.raises(UsageError):
        txn.put(ns, key, b"v")
    txn.abort()


@pytest.mark.slow
def test_gcstate_of_200k_blobs_is_split_into_parts_and_round_trips(mem_repo: Repository) -> None:
    repo = mem_repo
    items = {blake3.blake3(i.to_bytes(4, "big")).hexdigest(): 1000.0 + i for i in range(200_000)}
    top = write_gcstate(repo.store, "condemned", items)
    assert top is not None
    assert load_gcstate(repo.store, top) == items
    top_refs, body = unpack_structured(repo.store.get(Ref(BlobType.GCSTATE, top)), top)
    assert set(body) == {"kind", "parts"} and len(body["parts"]) >= 2
    assert all(r.type == BlobType.GCSTATE for r in top_refs) and len(top_refs) == len(body["parts"])
    for ref in top_refs:
        payload = repo.store.get(ref)
        assert len(payload) <= MAX_STRUCTURED_PAYLOAD
        prefs, pbody = unpack_structured(payload, ref.id)
        assert prefs == [] and pbody["kind"] == "condemned"
    # naming a blob in gc state never makes it reachable: the walk sees only GCSTATE blobs
    reach = Reachability(repo)
    reach.walk([Ref(BlobType.GCSTATE, top)])
    assert reach.seen == {top} | {r.id for r in top_refs}


def test_commit_rescues_from_a_condemned_set_in_parts(mem_repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    monkeypatch.setattr(gcstate, "PART_ITEMS", 3)
    value = _pattern(5 * MiB, seed=3)
    with mem_repo.transaction() as txn:
        txn.put_stream("ns", "v", io.BytesIO(value))
        chunk_ids = {r.id for r in txn.touched if r.type == BlobType.CHUNK}
    packs = {"pack:" + head_location(mem_repo, c).pack for c in chunk_ids}  # format v2: gc condemns packs
    others = {blake3.blake3(bytes([i])).hexdigest(): 5.0 for i in range(7)}
    condemned = write_gcstate(mem_repo.store, "condemned", {**others, **{p: 5.0 for p in packs}})
    root, etag = mem_repo.read_root()
    mem_repo.backend.compare_and_swap("root", etag, replace(root, condemned=condemned).encode())
    with mem_repo.transaction() as txn:  # re-put: the chunks deduplicate and are touched again
        txn.put_stream("ns", "v2", io.BytesIO(value))
    root, _ = mem_repo.read_root()
    assert load_gcstate(mem_repo.store, root.condemned) == others


# ---- through the CLI -------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_meta_put_over_64mib_from_stdin_round_trips(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert run_cli("-r", repo, "init").code == 0
    value = _pattern(64 * MiB + 1, seed=4)
    put = run_cli("-r", repo, "meta", "put", "ns", "k", "-", input=value)
    assert put.code == 0, put.stderr
    got = run_cli("-r", repo, "meta", "get", "ns", "k")
    assert got.code == 0, got.stderr
    assert got.stdout == value
    chk = run_cli("-r", repo, "check", "--read-data")
    assert chk.code == 0, chk.out + chk.stderr


@pytest.mark.slow
def test_cli_meta_put_keeps_non_utf8_value_bytes(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert run_cli("-r", repo, "init").code == 0
    put = run_cli("-r", repo, "meta", "put", "ns", "k", os.fsdecode(b"v\xff"))
    assert put.code == 0, put.stderr
    assert run_cli("-r", repo, "meta", "get", "ns", "k").stdout == b"v\xff"


# Linux carries a process's RSS high-water mark across execve, so a CLI forked straight from
# this (large) pytest process would report pytest's peak. A small wrapper forks it instead and
# reports the CLI's own peak.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "casbackup", *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_measured(args: list[str], feed: int | None, env: dict[str, str], rss_file: Path) -> tuple[int, str, int, str]:
    """Run the CLI, streaming `feed` bytes into stdin or hashing stdout; returns
    (exit code, stderr, peak RSS in bytes, BLAKE3 of what went in or came out)."""
    proc = subprocess.Popen([sys.executable, "-c", _MEASURE, str(rss_file), *args], env=env,
                            stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    h = blake3.blake3()
    if feed is not None:
        assert proc.stdin is not None
        sent, i = 0, 0
        while sent < feed:
            piece = _pattern(min(8 * MiB, feed - sent), seed=i % 250)
            h.update(piece)
            proc.stdin.write(piece)
            sent += len(piece)
            i += 1
        proc.stdin.close()
        assert proc.stdout is not None
        proc.stdout.read()
    else:
        assert proc.stdout is not None
        while True:
            piece = proc.stdout.read(8 * MiB)
            if not piece:
                break
            h.update(piece)
    assert proc.stderr is not None
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.wait()
    return proc.returncode, err, int(rss_file.read_text()), h.hexdigest()


@pytest.mark.slow
def test_cli_meta_put_get_1gib_with_bounded_memory(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    env = cli_env()
    assert run_cli("-r", repo, "init", "--compression-level", "1").code == 0
    size = 1024 * MiB
    code, err, rss_put, sent = _run_measured(["-r", repo, "meta", "put", "big", "value", "-"], size, env,
                                            tmp_path / "rss-put")
    assert code == 0, err
    code, err, rss_get, got = _run_measured(["-r", repo, "meta", "get", "big", "value"], None, env,
                                          tmp_path / "rss-get")
    assert code == 0, err
    assert got == sent
    print(f"peak RSS: meta put {rss_put / MiB:.0f} MiB, meta get {rss_get / MiB:.0f} MiB")
    assert rss_put < 300 * MiB and rss_get < 300 * MiB, (rss_put, rss_get)
