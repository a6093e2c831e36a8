"""`backup --one-file-system` stays on the starting file system (a tmpfs mounted inside the tree,
root only), and an empty `--stdin` is refused unless `--allow-empty`."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end CLI sessions


def j(r) -> object:
    assert r.code == 0, r.stderr
    return json.loads(r.out)


@pytest.fixture
def mounted(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    src = tmp_path / "src"
    mnt = src / "mnt"
    mnt.mkdir(parents=True)
    (src / "top.txt").write_text("top\n")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "casbackup-test", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        (mnt / "inner.txt").write_text("inner\n")
        (mnt / "d").mkdir()
        (mnt / "d" / "deep.txt").write_text("deep\n")
        yield src, mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_one_file_system_does_not_cross_mounts(mounted, tmp_path: Path, cli) -> None:
    src, mnt = mounted
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    paths = lambda sid: {r["path"] for r in j(cli("-r", repo, "ls", sid, str(src), "--recursive", "--json"))}  # noqa: E731

    crossing = j(cli("-r", repo, "backup", str(src), "--json"))["id"]
    assert f"{mnt}/inner.txt" in paths(crossing) and f"{mnt}/d/deep.txt" in paths(crossing)

    doc = j(cli("-r", repo, "backup", str(src), "--one-file-system", "--json"))
    got = paths(doc["id"])
    assert f"{src}/top.txt" in got and str(mnt) in got  # the mount point itself is kept, empty
    assert not any(p.startswith(f"{mnt}/") for p in got)
    assert doc["error_count"] == 0

    # a mount given on the command line is its own starting point, so it is backed up whole
    sid = j(cli("-r", repo, "backup", str(mnt), "-x", "--json"))["id"]
    rows = {r["path"] for r in j(cli("-r", repo, "ls", sid, str(mnt), "--recursive", "--json"))}
    assert f"{mnt}/d/deep.txt" in rows

    target = tmp_path / "out"
    assert cli("-r", repo, "restore", doc["id"], "--target", str(target)).code == 0
    restored = target / str(mnt).lstrip("/")
    assert restored.is_dir() and list(restored.iterdir()) == []


def test_empty_stdin_is_an_error_unless_allow_empty(tmp_path: Path, cli) -> None:
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    r = cli("-r", repo, "backup", "--stdin", "--stdin-name", "db.sql", input=b"")
    assert r.code == 2 and "empty" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert j(cli("-r", repo, "snapshots", "--json")) == []
    doc = j(cli("-r", repo, "backup", "--stdin", "--stdin-name", "db.sql", "--allow-empty", "--json", input=b""))
    assert doc["total_bytes"] == 0
    assert cli("-r", repo, "cat", doc["id"], "/db.sql").stdout == b""
    assert j(cli("-r", repo, "backup", "--stdin", "--json", input=b"x"))["total_bytes"] == 1
