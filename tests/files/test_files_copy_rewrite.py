"""`copy` between two repositories and `rewrite --exclude`, through the real CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from casbackup.codec import BlobType
from casbackup.errors import CasbackupError

from casbackup.files.copy import copy_snapshots
from casbackup.files.rewrite import rewrite_snapshots
from casbackup.files.snapshots import SnapshotFilter, list_snapshots
from casbackup.packs import LOCATIONS_NAMESPACE, Location
from helpers_common import local_store, stored_anywhere
from helpers_files import backup, make_repo, restore, restored, snapshot_of


def j(r):
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


def blob_stored(repo: Path, data: bytes) -> bool:
    """Is the chunk stored anywhere: listed in the TOC of any pack on disk (format 2)."""
    return stored_anywhere(repo, local_store(repo).blob_id(BlobType.CHUNK, data))


def make_tree(src: Path) -> None:
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(400_000))
    (src / "small.txt").write_text("hello\n")
    (src / "sub" / "notes.txt").write_text("notes\n")
    os.symlink("small.txt", src / "link")


@pytest.mark.slow
def test_copy_dedups_skips_and_restores(tmp_path: Path, cli) -> None:
    src, r1, r2 = tmp_path / "src", tmp_path / "r1", tmp_path / "r2"
    make_tree(src)
    assert cli("-r", str(r1), "init").code == 0 and cli("-r", str(r2), "init", "--copy-id-key-from", str(r1)).code == 0
    first = j(cli("-r", str(r1), "backup", str(src), "--json"))["id"]

    r = cli("-r", str(r2), "copy", "--from-repo", str(r1))
    assert r.code == 0, r.stderr
    assert f"snapshot {first[:8]} copied" in r.out and "copied 1 snapshot(s), skipped 0" in r.out
    assert [s["id"] for s in j(cli("-r", str(r2), "snapshots", "--json"))] == [first]  # same ID

    doc = j(cli("-r", str(r2), "copy", "--from-repo", str(r1), "--json"))
    assert doc["copied"] == 0 and doc["skipped"] == 1 and doc["blobs_uploaded"] == 0 and doc["generation"] is None
    assert doc["snapshots"][0]["reason"] == "already in the destination"

    # a second snapshot sharing the big file: only the new file and the changed trees are sent
    (src / "new.txt").write_bytes(os.urandom(50_000))
    second = j(cli("-r", str(r1), "backup", str(src), "--json"))["id"]
    doc = j(cli("-r", str(r2), "copy", "--from-repo", str(r1), "--json"))
    assert doc["copied"] == 1 and doc["skipped"] == 1 and doc["blobs_reused"] > 0
    assert 50_000 <= doc["bytes_uploaded"] < 400_000
    assert [s["id"] for s in j(cli("-r", str(r2), "snapshots", "--json"))] == [first, second]

    r = cli("-r", str(r2), "check", "--read-data")
    assert r.code == 0, r.stderr + r.out
    target = tmp_path / "out"
    assert cli("-r", str(r2), "restore", second, "--target", str(target)).code == 0
    assert snapshot_of(restored(target, src)) == snapshot_of(src)


@pytest.mark.slow
def test_copy_selection_and_errors(tmp_path: Path, cli) -> None:
    src, r1, r2 = tmp_path / "src", tmp_path / "r1", tmp_path / "r2"
    make_tree(src)
    assert cli("-r", str(r1), "init").code == 0 and cli("-r", str(r2), "init", "--copy-id-key-from", str(r1)).code == 0
    a = j(cli("-r", str(r1), "backup", str(src), "--host", "alpha", "--json"))["id"]
    b = j(cli("-r", str(r1), "backup", str(src), "--host", "beta", "--json"))["id"]
    doc = j(cli("-r", str(r2), "copy", "--from-repo", str(r1), "--host", "beta", "--json"))
    assert [s["id"] for s in doc["snapshots"]] == [b] and doc["copied"] == 1
    doc = j(cli("-r", str(r2), "copy", "--from-repo", str(r1), a[:10], "--json"))
    assert [s["id"] for s in doc["snapshots"]] == [a] and doc["copied"] == 1
    assert doc["blobs_uploaded"] <= 1  # same tree: at most the root differs (it does not)

    for args, code in ((("copy",), 2), (("copy", "--from-repo", str(tmp_path / "nope")), None),
                       (("copy", "--from-repo", str(r1), "--from-option", "novalue"), 2),
                       (("copy", "--from-repo", str(r1), "ffff0000"), None)):
        r = cli("-r", str(r2), *args)
        assert r.code != 0 and (code is None or r.code == code), (args, r.code, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") <= 3, r.stderr


@pytest.mark.slow
def test_rewrite_removes_secret_and_gc_frees_it(tmp_path: Path, cli) -> None:
    src, repo = tmp_path / "src", tmp_path / "repo"
    make_tree(src)
    secret = os.urandom(120_000)
    (src / "sub" / "id_rsa").write_bytes(secret)
    assert cli("-r", str(repo), "init").code == 0
    old = j(cli("-r", str(repo), "backup", str(src), "--json"))["id"]
    assert blob_stored(repo, secret)

    r = cli("-r", str(repo), "rewrite", old, "--exclude", "id_rsa", "--dry-run")
    assert r.code == 0 and f"would remove {src}/sub/id_rsa" in r.out
    assert len(j(cli("-r", str(repo), "snapshots", "--json"))) == 1

    # without --forget: the original stays, the new one is tagged 'rewrite' and records the original
    doc = j(cli("-r", str(repo), "rewrite", old, "--exclude", "id_rsa", "--json"))
    assert doc[0]["removed"] == [f"{src}/sub/id_rsa"] and doc[0]["original"] == old
    new = doc[0]["new"]
    snaps = {s["id"]: s for s in j(cli("-r", str(repo), "snapshots", "--json"))}
    assert set(snaps) == {old, new} and "rewrite" in snaps[new]["tags"] and snaps[new]["original"] == old
    target = tmp_path / "out"
    assert cli("-r", str(repo), "restore", new, "--target", str(target)).code == 0
    got = restored(target, src)
    assert not (got / "sub" / "id_rsa").exists() and (got / "big.bin").read_bytes() == (src / "big.bin").read_bytes()

    # a rewrite that excludes nothing creates nothing, and says so
    r = cli("-r", str(repo), "rewrite", new, "--exclude", "id_rsa")
    assert r.code == 0 and "nothing excluded" in r.out and "no snapshot rewritten" in r.stderr
    assert len(j(cli("-r", str(repo), "snapshots", "--json"))) == 2

    # --forget replaces the old snapshot in the same commit; gc then frees the secret's chunk
    r = cli("-r", str(repo), "rewrite", old, "--exclude", "/**/sub/id_rsa", "--forget")
    assert r.code == 0 and "original forgotten" in r.out, r.stderr
    ids = [s["id"] for s in j(cli("-r", str(repo), "snapshots", "--json"))]
    assert old not in ids and len(ids) == 2
    for _ in range(2):  # condemn, then sweep
        assert cli("-r", str(repo), "gc", "--grace", "0s", "--force", "--keep-last", "1").code == 0
    assert not blob_stored(repo, secret)
    r = cli("-r", str(repo), "check", "--read-data")
    assert r.code == 0, r.stderr + r.out


@pytest.mark.slow
def test_rewrite_bad_input(tmp_path: Path, cli) -> None:
    src, repo = tmp_path / "src", tmp_path / "repo"
    make_tree(src)
    assert cli("-r", str(repo), "init").code == 0
    assert cli("-r", str(repo), "backup", str(src)).code == 0
    (tmp_path / "pats").write_text("# comment\nnotes.txt\n")
    doc = j(cli("-r", str(repo), "rewrite", "latest", "--exclude-file", str(tmp_path / "pats"), "--json"))
    assert doc[0]["removed"] == [f"{src}/sub/notes.txt"]
    for args in (("rewrite", "latest"), ("rewrite", "latest", "--exclude", "[z"), ("rewrite",),
                 ("rewrite", "nothex", "--exclude", "x"), ("rewrite", "latest", "--exclude-file", "/no/such")):
        r = cli("-r", str(repo), *args)
        assert r.code == 2, (args, r.code, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr


def test_copy_and_rewrite_library(tmp_path: Path) -> None:
    """The fast path of both, without subprocesses: copy, copy again, rewrite, restore."""
    src = tmp_path / "src"
    make_tree(src)
    (src / "sub" / "secret").write_bytes(os.urandom(30_000))
    r1, r2 = make_repo(), make_repo()
    backup(r1, src)
    (src / "later.txt").write_text("later\n")
    backup(r1, src)
    with r1.reader() as snap:
        ids = [s.id for s in list_snapshots(snap)]
    res = copy_snapshots(r1, r2, [], SnapshotFilter())
    assert len(ids) == 2 and res.copied == 2 and res.blobs_uploaded > 0 and res.generation is not None
    again = copy_snapshots(r1, r2, [], None)
    assert again.copied == 0 and again.skipped == len(ids) and again.blobs_uploaded == 0
    with r2.reader() as snap:
        assert [s.id for s in list_snapshots(snap)] == ids
    done = rewrite_snapshots(r2, ["latest"], None, ["secret"], [], forget=True)
    assert done[0].new is not None and done[0].removed == [f"{src.absolute()}/sub/secret"]
    with r2.reader() as snap:
        left = [s.id for s in list_snapshots(snap)]
    assert ids[-1] not in left and done[0].new.id in left
    restore(r2, tmp_path / "out", done[0].new.id)
    got = restored(tmp_path / "out", src)
    assert not (got / "sub" / "secret").exists() and (got / "small.txt").read_text() == "hello\n"
    assert rewrite_snapshots(r2, ["latest"], None, ["secret"], [])[0].new is None
    empty = rewrite_snapshots(r2, ["latest"], None, ["/*"], [])[0]
    assert empty.new is None and "would be empty" in empty.note
    # no IDs: every snapshot the filter selects (as in restic); only those that change get new ones
    done = rewrite_snapshots(r2, [], SnapshotFilter(), ["later.txt"], [], dry_run=True)
    assert len(done) == 2 and [d.new is not None for d in done].count(True) == 1


def test_copy_of_damaged_source_commits_nothing(tmp_path: Path) -> None:
    """A CHUNK missing in the source fails the copy with an error naming it; the destination gets
    no snapshot (one transaction per run), and a later copy from a good source still works."""
    src = tmp_path / "src"
    make_tree(src)
    r1, good, r2 = make_repo(tmp_path / "r1"), make_repo(), make_repo()
    backup(r1, src)
    backup(good, src)
    with r1.reader() as snap:  # format v2: the chunks are in a data pack; that pack is lost
        chunks = [e.key for e in snap.list(LOCATIONS_NAMESPACE) if Location.from_value(e.value, e.key).type == BlobType.CHUNK]
    assert chunks
    r1.store.delete_pack(r1.locate(r1.read_root()[0].generation, chunks[0]).pack)
    with pytest.raises(CasbackupError) as exc:
        copy_snapshots(r1, r2, [], None)
    assert any(c in str(exc.value) for c in chunks)
    with r2.reader() as snap:
        assert list_snapshots(snap) == []
    assert copy_snapshots(good, r2, [], None).copied == 1


def test_rewrite_summary_counts_what_the_new_snapshot_holds(tmp_path: Path) -> None:
    """After a rewrite, the snapshot's size and file counts are those of its new tree (restore's
    progress totals and `snapshots` read them), not the original's."""
    src = tmp_path / "src"
    make_tree(src)
    (src / "drop" / "deep").mkdir(parents=True)
    (src / "drop" / "a.bin").write_bytes(os.urandom(50_000))
    (src / "drop" / "deep" / "b.bin").write_bytes(os.urandom(7_000))
    os.symlink("a.bin", src / "drop" / "ln")
    repo = make_repo()
    backup(repo, src)
    with repo.reader() as snap:
        old = list_snapshots(snap)[0]
    done = rewrite_snapshots(repo, [old.id], None, ["drop", "big.bin"], [])[0]
    assert done.new is not None
    new = done.new.summary
    assert new["total_bytes"] == old.summary["total_bytes"] - 400_000 - 57_000
    assert new["total_files"] == old.summary["total_files"] - 3
    assert new["dirs"] == old.summary["dirs"] - 2 and new["symlinks"] == old.summary["symlinks"] - 1
    assert new["rewrite"] == {"removed_dirs": 2, "removed_symlinks": 1, "removed_total_bytes": 457_000,
                              "removed_total_files": 3}
    assert new["files_new"] == old.summary["files_new"]  # what the backup did is history, kept
    restore(repo, tmp_path / "out", done.new.id)
    got = restored(tmp_path / "out", src)
    held = [p for p in got.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(held) == new["total_files"] and sum(p.stat().st_size for p in held) == new["total_bytes"]
    with repo.reader() as snap:
        stored = {s.id: s for s in list_snapshots(snap)}
    assert stored[done.new.id].size == new["total_bytes"]
    again = rewrite_snapshots(repo, [done.new.id], None, ["small.txt"], [])[0]
    assert again.new is not None and again.new.summary["total_bytes"] == new["total_bytes"] - 6
    assert again.new.summary["rewrite"]["removed_total_files"] == 4  # a rewrite of a rewrite sums both
