"""Progress through the real CLI: the status line on a pseudo-terminal (pexpect) with a percent
and an ETA, cleared at the end; none on a pipe or with -q; --json status lines ending with the
summary line; -v/-vv lines."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from helpers_common import PROJECT_ROOT, cli_env

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.slow  # end-to-end CLI sessions on a pseudo-terminal, a few subprocesses each

STATUS = re.compile(rb"\r\x1b\[K(backup|restore) \[\d+:\d\d\] (\d+\.\d)% ")
ETA = re.compile(rb"ETA \d+:\d\d")
HEX64 = re.compile(rb"[0-9a-f]{64}")


DEFAULT_RATE = {"CASBACKUP_PROGRESS_FPS": ""}  # the helpers turn the status off for other tests; not here


def spawn(*args: str, env: dict[str, str] | None = None) -> "pexpect.spawn":
    return pexpect.spawn(sys.executable, ["-m", "casbackup", *args], env=cli_env({**DEFAULT_RATE, **(env or {})}),
                         cwd=str(PROJECT_ROOT),
                         timeout=180, dimensions=(24, 200))


def run_on_terminal(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes]:
    child = spawn(*args, env=env)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before


def make_tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        d = root / f"d{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(os.urandom(size))


@pytest.fixture
def small(tmp_path: Path, cli) -> tuple[str, Path]:
    """A repository and a tree of 300 files of 40 KiB (well under a second to back up)."""
    repo, src = str(tmp_path / "repo"), tmp_path / "src"
    make_tree(src, 300, 40_000)
    assert cli("-r", repo, "init").code == 0
    return repo, src


def test_status_line_with_percent_is_cleared_at_the_end(small: tuple[str, Path], tmp_path: Path) -> None:
    repo, src = small
    make_tree(src / "more", 1200, 40_000)  # about a second to back up: the first line is drawn after 0.25 s
    code, out = run_on_terminal("-r", repo, "backup", str(src))
    assert code == 0, out
    lines = STATUS.findall(out)
    assert lines and all(kind == b"backup" for kind, _ in lines)
    assert float(lines[-1][1]) > 0
    # the last status line is cleared before the snapshot ID is printed
    assert re.search(rb"\r\x1b\[K" + HEX64.pattern, out)
    assert b"1500 files" in out.split(b"\r\x1b[K")[-1]  # the summary, on a line of its own
    code, out = run_on_terminal("-r", repo, "restore", "latest", "--target", str(tmp_path / "out"))
    assert code == 0, out
    assert any(kind == b"restore" for kind, _ in STATUS.findall(out))
    assert out.split(b"\r\x1b[K")[-1].startswith(b"restored snapshot")


def test_quiet_on_terminal_shows_no_status(small: tuple[str, Path]) -> None:
    repo, src = small
    code, out = run_on_terminal("-r", repo, "-q", "backup", str(src))
    assert code == 0, out
    assert b"\x1b[K" not in out and b"%" not in out
    assert HEX64.search(out)


def test_no_status_when_stderr_is_not_a_terminal(small: tuple[str, Path], cli) -> None:
    repo, src = small
    r = cli("-r", repo, "backup", str(src), env=DEFAULT_RATE)
    assert r.code == 0, r.stderr
    assert "\x1b[K" not in r.stderr and "%" not in r.stderr and "ETA" not in r.stderr
    assert "300 files" in r.stderr


def test_check_and_gc_show_counts_on_terminal(small: tuple[str, Path]) -> None:
    repo, src = small
    assert run_on_terminal("-r", repo, "-q", "backup", str(src))[0] == 0
    code, out = run_on_terminal("-r", repo, "check", "--read-data")
    assert code == 0, out
    assert re.search(rb"walking generations \[\d+:\d\d\] \d+\.\d% \d+/\d+ blobs", out)
    assert out.split(b"\r\x1b[K")[-1].rstrip().endswith(b"no errors found")


def test_json_status_lines_end_with_the_summary(small: tuple[str, Path], cli) -> None:
    repo, src = small
    r = cli("-r", repo, "backup", str(src), "--json", env={"CASBACKUP_PROGRESS_FPS": "60"})
    assert r.code == 0, r.stderr
    docs = [json.loads(line) for line in r.out.splitlines()]
    summary = docs[-1]
    assert summary["message_type"] == "summary"
    for key in ("id", "short_id", "host", "paths", "tags", "parent", "total_files", "files_new", "total_bytes",
                "bytes_added", "error_count", "duration"):
        assert key in summary  # the keys scripts read before status lines existed
    assert summary["total_files"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", summary["time"])  # RFC 3339, not an epoch float
    status = docs[:-1]
    assert status, "a backup of 300 files at 60 status messages a second printed none"
    for doc in status:
        assert doc["message_type"] == "status"
        assert {"percent_done", "total_files", "files_done", "total_bytes", "bytes_done", "error_count",
                "current_files", "seconds_elapsed"} <= doc.keys()
        assert 0.0 <= doc["percent_done"] <= 1.0 and doc["files_done"] <= 300
    assert json.loads(r.out.splitlines()[-1]) == summary  # a script reading the last line gets the summary


def test_json_without_fps_is_one_summary_line_for_a_short_run(small: tuple[str, Path], cli, tmp_path: Path) -> None:
    """A run shorter than the JSON interval prints the summary alone, so json.loads of the
    whole output (what scripts did before status lines) still works for quick commands."""
    repo, src = small
    r = cli("-r", repo, "backup", str(src), "--json", env=DEFAULT_RATE)
    assert r.code == 0, r.stderr
    if r.out.count("\n") == 1:  # under heavy load the run may pass the interval: then status lines come first
        assert json.loads(r.out)["message_type"] == "summary"
    for cmd in (["check"], ["gc", "--dry-run"], ["restore", "latest", "--target", str(tmp_path / "o")]):
        r = cli("-r", repo, *cmd, "--json", env=DEFAULT_RATE)
        assert r.code == 0, r.stderr
        assert json.loads(r.out.splitlines()[-1])["message_type"] == "summary"


def test_json_times_are_rfc3339(small: tuple[str, Path], cli, tmp_path: Path) -> None:
    """No epoch floats: backup's, snapshots' and copy's `time` are RFC 3339 UTC text."""
    repo, src = small
    rfc3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    r = cli("-r", repo, "backup", str(src), "--json")
    assert r.code == 0, r.stderr
    assert rfc3339.fullmatch(json.loads(r.out)["time"])
    r = cli("-r", repo, "snapshots", "--json")
    assert r.code == 0, r.stderr
    assert all(rfc3339.fullmatch(s["time"]) for s in json.loads(r.out))
    other = str(tmp_path / "other")
    assert cli("-r", other, "init", "--copy-id-key-from", repo).code == 0
    r = cli("-r", other, "copy", "--from-repo", repo, "--json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.out.splitlines()[-1])
    assert doc["message_type"] == "summary" and doc["copied"] == 1
    assert rfc3339.fullmatch(doc["snapshots"][0]["time"])


def test_verbose_levels(small: tuple[str, Path], cli) -> None:
    repo, src = small
    r = cli("-r", repo, "-v", "backup", str(src), env=DEFAULT_RATE)
    assert r.code == 0, r.stderr
    assert re.search(r"scan finished in [\d.]+s: 300 files", r.stderr)
    assert "new " not in r.stderr  # per-file lines are -vv
    (src / "d000" / "f00000").write_bytes(b"changed")
    (src / "d000" / "added").write_bytes(b"added")
    r = cli("-r", repo, "backup", str(src), "-vv", env=DEFAULT_RATE)  # after the subcommand too, as restic accepts
    assert r.code == 0, r.stderr
    items = re.findall(r"casbackup: (new|modified)\s+(\S+)", r.stderr)
    assert sorted(items) == sorted([("modified", str(src / "d000" / "f00000")), ("new", str(src / "d000" / "added"))])


def test_status_off_with_fps_zero(small: tuple[str, Path], cli) -> None:
    repo, src = small
    r = cli("-r", repo, "backup", str(src), "--json", env={"CASBACKUP_PROGRESS_FPS": "0"})
    assert r.code == 0, r.stderr
    assert json.loads(r.out)["message_type"] == "summary"  # one line: the summary alone
    code, out = run_on_terminal("-r", repo, "backup", str(src), env={"CASBACKUP_PROGRESS_FPS": "0"})
    assert code == 0 and b"\x1b[K" not in out


def test_eta_appears_on_a_longer_backup(tmp_path: Path, cli) -> None:
    """A backup of a few seconds shows an ETA once 2 s and 3% have passed. (The tree is big enough that
    the backup outlasts those 2 s on an idle machine too: 172 MiB once took only 2.2 s.)"""
    repo, src = str(tmp_path / "repo"), tmp_path / "src"
    make_tree(src, 12000, 40_000)
    assert cli("-r", repo, "init").code == 0
    code, out = run_on_terminal("-r", repo, "backup", str(src))
    assert code == 0, out
    assert STATUS.search(out) and ETA.search(out), out[-2000:]
    assert re.search(rb"\r\x1b\[K" + HEX64.pattern, out)
