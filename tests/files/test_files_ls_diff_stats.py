"""ls --long/--recursive (restic 0.14's selection), diff's summary, and stats --mode, through the CLI."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_common import cli_env

pytestmark = pytest.mark.slow  # end-to-end CLI tables, one subprocess per command (run with --run-slow)


def j(r):
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def two(tmp_path: Path, cli):
    """A repository with two snapshots of one tree: a file changed, one added, a dir removed."""
    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    (src / "a").write_text("one")
    (src / "big").write_bytes(os.urandom(200_000))
    (src / "d" / "e" / "g").write_text("g")
    (src / "gone").mkdir()
    (src / "gone" / "x").write_text("x")
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    first = j(cli("-r", repo, "backup", str(src), "--json"))["id"]
    (src / "big").write_bytes(os.urandom(100_000))
    (src / "new").write_text("new!")
    os.symlink("a", src / "link")
    (src / "gone" / "x").unlink()
    (src / "gone").rmdir()
    second = j(cli("-r", repo, "backup", str(src), "--json"))["id"]
    return repo, src, first, second


def test_ls_selection_matches_restic(two, cli) -> None:
    repo, src, _, _ = two
    every = cli("-r", repo, "ls", "latest").out.splitlines()
    assert f"{src}/d/e/g" in every and str(src) in every  # no PATH: everything
    direct = cli("-r", repo, "ls", "latest", str(src)).out.splitlines()
    assert direct == [str(src), f"{src}/a", f"{src}/big", f"{src}/d", f"{src}/link", f"{src}/new"]
    deep = cli("-r", repo, "ls", "latest", f"{src}/d", "--recursive").out.splitlines()
    assert deep == [f"{src}/d", f"{src}/d/e", f"{src}/d/e/g"]
    several = cli("-r", repo, "ls", "latest", f"{src}/a", f"{src}/d/e").out.splitlines()
    assert several == [f"{src}/a", f"{src}/d/e", f"{src}/d/e/g"]
    rows = j(cli("-r", repo, "ls", "latest", str(src), "--json"))
    link = next(r for r in rows if r["name"] == "link")
    assert link["type"] == "symlink" and link["target"] == "a" and link["permissions"].startswith("l")
    assert link["mtime"].endswith("Z")
    r = cli("-r", repo, "ls", "latest", "/nowhere")
    assert r.code == 3 and "no such path" in r.stderr and "Traceback" not in r.stderr


def test_ls_long_format(two, cli) -> None:
    repo, src, _, _ = two
    lines = cli("-r", repo, "ls", "-l", "latest", str(src)).out.splitlines()
    by_name = {line.rsplit(" ", 1)[-1] if "->" not in line else line.split(" -> ")[0].rsplit(" ", 1)[-1]: line
               for line in lines}
    a = by_name[f"{src}/a"].split()
    assert a[0] == "-rw-r--r--" or a[0].startswith("-")
    assert a[1] == str(os.getuid()) and a[2] == str(os.getgid()) and a[3] == "3" and a[4].endswith("Z")
    assert by_name[f"{src}/link"].startswith("l") and by_name[f"{src}/link"].endswith(" -> a")
    assert by_name[f"{src}/d"].startswith("d")


def test_ls_escapes_control_characters_on_a_terminal(tmp_path: Path, cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad\x1b[2Jname\tx").write_text("x")
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    j(cli("-r", repo, "backup", str(src), "--json"))
    piped = cli("-r", repo, "ls", "latest", str(src)).stdout
    assert b"bad\x1b[2Jname\tx" in piped  # a pipe gets the name as it is (one entry a line)
    master, slave = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "casbackup", "-r", repo, "ls", "latest", str(src)],
                          stdout=slave, stderr=subprocess.PIPE, env=cli_env(), timeout=60)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert b"\x1b" not in out and b"\t" not in out
    assert b"bad\\x1b[2Jname\\tx" in out


def test_diff_prints_restics_summary(two, cli) -> None:
    repo, src, first, second = two
    r = cli("-r", repo, "diff", first, second)
    assert r.code == 0, r.stderr
    lines = r.out.splitlines()
    assert f"M  {src}/big" in lines and f"+  {src}/new" in lines and f"-  {src}/gone/" in lines
    assert "Files:           1 new,     1 removed,     1 changed" in lines  # new; gone/x; big
    assert "Dirs:            0 new,     1 removed" in lines
    assert "Others:          1 new,     0 removed" in lines  # the symlink
    assert any(line.startswith("Data Blobs:") for line in lines)
    assert any(line.startswith("  Added:") for line in lines) and any(line.startswith("  Removed:") for line in lines)
    # --json stays the array of changes; --json --summary gives the summary object too
    changes = j(cli("-r", repo, "diff", first, second, "--json"))
    assert {"change": "M", "path": f"{src}/big"} in changes
    doc = j(cli("-r", repo, "diff", first, second, "--json", "--summary"))
    assert doc["changes"] == changes
    s = doc["summary"]
    assert s["source_snapshot"] == first and s["target_snapshot"] == second
    assert s["changed_files"] == 1
    assert s["added"]["files"] == 1 and s["removed"]["files"] == 1 and s["removed"]["dirs"] == 1
    assert s["added"]["others"] == 1
    assert s["added"]["data_blobs"] >= 1 and s["removed"]["data_blobs"] >= 1
    assert 100_000 <= s["added"]["bytes"] <= 100_010 and 200_000 <= s["removed"]["bytes"] <= 200_010
    same = j(cli("-r", repo, "diff", second, second, "--json", "--summary"))
    assert same["changes"] == [] and same["summary"]["added"]["bytes"] == 0


@pytest.mark.slow  # ~11 s: ten CLI runs
def test_stats_modes(two, cli) -> None:
    repo, src, first, second = two
    one = j(cli("-r", repo, "stats", first, "--mode", "restore-size", "--json"))
    assert one["mode"] == "restore-size" and one["snapshots_count"] == 1
    assert one["total_size"] == 3 + 200_000 + 1 + 1
    default = j(cli("-r", repo, "stats", first, "--json"))
    assert default == one  # restore-size is the default, as in restic
    both = j(cli("-r", repo, "stats", "--mode", "restore-size", "--json"))
    assert both["snapshots_count"] == 2 and both["total_size"] == one["total_size"] + 3 + 100_000 + 1 + 4
    by_content = j(cli("-r", repo, "stats", "--mode", "files-by-contents", "--json"))
    assert by_content["total_file_count"] == 6  # a, g (the same in both), big twice, x, new
    raw1 = j(cli("-r", repo, "stats", first, "--mode", "raw-data", "--json"))
    raw = j(cli("-r", repo, "stats", "--mode", "raw-data", "--json"))
    assert raw1["total_blob_count"] > 1 and raw["total_blob_count"] > raw1["total_blob_count"]
    assert raw["total_size"] > 300_000
    # without SNAPSHOTs or --mode the repository summary is there too
    whole = j(cli("-r", repo, "stats", "--json"))
    assert whole["snapshots"] == 2 and whole["dedup_ratio"] is not None and whole["mode"] == "restore-size"
    text = cli("-r", repo, "stats", "latest", "--mode", "raw-data")
    assert text.code == 0 and "Stats in raw-data mode:" in text.out and "Total Blob Count:" in text.out
    bad = cli("-r", repo, "stats", "--mode", "blobs")
    assert bad.code == 2 and "Traceback" not in bad.stderr
    assert cli("-r", repo, "stats", "ffffffff").code == 3
