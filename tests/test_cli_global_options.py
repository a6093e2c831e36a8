"""Global options after the subcommand, `--json` before it (restic style), and `generate`'s shell
completion scripts, all through the real CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from casbackup.cli import hoist_global_options
from helpers_common import PROJECT_ROOT, cli_env, run_cli


def test_global_options_after_the_subcommand(tmp_path: Path, cli_repo: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("hello")
    r = run_cli("backup", str(src), "-r", str(cli_repo), "-q")
    assert r.code == 0, r.stderr
    assert r.stderr == ""  # -q after the subcommand silences the summary line
    r = run_cli("snapshots", "-r", str(cli_repo), "--json")
    assert r.code == 0, r.stderr
    assert len(json.loads(r.stdout)) == 1
    r = run_cli("snapshots", f"--repo={cli_repo}", "--no-pin", "--json")
    assert r.code == 0, r.stderr
    assert "--no-pin" in r.stderr


def test_json_as_a_global_option(tmp_path: Path, cli_repo: Path) -> None:
    r = run_cli("--json", "-r", str(cli_repo), "snapshots")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout) == []
    r = run_cli("--json", "-r", str(cli_repo), "cat", "latest", "/x")
    assert r.code == 2 and "--json" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("snapshots", "-r")
    assert r.code == 2 and "'-r' requires an argument" in r.stderr and "Traceback" not in r.stderr


def test_hoisting_leaves_values_and_double_dash_alone() -> None:
    # the value of a subcommand's own option is never taken for a global option
    assert hoist_global_options(["backup", "--exclude", "-q", "x"]) == ["backup", "--exclude", "-q", "x"]
    assert hoist_global_options(["backup", "x", "--", "-q"]) == ["backup", "x", "--", "-q"]
    assert hoist_global_options(["ls", "latest", "-r", "R", "-o", "k=v"]) == ["-r", "R", "-o", "k=v", "ls", "latest"]
    assert hoist_global_options(["--json", "snapshots", "--", "x"]) == ["snapshots", "--json", "--", "x"]
    # the Aptos adapter's argv is never rewritten (it has its own --no-pin)
    assert hoist_global_options(["aptos", "--no-pin", "x"]) == ["aptos", "--no-pin", "x"]


def test_generate_writes_three_completion_scripts(tmp_path: Path) -> None:
    files = {sh: tmp_path / f"casbackup.{sh}" for sh in ("bash", "zsh", "fish")}
    r = run_cli("generate", "--bash-completion", str(files["bash"]), "--zsh-completion", str(files["zsh"]),
                "--fish-completion", str(files["fish"]))
    assert r.code == 0, r.stderr
    assert "_casbackup_completion" in files["bash"].read_text()
    assert "#compdef casbackup" in files["zsh"].read_text()
    assert "complete" in files["fish"].read_text() and "casbackup" in files["fish"].read_text()
    r = run_cli("generate")
    assert r.code == 2 and "nothing to generate" in r.stderr and "Traceback" not in r.stderr


def test_bash_completion_completes_a_subcommand(tmp_path: Path) -> None:
    script = tmp_path / "casbackup.bash"
    assert run_cli("generate", "--bash-completion", str(script)).code == 0
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "casbackup"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m casbackup "$@"\n')
    wrapper.chmod(0o755)
    env = cli_env({"PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"})
    probe = (f"source {script}; COMP_WORDS=(casbackup snap); COMP_CWORD=1; _casbackup_completion casbackup; "
             'printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe], capture_output=True, env=env, cwd=PROJECT_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == ["snapshots"]


@pytest.mark.parametrize("word", ["gen"])
def test_bash_completion_protocol_directly(word: str) -> None:
    r = run_cli(env={"_CASBACKUP_COMPLETE": "bash_complete", "COMP_WORDS": f"casbackup {word}", "COMP_CWORD": "1"})
    assert r.code == 0, r.stderr
    assert "plain,generate" in r.out
