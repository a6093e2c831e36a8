"""Hostile snapshots crafted directly with the store: restore refuses them and writes nothing
outside the target. Missing or corrupt chunks stop the restore, naming the blob."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from casbackup.codec import BlobType, Ref, blob_id
from casbackup.errors import BlobCorrupt, BlobMissing, UsageError
from casbackup.files.snapshots import NAMESPACE, SnapshotInfo, new_id
from casbackup.packs import LOCATIONS_NAMESPACE, Location
from helpers_common import head_location, rewrite_stored_blob
from helpers_files import backup, make_repo, restore


def commit_tree(repo, entries: list[dict[str, Any]], refs: list[Ref] = ()) -> str:
    """Commit a snapshot whose root TREE has exactly these (unchecked) entries."""
    with repo.transaction("crafted") as txn:
        root = txn.put_structured(BlobType.TREE, list(refs), {"v": 1, "entries": entries}).ref
        info = SnapshotInfo("", 1.0, "evil", "evil", ["/x"], [], root.id)
        value = info.value()
        txn.put(NAMESPACE, new_id(value), value, refs=[root])
    return new_id(value)


def subtree(repo, entries: list[dict[str, Any]], refs: list[Ref] = ()) -> Ref:
    with repo.transaction("subtree") as txn:
        return txn.put_structured(BlobType.TREE, list(refs), {"v": 1, "entries": entries}).ref


def f(name: bytes, data: bytes = b"pwned") -> dict[str, Any]:
    return {"name": name, "type": "file", "mode": 0o644, "mtime_ns": 0, "uid": 0, "gid": 0, "size": len(data),
            "data": data}


def d(name: bytes, tree: Ref) -> dict[str, Any]:
    return {"name": name, "type": "dir", "mode": 0o755, "mtime_ns": 0, "uid": 0, "gid": 0, "tree": bytes.fromhex(tree.id)}


def link(name: bytes, target: bytes) -> dict[str, Any]:
    return {"name": name, "type": "symlink", "mode": 0o777, "mtime_ns": 0, "uid": 0, "gid": 0, "target": target}


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    return tmp_path / "sandbox" / "target", outside


def everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", [b"..", b".", b"/etc/evil", b"../../outside/evil", b"a/b", b"nul\x00byte", b""])
def test_bad_names_refused(arena, tmp_path: Path, name: bytes) -> None:
    target, outside = arena
    repo = make_repo()
    sid = commit_tree(repo, [f(name)])
    before = everything(tmp_path)
    with pytest.raises(BlobCorrupt, match="entry name"):
        restore(repo, target, sid)
    assert everything(tmp_path) - before <= {"sandbox", "sandbox/target"}
    assert list(outside.iterdir()) == []


def test_bad_name_deep_in_a_subtree_refused(arena, tmp_path: Path) -> None:
    target, outside = arena
    repo = make_repo()
    inner = subtree(repo, [f(b"..")])
    sid = commit_tree(repo, [d(b"sub", inner)], [inner])
    with pytest.raises(BlobCorrupt, match=inner.id):
        restore(repo, target, sid)
    assert list(outside.iterdir()) == [] and not (target.parent / "pwned").exists()


def test_symlink_then_directory_through_it_refused(arena) -> None:
    target, outside = arena
    repo = make_repo()
    inner = subtree(repo, [f(b"x")])
    sid = commit_tree(repo, [link(b"a", str(outside).encode()), d(b"a", inner)], [inner])
    with pytest.raises(BlobCorrupt, match="duplicated"):
        restore(repo, target, sid)
    assert list(outside.iterdir()) == []


def test_existing_symlink_in_target_is_never_followed(arena) -> None:
    target, outside = arena
    repo = make_repo()
    first = commit_tree(repo, [link(b"a", str(outside).encode())])
    restore(repo, target, first)
    assert os.readlink(target / "a") == str(outside)
    inner = subtree(repo, [f(b"x")])
    second = commit_tree(repo, [d(b"a", inner)], [inner])
    with pytest.raises(UsageError, match="symlink is never followed"):
        restore(repo, target, second)
    assert list(outside.iterdir()) == []


def test_file_over_existing_symlink_replaces_the_link_not_its_target(arena) -> None:
    target, outside = arena
    victim = outside / "victim"
    victim.write_bytes(b"original")
    target.mkdir(parents=True)
    os.symlink(victim, target / "x")
    repo = make_repo()
    sid = commit_tree(repo, [f(b"x", b"restored")])
    restore(repo, target, sid)
    assert victim.read_bytes() == b"original"
    assert not (target / "x").is_symlink() and (target / "x").read_bytes() == b"restored"


def test_entry_naming_a_blob_outside_its_refs_is_refused(arena) -> None:
    target, _ = arena
    repo = make_repo()
    ghost = Ref(BlobType.TREE, blob_id(BlobType.TREE, b"ghost"))
    sid = commit_tree(repo, [d(b"sub", ghost)])  # ref not declared: GC could not see it
    with pytest.raises(BlobCorrupt, match="not among the tree's refs"):
        restore(repo, target, sid)


def _big_file_repo(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "big").write_bytes(os.urandom(2 * 1024 * 1024))
    repo = make_repo(tmp_path / "repo")
    backup(repo, src)
    with repo.reader() as snap:  # the file's chunks, as the index locates them (format v2: in a pack)
        chunks = [e.key for e in snap.list(LOCATIONS_NAMESPACE)
                  if e.value and Location.from_value(e.value, e.key).type == BlobType.CHUNK]
    assert chunks
    return repo, chunks


def test_missing_chunk_stops_restore_naming_it(tmp_path: Path) -> None:
    repo, chunks = _big_file_repo(tmp_path)
    repo.store.delete_pack(head_location(repo, chunks[0]).pack)  # the pack holding the chunks is lost
    with pytest.raises(BlobMissing, match="|".join(chunks)):
        restore(repo, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # no partial file, no temp file


def test_corrupt_chunk_stops_restore_naming_it(tmp_path: Path) -> None:
    repo, chunks = _big_file_repo(tmp_path)

    def flip(envelope: bytes) -> bytes:
        return envelope[:-100] + bytes([envelope[-100] ^ 0xFF]) + envelope[-99:]

    rewrite_stored_blob(repo, chunks[0], flip)
    with pytest.raises(BlobCorrupt, match=chunks[0]):
        restore(repo, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_chunk_length_must_match_the_tree(arena) -> None:
    target, _ = arena
    repo = make_repo()
    with repo.transaction("chunk") as txn:
        c = txn.put_blob(BlobType.CHUNK, b"0123456789").ref
    entry = {"name": b"f", "type": "file", "mode": 0o644, "mtime_ns": 0, "uid": 0, "gid": 0, "size": 5,
             "chunks": [[bytes.fromhex(c.id), 5]]}
    sid = commit_tree(repo, [entry], [c])
    with pytest.raises(BlobCorrupt, match=c.id):
        restore(repo, target, sid)


def test_absurdly_deep_tree_is_refused_cleanly(arena) -> None:
    target, _ = arena
    repo = make_repo()
    with repo.transaction("deep") as txn:
        ref = txn.put_structured(BlobType.TREE, [], {"v": 1, "entries": [f(b"bottom")]}).ref
        for _ in range(600):
            ref = txn.put_structured(BlobType.TREE, [ref], {"v": 1, "entries": [d(b"d", ref)]}).ref
        info = SnapshotInfo("", 1.0, "evil", "evil", ["/x"], [], ref.id)
        value = info.value()
        txn.put(NAMESPACE, new_id(value), value, refs=[ref])
    with pytest.raises(BlobCorrupt, match="deeper than"):
        restore(repo, target, new_id(value))
