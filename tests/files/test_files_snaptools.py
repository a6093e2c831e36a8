"""version, find, dump and tag through the CLI, as a restic user would run them."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from helpers_common import cli_env


def j(r) -> object:
    assert r.code == 0, r.stderr
    return json.loads(r.out)


@pytest.fixture
def two(tmp_path: Path, cli):
    src = tmp_path / "src"
    (src / "docs" / "deep").mkdir(parents=True)
    (src / "docs" / "notes.txt").write_text("notes\n")
    (src / "docs" / "deep" / "big.bin").write_bytes(os.urandom(300_000))
    (src / "docs" / "deep" / "x.py").write_text("print(1)\n")
    os.symlink("notes.txt", src / "docs" / "link")
    os.chmod(src / "docs" / "deep" / "x.py", 0o750)
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K").code == 0
    first = j(cli("-r", repo, "backup", str(src), "--tag", "a", "--json"))["id"]
    (src / "docs" / "later.txt").write_text("later\n")
    second = j(cli("-r", repo, "backup", str(src), "--tag", "a", "--tag", "b", "--json"))["id"]
    return repo, src, first, second


def test_version(cli) -> None:
    r = cli("version")
    assert r.code == 0 and r.out.startswith("casbackup ") and "Python" in r.out
    doc = j(cli("version", "--json"))
    assert doc["message_type"] == "version" and doc["version"]


@pytest.mark.slow
def test_find_by_name_and_path(two, cli) -> None:
    repo, src, first, second = two
    docs = j(cli("-r", repo, "find", "*.txt", "--json"))
    assert [(d["snapshot"], d["hits"]) for d in docs] == [(first, 1), (second, 2)]
    m = {x["path"]: x for x in docs[1]["matches"]}
    assert set(m) == {f"{src}/docs/notes.txt", f"{src}/docs/later.txt"}
    assert m[f"{src}/docs/notes.txt"]["size"] == 6 and m[f"{src}/docs/notes.txt"]["mtime"].endswith("Z")
    # a pattern with '/' is matched against the whole path
    docs = j(cli("-r", repo, "find", "docs/*/big.bin", "--snapshot", first[:8], "--json"))
    assert [x["path"] for x in docs[0]["matches"]] == [f"{src}/docs/deep/big.bin"]
    assert docs[0]["matches"][0]["size"] == 300_000
    assert j(cli("-r", repo, "find", "later.txt", "--tag", "b", "--json"))[0]["snapshot"] == second
    assert j(cli("-r", repo, "find", "LATER.TXT", "-i", "--snapshot", "latest", "--json"))[0]["hits"] == 1
    assert j(cli("-r", repo, "find", "nothing-like-this", "--json")) == []
    assert cli("-r", repo, "find", "*.txt", "--host", "elsewhere").code == 3
    text = cli("-r", repo, "find", "*.py")
    assert text.code == 0 and f"{src}/docs/deep/x.py" in text.out and first[:8] in text.out


@pytest.mark.slow
def test_dump_file_tar_and_zip(two, tmp_path: Path, cli) -> None:
    repo, src, first, second = two
    assert cli("-r", repo, "dump", "latest", f"{src}/docs/deep/big.bin").stdout == (src / "docs/deep/big.bin").read_bytes()

    def compare(root: Path) -> None:
        for rel in ("notes.txt", "later.txt", "deep/big.bin", "deep/x.py"):
            assert (root / rel).read_bytes() == (src / "docs" / rel).read_bytes(), rel
        assert os.readlink(root / "link") == "notes.txt"
        assert stat.S_IMODE(os.stat(root / "deep" / "x.py").st_mode) == 0o750
        assert os.stat(root / "deep" / "x.py").st_mtime == int(os.stat(src / "docs" / "deep" / "x.py").st_mtime)

    r = cli("-r", repo, "dump", "latest", f"{src}/docs")  # a directory: tar by default
    assert r.code == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        assert {m.name for m in tar.getmembers()} >= {"docs", "docs/deep/big.bin", "docs/link"}
        tar.extractall(tmp_path / "untar", filter="tar")
    compare(tmp_path / "untar" / "docs")

    # through a real pipe, as a user would: casbackup dump ... | tar -x
    out = tmp_path / "piped"
    out.mkdir()
    proc = subprocess.run(f"{sys.executable} -m casbackup -r {repo} dump latest {src}/docs --archive tar | tar -xf -",
                          shell=True, cwd=out, env=cli_env(), capture_output=True)
    assert proc.returncode == 0, proc.stderr
    compare(out / "docs")

    r = cli("-r", repo, "dump", "latest", f"{src}/docs", "--archive", "zip")
    assert r.code == 0, r.stderr
    with zipfile.ZipFile(io.BytesIO(r.stdout)) as zf:
        assert zf.testzip() is None
        assert zf.read("docs/deep/big.bin") == (src / "docs/deep/big.bin").read_bytes()
        assert zf.read("docs/notes.txt") == b"notes\n"
        info = zf.getinfo("docs/deep/x.py")
        assert stat.S_IMODE(info.external_attr >> 16) == 0o750
        assert stat.S_ISLNK(zf.getinfo("docs/link").external_attr >> 16)
    assert cli("-r", repo, "dump", "latest", f"{src}/nope").code == 3


@pytest.mark.slow
def test_tag_add_remove_set_is_one_commit(two, cli) -> None:
    repo, src, first, second = two
    gens = lambda: len(j(cli("-r", repo, "log", "--json")))  # noqa: E731
    before = gens()
    doc = j(cli("-r", repo, "tag", first[:8], second, "--add", "keep", "--remove", "a", "--json"))
    assert gens() == before + 1  # both snapshots changed in a single generation
    by_old = {d["old"]: d for d in doc}
    assert by_old[first]["tags"] == ["keep"] and by_old[second]["tags"] == ["b", "keep"]
    new1, new2 = by_old[first]["new"], by_old[second]["new"]
    snaps = {s["id"]: s for s in j(cli("-r", repo, "snapshots", "--json"))}
    assert set(snaps) == {new1, new2}  # new IDs (an ID hashes the tags); the old entries are gone
    assert snaps[new1]["original"] == first and snaps[new2]["original"] == second
    assert snaps[new2]["parent"] == first  # parent keeps naming the ID used, found again through 'original'
    assert {snaps[new2]["parent"]} <= {s["original"] for s in snaps.values()}

    doc = j(cli("-r", repo, "tag", "latest", "--set", "only", "--json"))
    assert doc[0]["old"] == new2 and doc[0]["tags"] == ["only"] and doc[0]["original"] == second
    assert j(cli("-r", repo, "tag", "latest", "--set", "only", "--json")) == []  # unchanged: no commit
    # the files cache still works from a retagged parent
    nxt = j(cli("-r", repo, "backup", str(src), "--json"))
    assert nxt["parent"] == doc[0]["new"] and nxt["bytes_read"] == 0
    assert cli("-r", repo, "tag", first, "--add", "x").code == 3  # the old ID is gone
    assert cli("-r", repo, "tag", "latest", "--set", "a", "--add", "b").code == 2
    assert cli("-r", repo, "tag", "latest").code == 2
    assert cli("-r", repo, "check").code == 0


def test_tag_without_ids_changes_what_the_filter_selects(two, cli) -> None:
    """As restic's `tag`: no SNAPSHOT means every snapshot the filters select, all without filters."""
    repo, src, first, second = two
    doc = j(cli("-r", repo, "tag", "--tag", "b", "--add", "seen", "--json"))
    assert [d["old"] for d in doc] == [second] and doc[0]["tags"] == ["a", "b", "seen"]
    assert j(cli("-r", repo, "tag", "--host", "no-such-host", "--add", "x", "--json")) == []
    doc = j(cli("-r", repo, "tag", "--add", "all", "--json"))
    assert sorted(d["original"] for d in doc) == sorted([first, second])
    assert all("all" in s["tags"] for s in j(cli("-r", repo, "snapshots", "--json")))


def test_tag_racing_a_forget_is_a_conflict_not_a_resurrection(tmp_path: Path, monkeypatch) -> None:
    """The old entry must still exist when the tag change commits (Transaction.expect_present)."""
    from helpers_files import backup, make_repo

    from casbackup.errors import CommitConflict
    from casbackup.files import tagging
    from casbackup.files.snapshots import NAMESPACE, list_snapshots

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    repo = make_repo(tmp_path / "repo")
    info, _ = backup(repo, src)
    real = tagging.select

    def select_then_forget(snap, specs, flt=None):
        found = real(snap, specs, flt)
        with repo.transaction("concurrent forget") as other:
            for s in found:
                other.delete(NAMESPACE, s.id)
        return found

    monkeypatch.setattr(tagging, "select", select_then_forget)
    with pytest.raises(CommitConflict):
        tagging.tag_snapshots(repo, [info.id], None, ["x"], [], None)
    with repo.reader("t") as snap:
        assert list_snapshots(snap) == []  # forgotten stays forgotten
