"""repair blobs end to end through the CLI, and check validating TREE/FILE/snapshot bodies."""
from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import pytest

from casbackup.backends import LocalBackend
from casbackup.check import check
from casbackup.codec import BlobType, Ref, blob_id, pack_structured
from casbackup.errors import BlobCorrupt
from casbackup.files.restore import RestoreOptions, run_restore
from casbackup.files.snapshots import NAMESPACE, SnapshotInfo, new_id
from casbackup.files.tree import Chunk, Node, file_body, tree_body
from casbackup.files.verify import check_validators
from casbackup.repository import Repository

from helpers_common import flip_stored, rewrite_stored_blob, store_orphan, stored_places, without_plaintext_warning
from helpers_files import make_repo


def _chunk_files(repo_dir: Path) -> list[str]:
    """Stored CHUNK blobs (type byte 1 in the envelope header), wherever they are (format 2: packs)."""
    out = []
    for blob, (path, offset, _length) in sorted(stored_places(repo_dir).items()):
        with open(path, "rb") as f:
            f.seek(offset + 5)
            if f.read(1)[0] == BlobType.CHUNK:
                out.append(blob)
    return out


def _located(repo: str, blob: str) -> bool:
    r = Repository.open(LocalBackend(repo))
    return r.locate(r.read_root()[0].generation, blob) is not None


@pytest.fixture
def tree_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(400_000))
    (src / "small.txt").write_text("hello\n")
    return src


@pytest.mark.slow
def test_repair_blobs_heals_a_corrupt_chunk_through_the_cli(tmp_path: Path, tree_src: Path, cli) -> None:
    """Item 8: corrupt a chunk, check fails, repair blobs --yes, back up again, check --read-data
    passes and the new snapshot restores byte-identical."""
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init", "--insecure-no-encryption", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K").code == 0
    r = cli("-r", repo, "backup", str(tree_src))
    assert r.code == 0, r.stderr
    first = r.out.strip()
    victim = _chunk_files(Path(repo))[0]
    flip_stored(Path(repo), victim)

    r = cli("-r", repo, "check", "--read-data")
    assert r.code == 13 and victim in r.out, r.out + r.stderr
    err = without_plaintext_warning(r.stderr)
    assert err.count("\n") == 1 and err.startswith("casbackup: error: ")

    # Without --yes: a dry run that changes nothing.
    r = cli("-r", repo, "repair", "blobs", "--json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.out)
    assert doc["dry_run"] and not doc["applied"]
    assert [b["blob"] for b in doc["removed"]] == [victim]
    assert [(d["namespace"], d["key"]) for d in doc["damaged_entries"]] == [(NAMESPACE, first)]
    assert _located(repo, victim)

    r = cli("-r", repo, "repair", "blobs", "--yes")
    assert r.code == 0, r.stderr
    assert not _located(repo, victim)  # format 2: the bad copy is forgotten (its pack holds others)
    assert f"damaged: snapshots {first}" in r.out

    snaps = json.loads(cli("-r", repo, "snapshots", "--json").out)
    assert [(s["id"], s["damaged"]) for s in snaps] == [(first, True)]
    assert "DAMAGED" in cli("-r", repo, "snapshots").out

    # Known damage: check passes (the damaged snapshot's blob is recorded as removed).
    r = cli("-r", repo, "check", "--json")
    assert r.code == 0, r.out + r.stderr
    assert json.loads(r.out)["known_damage_count"] == 1

    # The next backup must not take the damaged snapshot as its parent: big.bin is read and
    # its chunk uploaded again.
    r = cli("-r", repo, "backup", str(tree_src), "--json")
    assert r.code == 0, r.stderr
    second = json.loads(r.out)
    assert second["parent"] is None and second["files_unmodified"] == 0
    assert _located(repo, victim)  # stored anew

    r = cli("-r", repo, "check", "--read-data")
    assert r.code == 0, r.out + r.stderr
    r = cli("-r", repo, "restore", second["id"], "--target", str(tmp_path / "out"))
    assert r.code == 0, r.stderr
    restored = tmp_path / "out" / str(tree_src).lstrip("/")
    for name in ("big.bin", "small.txt"):
        assert filecmp.cmp(tree_src / name, restored / name, shallow=False)
    # gc is not stopped by the recorded damage.
    r = cli("-r", repo, "gc", "--grace", "0s", "--force")
    assert r.code == 0, r.stderr
    assert cli("-r", repo, "check", "--read-data").code == 0


def test_repair_blobs_marks_a_snapshot_whose_subtree_is_missing(tmp_path: Path, tree_src: Path) -> None:
    """A damaged TREE (structure, not a chunk) is recorded too, and gc walks past it. (Format v2:
    the TREE shares a metadata pack with the others, so the damage is a flipped byte in it.)"""
    repo = make_repo(tmp_path / "repo")
    (tree_src / "sub").mkdir()
    (tree_src / "sub" / "x").write_text("x" * 100)
    from helpers_files import backup
    info, _ = backup(repo, tree_src)
    validators, entry_validators = check_validators()
    from casbackup.files.reader import TreeReader
    with repo.reader() as snap:
        sub_tree = TreeReader(snap).lookup(info.tree, str(tree_src.absolute() / "sub")).tree
    assert sub_tree
    rewrite_stored_blob(repo, sub_tree, lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    assert not check(repo).ok
    from casbackup.repair import repair_blobs
    out = repair_blobs(repo, apply=True, validators=validators, entry_validators=entry_validators)
    assert [b["blob"] for b in out.removed] == [sub_tree]
    assert out.damaged_entries[0]["key"] == info.id
    report = check(repo, read_data=True, validators=validators, entry_validators=entry_validators)
    assert report.ok and [p.blob for p in report.known_damage] == [sub_tree]
    from casbackup.gc import collect
    collect(repo, grace=0, force=True)  # must not stop at the missing TREE


# ---- check validates bodies (item 6) ---------------------------------------------------------

def _commit_snapshot(repo: Repository, tree_refs: list[Ref], tree: dict, extra: list[tuple[BlobType, bytes]] = ()):
    with repo.transaction("hand-made") as txn:
        for t, payload in extra:
            txn.put_blob(t, payload)
        tree_id = txn.put_structured(BlobType.TREE, tree_refs, tree).ref.id
        info = SnapshotInfo("", 1.0, "h", "u", ["/x"], [], tree_id)
        value = info.value()
        info.id = new_id(value)
        txn.put(NAMESPACE, info.id, value, refs=[Ref(BlobType.TREE, tree_id)])
    return info


def _check_all(repo: Repository, read_data: bool = True):
    validators, entry_validators = check_validators()
    return check(repo, read_data=read_data, validators=validators, entry_validators=entry_validators)


def _restore_fails(repo: Repository, tmp_path: Path, spec: str) -> bool:
    try:
        run_restore(repo, spec, RestoreOptions(target=str(tmp_path / "restore")))
    except BlobCorrupt:
        return True
    return False


def test_check_decodes_tree_bodies_like_restore(tmp_path: Path) -> None:
    repo = make_repo()
    bad = {"v": 1, "entries": [{"name": b"..", "type": "file", "mode": 0o644, "mtime_ns": 0, "uid": 0, "gid": 0,
                                "size": 1, "data": b"x"}]}
    info = _commit_snapshot(repo, [], bad)
    assert _restore_fails(repo, tmp_path, info.id)
    report = _check_all(repo)
    assert not report.ok and report.corrupt[0].blob == info.tree, report


def test_check_compares_chunk_sizes_with_the_tree(tmp_path: Path) -> None:
    repo = make_repo()
    payload = b"abcde"
    from casbackup.codec import blob_id
    cid = blob_id(BlobType.CHUNK, payload)
    node = Node(b"f", "file", mode=0o644, size=9, chunks=[Chunk(cid, 9)])
    refs, body = tree_body([node])
    info = _commit_snapshot(repo, refs, body, extra=[(BlobType.CHUNK, payload)])
    assert _restore_fails(repo, tmp_path, info.id)
    report = _check_all(repo)
    assert not report.ok and report.corrupt[0].blob == info.tree and "bytes" in report.corrupt[0].reason
    assert _check_all(repo, read_data=False).ok  # sizes are only known once chunks are read


def test_check_compares_a_file_blobs_total_with_the_tree(tmp_path: Path) -> None:
    repo = make_repo()
    from casbackup.codec import blob_id
    payload = b"12345"
    chunks = [Chunk(blob_id(BlobType.CHUNK, payload), 5)]
    with repo.transaction() as txn:
        txn.put_blob(BlobType.CHUNK, payload)
        frefs, fbody = file_body(chunks)
        file_id = txn.put_structured(BlobType.FILE, frefs, fbody).ref.id
    node = Node(b"f", "file", mode=0o644, size=6, file=file_id)
    refs, body = tree_body([node])
    info = _commit_snapshot(repo, refs, body)
    assert _restore_fails(repo, tmp_path, info.id)
    report = _check_all(repo)
    assert not report.ok and report.corrupt[0].blob == info.tree


def test_check_decodes_snapshot_entries(tmp_path: Path) -> None:
    repo = make_repo()
    repo.commit(puts=[(NAMESPACE, "ab" * 32, b"\x93garbage")])
    report = _check_all(repo, read_data=False)
    assert not report.ok and "snapshot" in report.corrupt[0].reason


def test_cli_check_wires_in_the_files_validators(tmp_path: Path, cli) -> None:
    repo = make_repo(tmp_path / "repo")
    bad = {"v": 1, "entries": [{"name": b"a/b", "type": "dir", "mode": 0o755, "mtime_ns": 0, "uid": 0, "gid": 0,
                                "tree": b"\x00" * 32}]}
    info = _commit_snapshot(repo, [], bad)
    r = cli("-r", str(tmp_path / "repo"), "check")
    assert r.code == 13 and info.tree in r.out, r.out + r.stderr
    assert "Traceback" not in r.stderr and without_plaintext_warning(r.stderr).count("\n") == 1


def test_check_reads_unreferenced_tree_bodies(tmp_path: Path) -> None:
    """Item 7 with item 6: an orphan TREE whose body is invalid is damage too, reported apart."""
    repo = make_repo(tmp_path / "repo")
    store_orphan(repo, pack_structured([], {"v": 7}, BlobType.TREE), BlobType.TREE)
    orphan = blob_id(BlobType.TREE, pack_structured([], {"v": 7}, BlobType.TREE))
    report = _check_all(repo)
    assert not report.ok and not report.corrupt
    assert [p.blob for p in report.corrupt_unreferenced] == [orphan]
    assert isinstance(repo.backend, LocalBackend)
