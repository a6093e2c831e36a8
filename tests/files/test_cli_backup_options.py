"""backup's restic options through the real CLI (issue 12): --dry-run, --parent, --time,
--read-concurrency, --files-from/-verbatim/-raw (and `-`), --stdin-from-command."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers_common import cli_env, run_cli

pytestmark = pytest.mark.slow  # end-to-end CLI sessions, one subprocess per command


def j(r) -> object:
    assert r.code == 0, r.stderr
    return json.loads(r.out)


def one_line_error(r, code: int, *words: str) -> None:
    assert r.code == code, (r.code, r.stderr)
    assert r.stderr.startswith("casbackup: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and all(w in r.stderr for w in words), r.stderr


def stored(repo: Path) -> dict[str, int]:
    """The repository's objects (not the backend's empty flock files)."""
    return {str(p.relative_to(repo)): p.stat().st_size for p in repo.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.fixture
def setup(tmp_path: Path, cli):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "b.log").write_text("beta\n")
    (src / "sub" / "c.bin").write_bytes(os.urandom(300_000))
    repo = tmp_path / "repo"
    r = cli("-r", str(repo), "init", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K")
    assert r.code == 0, r.stderr
    return repo, src


def test_dry_run_reports_and_writes_nothing(setup, cli) -> None:
    repo, src = setup
    before = stored(repo)
    doc = j(cli("-r", str(repo), "backup", str(src), "--dry-run", "--json"))
    assert doc["dry_run"] is True and doc["id"] is None
    assert (doc["files_new"], doc["bytes_new"], doc["bytes_read"]) == (3, 300_011, 300_011)
    assert doc["blobs_added"] > 0 and doc["bytes_added"] > 0
    text = cli("-r", str(repo), "--no-pin", "backup", str(src), "-n")  # a dry run only reads: --no-pin is fine
    assert text.code == 0 and "dry run, nothing written" in text.out and "3 new" in text.out, text.stderr
    assert stored(repo) == before  # no blob, no commit, no pin
    assert j(cli("-r", str(repo), "snapshots", "--json")) == []

    real = j(cli("-r", str(repo), "backup", str(src), "--json"))
    assert (real["bytes_added"], real["blobs_added"]) == (doc["bytes_added"], doc["blobs_added"])
    (src / "a.txt").write_text("alpha, longer\n")
    again = j(cli("-r", str(repo), "backup", str(src), "--dry-run", "--json"))
    assert (again["files_changed"], again["bytes_changed"], again["files_unmodified"]) == (1, 14, 2)
    assert again["parent"] == real["id"] and again["bytes_unmodified"] == 300_005


def test_parent_time_and_read_concurrency(setup, cli) -> None:
    repo, src = setup
    r = str(repo)
    first = j(cli("-r", r, "backup", str(src), "--json"))["id"]
    other = j(cli("-r", r, "backup", str(src), "--host", "elsewhere", "--parent", first[:10], "--json"))
    assert other["parent"] == first and other["files_unmodified"] == 3 and other["bytes_read"] == 0
    one_line_error(cli("-r", r, "backup", str(src), "--parent", "abcdef12"), 3, "abcdef12")
    one_line_error(cli("-r", r, "backup", str(src), "--parent", "nope"), 2, "nope")

    when = "2006-01-02 15:04:05"
    sid = j(cli("-r", r, "backup", str(src), "--time", when, "--read-concurrency", "3", "--json"))["id"]
    snap = next(s for s in j(cli("-r", r, "snapshots", "--json")) if s["id"] == sid)
    expected = datetime.strptime(when, "%Y-%m-%d %H:%M:%S").timestamp()  # local time, as restic
    assert snap["time"] == datetime.fromtimestamp(expected, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for bad in ("2006-01-02", "2006-01-02T15:04:05", "2006-13-02 15:04:05", "yesterday"):
        one_line_error(cli("-r", r, "backup", str(src), "--time", bad), 2, "--time")
    for bad in ("0", "-1", "two"):
        one_line_error(cli("-r", r, "backup", str(src), "--read-concurrency", bad), 2, "--read-concurrency")
    assert len(j(cli("-r", r, "snapshots", "--json"))) == 3  # nothing refused was committed


def test_files_from_lists(setup, tmp_path: Path, cli) -> None:
    repo, src = setup
    r = str(repo)
    listing = tmp_path / "list"
    listing.write_text(f"# the text files\n{src}/*.txt\n\n   {src}/sub  \n{src}/none-*\n")
    doc = j(cli("-r", r, "backup", "--files-from", str(listing), "--json"))
    assert doc["paths"] == [f"{src}/a.txt", f"{src}/sub"] and doc["total_files"] == 2
    warned = cli("-r", r, "backup", "--files-from", str(listing), "-q")
    assert warned.code == 0 and "does not match any files" in warned.stderr

    verbatim = f"{src}/b.log\n{src}/*.txt\n".encode()  # taken literally: no glob
    r2 = cli("-r", r, "backup", "--files-from-verbatim", "-", "--json", input=verbatim)
    assert j(r2)["paths"] == [f"{src}/b.log"] and "does not exist, skipping" in r2.stderr
    raw = j(cli("-r", r, "backup", "--files-from-raw", "-", str(src / "a.txt"), "--json",
                input=f"{src}/sub\0{src}/b.log\0".encode()))
    assert raw["paths"] == [f"{src}/sub", f"{src}/b.log", f"{src}/a.txt"]  # the lists, then the PATHs

    one_line_error(cli("-r", r, "backup", "--files-from-raw", "-", input=f"{src}/a.txt".encode()), 2,
                   "trailing zero byte")
    gone = cli("-r", r, "backup", "--files-from-verbatim", "-", input=b"/does/not/exist\n")
    assert gone.code == 2 and gone.stderr.splitlines() == [  # restic's warning, then the error
        "casbackup: warning: /does/not/exist does not exist, skipping",
        "casbackup: error: nothing to back up: no path the --files-from* lists name exists"]
    one_line_error(cli("-r", r, "backup", "--files-from", "-", "--files-from-raw", "-"), 2, "standard input")
    one_line_error(cli("-r", r, "backup", "--files-from", str(tmp_path / "absent")), 2, "cannot read")
    assert len(j(cli("-r", r, "snapshots", "--json"))) == 4


def test_stdin_from_command(setup, tmp_path: Path, cli) -> None:
    repo, _ = setup
    r = str(repo)
    cmd = [sys.executable, "-c", "import sys; sys.stdout.write('dump ' * 100000)"]
    doc = j(cli("-r", r, "backup", "--stdin-from-command", "--stdin-filename", "db.sql", "--json", "--", *cmd))
    assert doc["paths"] == ["db.sql"] and doc["total_bytes"] == 500_000
    assert cli("-r", r, "cat", "latest", "/db.sql").stdout == b"dump " * 100_000

    failing = [sys.executable, "-c", "import sys; sys.stdout.write('half a dump'); sys.exit(2)"]
    one_line_error(cli("-r", r, "backup", "--stdin-from-command", "--", *failing), 1, "status 2", "nothing committed")
    one_line_error(cli("-r", r, "backup", "--stdin-from-command"), 2, "needs a command")
    one_line_error(cli("-r", r, "backup", "--stdin-from-command", "--", str(tmp_path / "no-such-cmd")), 2,
                   "cannot run")
    assert [s["id"] for s in j(cli("-r", r, "snapshots", "--json"))] == [doc["id"]]


def test_interrupted_stdin_from_command_commits_nothing_and_ends_the_command(setup, tmp_path: Path) -> None:
    """Ctrl-C while the command still writes: exit 130, no snapshot, and the command is ended."""
    repo, _ = setup
    marker = tmp_path / "pid"
    script = (f"import os, sys, time; sys.stdout.write('x' * 1000000); sys.stdout.flush(); "
              f"open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-m", "casbackup", "-r", str(repo), "backup", "--stdin-from-command",
                             "--", sys.executable, "-c", script], env=cli_env(), stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err.decode(), err
    child = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # ended and reaped by the backup
    check = run_cli("-r", str(repo), "check")
    assert check.code == 0, check.stderr
    assert json.loads(run_cli("-r", str(repo), "snapshots", "--json").out) == []
