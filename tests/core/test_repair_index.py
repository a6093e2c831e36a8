"""repair index end to end through the CLI (spec §12.9): lost, wrong and stale `_blobs` entries are
found by check, rebuilt from the packs' TOCs, and the snapshot restores byte for byte after."""
from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import pytest

from casbackup.backends import LocalBackend
from casbackup.codec import BlobType, EncodedBlob
from casbackup.layout import pack_key
from casbackup.packs import LOCATIONS_NAMESPACE, Location, PackBuilder, PackClass, split_pack
from casbackup.repository import Repository

from helpers_common import lose_stored


@pytest.fixture
def backed_up(tmp_path: Path, cli) -> tuple[str, Path]:
    """A repository (small chunks) holding one snapshot of a tree with a subdirectory."""
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "small.txt").write_text("hello\n")
    (src / "sub" / "deeper" / "mid.bin").write_bytes(os.urandom(90_000))
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init", "--insecure-no-encryption", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K").code == 0
    r = cli("-r", repo, "backup", str(src))
    assert r.code == 0, r.stderr
    return repo, src


def _open(repo: str) -> Repository:
    return Repository.open(LocalBackend(repo), write=True)


def _locations(repo: str) -> dict[str, Location]:
    r = _open(repo)
    with r.reader() as snap:
        return {e.key: Location.from_value(e.value or b"", e.key) for e in snap.list(LOCATIONS_NAMESPACE)}


def _of_type(locs: dict[str, Location], kind: BlobType) -> list[str]:
    return sorted(i for i, loc in locs.items() if loc.type == kind)


def _generations(repo: str, cli) -> int:
    return len(json.loads(cli("-r", repo, "log", "--json").out))


def _assert_restores(repo: str, src: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    r = cli("-r", repo, "restore", "latest", "--target", str(out))
    assert r.code == 0, r.stderr
    got = out / str(src).lstrip("/")
    for rel in ("big.bin", "sub/small.txt", "sub/deeper/mid.bin"):
        assert filecmp.cmp(src / rel, got / rel, shallow=False), rel


def _repair(repo: str, cli, *args: str) -> tuple[int, dict]:
    r = cli("-r", repo, "repair", "index", "--json", *args)
    return r.code, json.loads(r.out)


def test_a_clean_repository_has_nothing_to_repair(backed_up, cli) -> None:
    repo, _src = backed_up
    before = _generations(repo, cli)
    r = cli("-r", repo, "repair", "index", "--yes")
    assert r.code == 0, r.stderr
    assert "nothing to repair" in r.out
    assert _generations(repo, cli) == before  # no commit
    code, doc = _repair(repo, cli)
    assert code == 0 and doc["fixed"] == [] and doc["not_found"] == [] and doc["blobs_checked"] == len(_locations(repo))


def test_deleted_entries_of_trees_and_chunks_are_rebuilt(backed_up, tmp_path: Path, cli) -> None:
    """Every TREE entry is deleted (each hides its subtree from the walk) and one chunk's: check
    fails, the dry run shows them all and changes nothing, --yes commits them, check passes."""
    repo, src = backed_up
    locs = _locations(repo)
    victims = _of_type(locs, BlobType.TREE) + _of_type(locs, BlobType.CHUNK)[:1]
    r = _open(repo)
    with r.transaction("test: lose locations") as txn:  # Transaction.delete does not refuse `_blobs`
        for blob_id in victims:
            txn.delete(LOCATIONS_NAMESPACE, blob_id)
    assert set(_locations(repo)) == set(locs) - set(victims)

    r2 = cli("-r", repo, "check")
    assert r2.code == 13 and "repair index" in r2.stderr
    assert any(v in r2.out for v in victims)

    before = _generations(repo, cli)
    code, doc = _repair(repo, cli)
    assert code == 0 and doc["dry_run"] and not doc["applied"]
    assert sorted(f["blob"] for f in doc["fixed"]) == sorted(victims)
    assert all(f["old"] is None and f["reason"] == "the head does not locate it" for f in doc["fixed"])
    assert {f["blob"]: Location(BlobType[f["type"]], f["new"]["pack"], f["new"]["offset"], f["new"]["length"])
            for f in doc["fixed"]} == {v: locs[v] for v in victims}
    assert _generations(repo, cli) == before and set(_locations(repo)) == set(locs) - set(victims)

    r3 = cli("-r", repo, "repair", "index", "--yes")
    assert r3.code == 0, r3.stderr
    assert "committed the corrected locations" in r3.out and victims[0] in r3.out
    assert _generations(repo, cli) == before + 1
    assert _locations(repo) == locs

    r4 = cli("-r", repo, "check", "--read-data")
    assert r4.code == 0, r4.out + r4.stderr
    _assert_restores(repo, src, tmp_path, cli)
    code, doc = _repair(repo, cli, "--yes")
    assert code == 0 and doc["fixed"] == [] and not doc["applied"]


def test_wrong_offset_and_length_are_reported_by_check_and_corrected(backed_up, tmp_path: Path, cli) -> None:
    """A chunk located one byte off and a TREE with a wrong length: check --read-data names the
    blob and the pack and the TOC's place; repair index puts back the TOC's place."""
    repo, src = backed_up
    locs = _locations(repo)
    chunk, tree = _of_type(locs, BlobType.CHUNK)[0], _of_type(locs, BlobType.TREE)[0]
    c, t = locs[chunk], locs[tree]
    wrong = {chunk: Location(c.type, c.pack, c.offset + 1, c.length),
             tree: Location(t.type, t.pack, t.offset, t.length + 1)}
    r = _open(repo)
    with r.transaction("test: wrong locations") as txn:
        for blob_id, loc in wrong.items():
            txn.put_if_value(LOCATIONS_NAMESPACE, blob_id, loc.to_value(), locs[blob_id].to_value())
    assert _locations(repo) == {**locs, **wrong}

    r2 = cli("-r", repo, "check", "--read-data", "--json")
    assert r2.code == 13
    doc = json.loads(r2.out.strip().splitlines()[-1])
    by_blob = {p["blob"]: p["reason"] for p in doc["corrupt"]}
    assert chunk in by_blob and f"pack {c.pack}" in by_blob[chunk] and f"offset {c.offset}," in by_blob[chunk]
    assert tree in by_blob
    assert sum(p["blob"] == chunk for p in doc["corrupt"]) == 1  # one problem per blob

    code, doc = _repair(repo, cli, "--yes")
    assert code == 0 and doc["applied"]
    fixed = {f["blob"]: f for f in doc["fixed"]}
    assert set(fixed) == {chunk, tree}
    assert fixed[chunk]["old"] == {"pack": c.pack, "offset": c.offset + 1, "length": c.length}
    assert "does not verify" in fixed[chunk]["reason"]
    assert _locations(repo) == locs
    r3 = cli("-r", repo, "check", "--read-data")
    assert r3.code == 0, r3.out + r3.stderr
    _assert_restores(repo, src, tmp_path, cli)


def _copy_pack(repo: str, pack_id: str) -> str:
    """Write every blob of a pack into a new pack (what a repack does) and delete the old one, as if
    the commit moving the locations had been lost: the head still locates them in the old pack."""
    r = _open(repo)
    kind, pairs = split_pack(pack_id, r.backend.get(pack_key(pack_id)))
    builder = PackBuilder(PackClass(kind))
    for item, stored in pairs:
        builder.add(EncodedBlob(item.id, item.location.type, stored, 0))
    r.store.put_pack(builder)
    (Path(repo) / pack_key(pack_id)).unlink()
    return builder.pack_id


def test_locations_into_a_lost_pack_move_to_the_pack_holding_copies(backed_up, tmp_path: Path, cli) -> None:
    repo, src = backed_up
    locs = _locations(repo)
    data_pack = locs[_of_type(locs, BlobType.CHUNK)[0]].pack
    moved = sorted(i for i, loc in locs.items() if loc.pack == data_pack)
    new_pack = _copy_pack(repo, data_pack)

    r = cli("-r", repo, "check")
    assert r.code == 13 and "missing" in r.stderr
    code, doc = _repair(repo, cli)
    assert code == 0 and not doc["applied"]
    assert sorted(f["blob"] for f in doc["fixed"]) == moved
    assert {f["reason"] for f in doc["fixed"]} == {f"its pack {data_pack} is missing"}
    assert {f["new"]["pack"] for f in doc["fixed"]} == {new_pack}

    code, doc = _repair(repo, cli, "--yes")
    assert code == 0 and doc["applied"] and doc["packs_scanned"] >= 1
    after = _locations(repo)
    assert {after[i].pack for i in moved} == {new_pack}
    assert all(after[i].length == locs[i].length and after[i].type == locs[i].type for i in moved)
    r2 = cli("-r", repo, "check", "--read-data")
    assert r2.code == 0, r2.out + r2.stderr
    _assert_restores(repo, src, tmp_path, cli)


def test_blobs_in_no_pack_are_reported_and_exit_13(backed_up, cli) -> None:
    """A lost pack with no copy anywhere: nothing to relocate, and the message says what mends it."""
    repo, _src = backed_up
    locs = _locations(repo)
    lost = lose_stored(Path(repo), _of_type(locs, BlobType.CHUNK)[0])
    before = _generations(repo, cli)
    r = cli("-r", repo, "repair", "index", "--yes")
    assert r.code == 13
    assert "repair blobs" in r.stderr and "not found: CHUNK" in r.out
    code, doc = _repair(repo, cli, "--yes")
    assert code == 13 and doc["fixed"] == [] and not doc["applied"]
    assert {b["blob"] for b in doc["not_found"]} == lost & set(locs)
    assert _generations(repo, cli) == before


def test_a_pack_whose_toc_lacks_a_located_blob_is_named_by_check(backed_up, cli) -> None:
    """A location naming an existing pack whose TOC does not list the blob (it verifies nowhere
    there): check --read-data names the blob and that pack."""
    repo, _src = backed_up
    locs = _locations(repo)
    chunk = _of_type(locs, BlobType.CHUNK)[0]
    tree_pack = locs[_of_type(locs, BlobType.TREE)[0]].pack
    c = locs[chunk]
    r = _open(repo)
    with r.transaction("test: a location into the wrong pack") as txn:
        wrong = Location(c.type, tree_pack, c.offset, c.length)
        txn.put_if_value(LOCATIONS_NAMESPACE, chunk, wrong.to_value(), c.to_value())
    r2 = cli("-r", repo, "check", "--read-data", "--json")
    assert r2.code == 13
    doc = json.loads(r2.out.strip().splitlines()[-1])
    reasons = [p["reason"] for p in doc["corrupt"] if p["blob"] == chunk]
    assert len(reasons) == 1 and f"pack {tree_pack}, whose TOC does not list it" in reasons[0]
    code, out = _repair(repo, cli, "--yes")
    assert code == 0 and [f["blob"] for f in out["fixed"]] == [chunk]
    assert cli("-r", repo, "check", "--read-data").code == 0


def test_an_entry_a_rival_commit_changed_first_is_left_alone(mem_repo: Repository) -> None:
    """The commit is conditional per entry (like gc's prune): a rival commit that writes one of the
    entries between the scan and the swap wins, and only the others are committed."""
    from casbackup.codec import Ref
    from casbackup.repair import repair_index
    repo = mem_repo
    repo.commit(puts=[("ns", f"k{n}", os.urandom(70_000 + n)) for n in range(3)])
    locs = _mem_locations(repo)
    victims = sorted(locs)[:2]
    with repo.transaction("test: lose locations") as txn:
        for blob_id in victims:
            txn.delete(LOCATIONS_NAMESPACE, blob_id)
    real = repo.transaction

    def rival_first(message: str = "", **kw):  # type: ignore[no-untyped-def]
        if message == "repair index":
            with real("rival") as rival:  # stores the first victim's location itself
                rival.stored[victims[0]] = locs[victims[0]]
                rival.use([Ref(locs[victims[0]].type, victims[0])])
        return real(message, **kw)

    repo.transaction = rival_first  # type: ignore[method-assign]
    out = repair_index(repo, apply=True)
    assert out.applied
    assert [c["blob"] for c in out.changed] == [victims[0]]
    assert [f["blob"] for f in out.fixed] == [victims[1]]
    assert _mem_locations(repo) == locs
    assert [g.message for g in repo.log()][:2] == ["repair index", "rival"]


def _mem_locations(repo: Repository) -> dict[str, Location]:
    with repo.reader() as snap:
        return {e.key: Location.from_value(e.value or b"", e.key) for e in snap.list(LOCATIONS_NAMESPACE)}
