"""An encrypted repository on S3 (moto's server on 127.0.0.1), through the CLI: nothing planted
is readable in any stored object, everything restores and verifies, and two concurrent
writer processes commit without losing either's snapshot (S3, with sealed roots and pins)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers_common import cli_env, run_cli

from .conftest import Target

SECRET = b"PLANTED-S3-CONTENT-2718"


def test_encrypted_backup_restore_and_grep_on_s3(moto_target: Target, tmp_path: Path) -> None:
    args = moto_target.cli_args()
    src = tmp_path / "planted-s3-dir"
    src.mkdir()
    (src / "planted-s3-name.txt").write_bytes(SECRET * 500)
    r = run_cli(*args, "init", env=moto_target.env)
    assert r.code == 0 and "encrypted" in r.out, r.stderr
    r = run_cli(*args, "backup", str(src), "--host", "planted-s3-host", "--tag", "planted-s3-tag", env=moto_target.env)
    assert r.code == 0, r.stderr
    backend = moto_target.reopen()
    stored = b"".join(backend.get(info.key) for p in ("", ) for info in backend.list(p))
    assert stored and b"planted" not in stored.lower() and SECRET not in stored
    r = run_cli(*args, "restore", "latest", "--target", str(tmp_path / "out"), env=moto_target.env)
    assert r.code == 0, r.stderr
    assert (tmp_path / "out" / str(src).lstrip("/") / "planted-s3-name.txt").read_bytes() == SECRET * 500
    r = run_cli(*args, "check", "--read-data", env=moto_target.env)
    assert r.code == 0, r.out + r.stderr


def test_two_encrypted_writers_race_on_s3_and_both_commits_survive(moto_target: Target, tmp_path: Path) -> None:
    args = moto_target.cli_args()
    assert run_cli(*args, "init", env=moto_target.env).code == 0
    procs = []
    for i in range(2):
        d = tmp_path / f"src{i}"
        d.mkdir()
        for j in range(20):
            (d / f"f{j}").write_bytes(bytes([i, j]) * 3000)
        procs.append(subprocess.Popen([sys.executable, "-m", "casbackup", *args, "backup", str(d), "--tag", f"w{i}"],
                                      env=cli_env(moto_target.env), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    snaps = json.loads(run_cli(*args, "snapshots", "--json", env=moto_target.env).out)
    assert sorted(t for s in snaps for t in s["tags"]) == ["w0", "w1"]
    r = run_cli(*args, "check", "--read-data", env=moto_target.env)
    assert r.code == 0, r.out + r.stderr
