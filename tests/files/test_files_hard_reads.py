"""Hardened read paths of the files layer: sizes checked on every read (cat too), errors that name
the file being read, --include of a missing path, and a diff of a hostile deep tree."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from casbackup.chunklist import Piece, write_file
from casbackup.codec import BlobType, Ref
from casbackup.errors import BlobCorrupt, NotFound
from casbackup.files.diff import diff_trees
from casbackup.files.reader import TreeReader
from casbackup.files.snapshots import NAMESPACE, SnapshotInfo, new_id, resolve
from casbackup.files.tree import MAX_DEPTH
from helpers_common import flip_stored, lose_stored, without_plaintext_warning
from helpers_files import backup, make_repo, restore


def commit(repo, root: Ref, path: str = "/x") -> str:
    with repo.transaction("crafted") as txn:
        info = SnapshotInfo("", 1.0, "evil", "evil", [path], [], root.id)
        value = info.value()
        txn.put(NAMESPACE, new_id(value), value, refs=[root])
    return new_id(value)


def fentry(name: bytes, size: int, **content: Any) -> dict[str, Any]:
    return {"name": name, "type": "file", "mode": 0o644, "mtime_ns": 0, "uid": 0, "gid": 0, "size": size, **content}


def one_line_error(r, code: int) -> str:
    assert r.code == code, (r.code, r.stderr)
    lines = without_plaintext_warning(r.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("casbackup: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.fixture
def short_file(tmp_path: Path):
    """A local repository with two crafted snapshots whose file x.bin claims 20 bytes but lists
    chunks of 10: once as an inline chunk list, once through a FILE blob."""
    repo = make_repo(tmp_path / "repo")
    with repo.transaction("crafted") as txn:
        c = txn.put_blob(BlobType.CHUNK, b"0123456789").ref
        inline = txn.put_structured(BlobType.TREE, [c], {"v": 1, "entries": [
            fentry(b"x.bin", 20, chunks=[[bytes.fromhex(c.id), 10]])]}).ref
        fref, _ = write_file(txn.put_structured, [Piece(c.id, 10)])
        via_file = txn.put_structured(BlobType.TREE, [fref], {"v": 1, "entries": [
            fentry(b"x.bin", 20, file=bytes.fromhex(fref.id))]}).ref
    return repo, commit(repo, inline), commit(repo, via_file), inline.id, fref.id


# ---- item 3: the sum of chunk lengths is checked on every read path -----------------------

@pytest.mark.slow
def test_cat_refuses_a_file_whose_chunks_disagree_with_its_size(short_file, tmp_path: Path, cli) -> None:
    repo, sid_inline, sid_file, tree_id, file_id = short_file
    for sid, blob in ((sid_inline, tree_id), (sid_file, file_id)):
        r = cli("-r", str(tmp_path / "repo"), "cat", sid, "/x.bin")
        line = one_line_error(r, 5)
        assert r.stdout == b""
        assert "/x.bin" in line and blob in line and "referenced by generation" in line


def test_library_reads_and_restore_share_the_size_check(short_file, tmp_path: Path) -> None:
    repo, sid_inline, sid_file, tree_id, file_id = short_file
    for sid, blob in ((sid_inline, tree_id), (sid_file, file_id)):
        with repo.reader("t") as snap:
            reader = TreeReader(snap)
            node = reader.lookup(resolve(snap, sid).tree, "/x.bin")
            with pytest.raises(BlobCorrupt, match=blob) as exc:
                b"".join(reader.content(node, "/x.bin"))
            assert exc.value.generation == snap.generation.id and "/x.bin" in str(exc.value)
            with pytest.raises(BlobCorrupt, match="add up|expected"):
                list(reader.chunks(node))
        with pytest.raises(BlobCorrupt, match=blob) as exc:
            restore(repo, tmp_path / f"out-{sid[:6]}", sid)
        assert str(exc.value).startswith("restoring /x.bin: ")
        assert not any(p.is_file() for p in (tmp_path / f"out-{sid[:6]}").rglob("*"))


# ---- item 8: a bad blob met while restoring or cat'ing names the file ----------------------

@pytest.fixture
def backed_up(tmp_path: Path, cli):
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.bin").write_bytes(os.urandom(600_000))  # over 2 x chunk-max: always >= 3 chunks (200 KB could be one)
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K").code == 0
    r = cli("-r", repo, "backup", str(src))
    assert r.code == 0, r.stderr
    return repo, src, r.out.strip()


def _chunk_files(repo: str, sid: str, path: str) -> list[Path]:
    from casbackup.backends import open_backend
    from casbackup.repository import Repository
    r = Repository.open(open_backend(repo))
    with r.reader("t") as snap:
        reader = TreeReader(snap)
        node = reader.lookup(resolve(snap, sid).tree, path)
        ids = [c.id for c in reader.chunks(node)]
    return ids


@pytest.mark.parametrize("damage,code,word", [("corrupt", 5, "is corrupt"), ("delete", 4, "is missing")])
@pytest.mark.slow
def test_restore_and_cat_name_the_file_with_a_bad_chunk(backed_up, tmp_path: Path, cli, damage, code, word) -> None:
    repo, src, sid = backed_up
    chunks = _chunk_files(repo, sid, f"{src}/x.bin")
    victim = chunks[1]
    if damage == "corrupt":
        flip_stored(Path(repo), victim)
        named = [victim]
    else:  # format 2: the chunk's whole pack is lost, and restore names the first chunk it needs from it
        lost = lose_stored(Path(repo), victim)
        named = [c for c in chunks if c in lost][:1]
    r = cli("-r", repo, "restore", sid, "--target", str(tmp_path / "out"))
    line = one_line_error(r, code)
    assert f"restoring {src}/x.bin: blob {named[0]} {word} (referenced by generation " in line, line
    r = cli("-r", repo, "cat", sid, f"{src}/x.bin")
    line = one_line_error(r, code)
    assert f"reading {src}/x.bin: blob {named[0]} {word} (referenced by generation " in line, line


# ---- item 4: --include of a path that is not in the snapshot ------------------------------

@pytest.mark.slow
def test_restore_include_of_a_missing_path_is_not_found(backed_up, tmp_path: Path, cli) -> None:
    repo, src, sid = backed_up
    out = tmp_path / "out"
    r = cli("-r", repo, "restore", sid, "--target", str(out), "--include", f"{src}/x.bin", "--include", "/no/such")
    line = one_line_error(r, 3)
    assert "/no/such" in line
    assert not out.exists() or list(out.rglob("*")) == []  # checked before anything is written
    r = cli("-r", repo, "restore", sid, "--target", str(out), "--include", f"{src}/x.bin/inside")
    one_line_error(r, 3)
    r = cli("-r", repo, "restore", sid, "--target", str(out), "--include", f"{src}/x.bin")
    assert r.code == 0, r.stderr
    assert (out / str(src).lstrip("/") / "x.bin").read_bytes() == (src / "x.bin").read_bytes()


def test_library_restore_include_missing_raises_not_found(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    repo = make_repo()
    backup(repo, src)
    with pytest.raises(NotFound, match="/nope"):
        restore(repo, tmp_path / "out", includes=[str(src / "a"), "/nope"])
    assert not (tmp_path / "out").exists()


# ---- item 14: a hostile deep tree gets a clean error from diff (and every walk) ------------

def _deep_snapshot(repo, levels: int) -> str:
    d = {"type": "dir", "mode": 0o755, "mtime_ns": 0, "uid": 0, "gid": 0}
    with repo.transaction("deep") as txn:
        ref = txn.put_structured(BlobType.TREE, [], {"v": 1, "entries": [fentry(b"bottom", 1, data=b"x")]}).ref
        for _ in range(levels):
            ref = txn.put_structured(BlobType.TREE, [ref], {"v": 1, "entries": [
                {"name": b"d", "tree": bytes.fromhex(ref.id), **d}]}).ref
    return commit(repo, ref)


@pytest.mark.slow
def test_diff_of_a_5000_deep_snapshot_is_one_line_error(tmp_path: Path, cli, monkeypatch) -> None:
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # building 5000 blobs; durability is not the point
    repo = make_repo(tmp_path / "repo")
    deep = _deep_snapshot(repo, 5000)
    with repo.transaction("empty") as txn:
        empty = txn.put_structured(BlobType.TREE, [], {"v": 1, "entries": []}).ref
    flat = commit(repo, empty, "/y")
    for a, b in ((flat, deep), (deep, flat)):
        r = cli("-r", str(tmp_path / "repo"), "diff", a, b)
        line = one_line_error(r, 5)
        assert f"deeper than {MAX_DEPTH} levels" in line
    r = cli("-r", str(tmp_path / "repo"), "ls", deep)
    assert "deeper than" in one_line_error(r, 5)


def test_diff_and_walk_are_iterative_within_the_limit() -> None:
    repo = make_repo()
    sid = _deep_snapshot(repo, MAX_DEPTH - 1)
    with repo.reader("t") as snap:
        tree = resolve(snap, sid).tree
        reader = TreeReader(snap)
        changes = list(diff_trees(reader, None, tree))
        assert len(changes) == MAX_DEPTH and changes[-1][1].endswith("/d/bottom")
        rows = list(reader.walk(reader.lookup(tree, "/"), "/"))
        assert len(rows) == MAX_DEPTH + 1
        deeper = _deep_snapshot(repo, MAX_DEPTH + 2)
    with repo.reader("t") as snap:
        reader = TreeReader(snap)
        tree = resolve(snap, deeper).tree
        with pytest.raises(BlobCorrupt, match="deeper than"):
            list(diff_trees(reader, None, tree))
        with pytest.raises(BlobCorrupt, match="deeper than"):
            list(reader.walk(reader.lookup(tree, "/"), "/"))
