"""Helpers every test folder can import (a unique module name: each folder has a conftest)."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class CliResult:
    code: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CASBACKUP_REPO", None)
    env.setdefault("CASBACKUP_PROGRESS_FPS", "0")  # no --json status lines: tests parse the summary alone
    env.update(extra or {})
    return env


def run_cli(*args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: str | os.PathLike[str] | None = None, timeout: float = 120) -> CliResult:
    """Run `casbackup ARGS` as a real subprocess of this checkout's code."""
    proc = subprocess.run([sys.executable, "-m", "casbackup", *args], input=input, capture_output=True,
                          env=cli_env(env), cwd=cwd, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))
