"""Every files command through a real subprocess: output shapes, --json documents, exit codes."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers_common import flip_stored, lose_stored, stored_places

pytestmark = pytest.mark.slow  # end-to-end CLI sessions, one subprocess per command

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def setup(tmp_path: Path, cli):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    os.symlink("a.txt", src / "link")
    repo = str(tmp_path / "repo")
    r = cli("-r", repo, "init", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K")
    assert r.code == 0, r.stderr
    return repo, src


def j(r) -> object:
    assert r.code == 0, r.stderr
    return json.loads(r.out)


def test_backup_snapshots_ls_cat_restore_diff_forget_stats(setup, tmp_path: Path, cli) -> None:
    repo, src = setup
    r = cli("-r", repo, "backup", str(src), "--tag", "daily")
    assert r.code == 0, r.stderr
    first = r.out.strip()
    assert HEX64.match(first)
    assert "\r" not in r.stderr and "\x1b" not in r.stderr  # no progress on a pipe

    doc = j(cli("-r", repo, "backup", str(src), "--json"))
    for key in ("id", "short_id", "time", "host", "paths", "tags", "parent", "total_files", "files_new",
                "files_changed", "files_unmodified", "dirs", "total_bytes", "bytes_read", "bytes_added",
                "duration", "error_count", "errors"):
        assert key in doc, key
    assert doc["parent"] == first and doc["files_unmodified"] == 2 and doc["bytes_read"] == 0
    second = doc["id"]

    snaps = j(cli("-r", repo, "snapshots", "--json"))
    assert [s["id"] for s in snaps] == [first, second]
    assert set(snaps[0]) >= {"id", "short_id", "time", "host", "paths", "tags", "size"}
    assert snaps[0]["paths"] == [str(src)] and snaps[0]["tags"] == ["daily"] and snaps[0]["size"] == 300_006
    assert [s["id"] for s in j(cli("-r", repo, "snapshots", "--tag", "daily", "--json"))] == [first]
    text = cli("-r", repo, "snapshots")
    assert text.code == 0 and first[:8] in text.out and str(src) in text.out

    rows = j(cli("-r", repo, "ls", first[:10], str(src), "--json"))
    by_path = {row["path"]: row for row in rows}
    assert by_path[f"{src}/a.txt"]["type"] == "file" and by_path[f"{src}/a.txt"]["size"] == 6
    assert by_path[f"{src}/link"] == {**by_path[f"{src}/link"], "type": "symlink", "target": "a.txt"}
    assert by_path[f"{src}/sub"]["type"] == "dir"
    assert f"{src}/sub/b.bin" in cli("-r", repo, "-q", "ls", "latest").out.splitlines()

    r = cli("-r", repo, "cat", "latest", f"{src}/sub/b.bin")
    assert r.code == 0 and r.stdout == (src / "sub" / "b.bin").read_bytes()

    out = tmp_path / "out"
    doc = j(cli("-r", repo, "restore", "latest", "--target", str(out), "--json"))
    assert doc["files"] == 2 and doc["symlinks"] == 1 and doc["bytes"] == 300_006
    restored = out / str(src).lstrip("/")
    assert (restored / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    doc = j(cli("-r", repo, "restore", first, "--target", str(tmp_path / "only"), "--include", f"{src}/a.txt", "--json"))
    assert doc["files"] == 1

    (src / "a.txt").write_text("changed\n")
    (src / "new").write_text("n")
    third = cli("-r", repo, "backup", str(src)).out.strip()
    changes = j(cli("-r", repo, "diff", second, third, "--json"))
    assert {"change": "M", "path": f"{src}/a.txt"} in changes and {"change": "+", "path": f"{src}/new"} in changes
    r = cli("-r", repo, "diff", second, third)
    assert r.code == 0 and f"+  {src}/new" in r.out

    doc = j(cli("-r", repo, "forget", "--keep-last", "1", "--dry-run", "--json"))
    assert doc["dry_run"] and set(doc["removed"]) == {first, second} and doc["kept"] == [third]
    assert len(j(cli("-r", repo, "snapshots", "--json"))) == 3
    doc = j(cli("-r", repo, "forget", first[:12], "--json"))
    assert doc["removed"] == [first] and doc["generation"] is not None
    assert [s["id"] for s in j(cli("-r", repo, "snapshots", "--json"))] == [second, third]
    r = cli("-r", repo, "forget", "--keep-last", "1")
    assert r.code == 0 and second[:8] in r.out

    st = j(cli("-r", repo, "stats", "--json"))
    assert st["snapshots"] == 1 and st["logical_size"] == 300_009 and st["blobs"] > 3 and st["stored_size"] > 0
    assert st["dedup_ratio"] is not None
    assert cli("-r", repo, "check").code == 0
    assert cli("-r", repo, "gc", "--grace", "0s", "--force", "--keep-last", "1").code == 0
    assert cli("-r", repo, "check").code == 0
    assert cli("-r", repo, "restore", "latest", "--target", str(tmp_path / "after-gc")).code == 0


def test_backup_stdin_and_cat(setup, cli) -> None:
    repo, _ = setup
    payload = os.urandom(200_000)
    r = cli("-r", repo, "backup", "--stdin", "--stdin-name", "db.dump", input=payload)
    assert r.code == 0, r.stderr
    assert cli("-r", repo, "cat", "latest", "db.dump").stdout == payload
    assert cli("-r", repo, "backup", "--stdin", "--stdin-name", "a/b", input=b"x").code == 2


def test_exit_codes(setup, tmp_path: Path, cli) -> None:
    repo, src = setup
    deep = src / "deep"
    os.makedirs(deep / "/".join(["d"] * 520))  # deeper than a TREE may nest: cut, with an error
    r = cli("-r", repo, "backup", str(src), "--json")
    assert r.code == 16  # committed, but something was skipped
    doc = json.loads(r.out)
    assert doc["error_count"] == 1 and "nested deeper" in doc["errors"][0]["error"]
    assert len(j(cli("-r", repo, "snapshots", "--json"))) == 1
    r = cli("-r", repo, "restore", "latest", "--target", str(tmp_path / "o0"))
    assert r.code == 0, r.stderr  # what the cut left is still restorable
    shutil.rmtree(deep)
    assert cli("-r", repo, "backup", str(src)).code == 0

    assert cli("-r", repo, "backup").code == 2                              # nothing to back up
    assert cli("-r", repo, "backup", str(tmp_path / "nope")).code == 2      # no such path
    assert cli("-r", repo, "ls", "ffffffff").code == 3                      # no such snapshot
    assert cli("-r", repo, "ls", "not-hex!").code == 2
    assert cli("-r", repo, "cat", "latest", "/no/such/file").code == 3
    assert cli("-r", repo, "cat", "latest", str(src)).code == 2             # a directory
    assert cli("-r", repo, "forget").code == 2
    assert cli("-r", repo, "forget", "latest", "--keep-last", "1").code == 2
    assert cli("-r", str(tmp_path / "no-repo"), "snapshots").code == 9

    # a missing chunk stops the restore naming it; a corrupt one too; never a traceback
    places = stored_places(Path(repo))  # format 2: the largest blob, inside its pack
    big = max(places, key=lambda b: places[b][2])
    pack = places[big][0]
    saved = pack.read_bytes()
    lost = lose_stored(Path(repo), big)
    r = cli("-r", repo, "restore", "latest", "--target", str(tmp_path / "o1"))
    assert r.code == 4 and any(b in r.stderr for b in lost) and "Traceback" not in r.stderr
    pack.write_bytes(saved)
    flip_stored(Path(repo), big, -5)
    r = cli("-r", repo, "restore", "latest", "--target", str(tmp_path / "o2"))
    assert r.code == 5 and big in r.stderr and "Traceback" not in r.stderr
    r = cli("-r", repo, "cat", "latest", f"{src}/sub/b.bin")
    assert r.code == 5 and big in r.stderr


def test_sigkill_during_backup_leaves_a_consistent_repo(tmp_path: Path, cli) -> None:
    import signal
    import subprocess
    import sys
    import time

    from helpers_common import cli_env
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"f{i}").write_bytes(os.urandom(4 * 1024 * 1024))
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K").code == 0
    proc = subprocess.Popen([sys.executable, "-m", "casbackup", "-r", repo, "backup", str(src)], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    blobs = Path(repo) / "blobs"
    while time.monotonic() < deadline and proc.poll() is None:  # kill once some chunks are stored
        if blobs.exists() and sum(1 for p in blobs.rglob("*") if p.is_file()) > 20:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = cli("-r", repo, "check")
    assert r.code == 0, r.stdout + r.stderr.encode()
    doc = json.loads(cli("-r", repo, "backup", str(src), "--json").out)
    assert doc["error_count"] == 0
    if proc.returncode == -signal.SIGKILL:
        assert doc["chunks_reused"] > 0  # what the killed run uploaded is reused, not uploaded again
    out = tmp_path / "out"
    assert cli("-r", repo, "restore", "latest", "--target", str(out)).code == 0
    assert (out / str(src).lstrip("/") / "f7").read_bytes() == (src / "f7").read_bytes()


def test_a_local_repository_inside_the_source_is_not_backed_up(tmp_path: Path, cli) -> None:
    src = tmp_path / "home [1]"  # glob characters in the path must not break the exclusion
    src.mkdir()
    (src / "doc.txt").write_text("d")
    repo = str(src / "backups")
    assert cli("-r", repo, "init").code == 0
    assert cli("-r", repo, "backup", str(src)).code == 0
    paths = cli("-r", repo, "-q", "ls", "latest").out.splitlines()
    assert f"{src}/doc.txt" in paths and not [p for p in paths if "backups" in p]
