"""Shared fixtures: the CLI through a real subprocess, repositories on real disk and in memory."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from casbackup.backends import LocalBackend, MemoryBackend
from casbackup.repository import Repository

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run long soak/stress variants")


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))


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
    env.update(extra or {})
    return env


def run_cli(*args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: str | os.PathLike[str] | None = None, timeout: float = 120) -> CliResult:
    """Run `casbackup ARGS` as a real subprocess of this checkout's code."""
    proc = subprocess.run([sys.executable, "-m", "casbackup", *args], input=input, capture_output=True,
                          env=cli_env(env), cwd=cwd, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def mem_repo() -> Repository:
    return Repository.init(MemoryBackend())


@pytest.fixture
def local_repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(tmp_path / "repo", create=True))


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis profiles: small under CI=true, bigger with --soak."""
    from hypothesis import HealthCheck, settings

    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                        HealthCheck.filter_too_much])
    settings.register_profile("casb-ci", max_examples=100, stateful_step_count=100, **common)
    settings.register_profile("casb-dev", max_examples=100, stateful_step_count=100, **common)
    settings.register_profile("casb-soak", max_examples=1000, stateful_step_count=150, **common)
    if config.getoption("--soak", default=False):
        settings.load_profile("casb-soak")
    elif IN_CI:
        settings.load_profile("casb-ci")
    else:
        settings.load_profile("casb-dev")
