"""Shared fixtures: the CLI through a real subprocess, repositories on real disk and in memory."""
from __future__ import annotations

from pathlib import Path

import pytest

from casbackup.backends import LocalBackend, MemoryBackend
from casbackup.repository import Repository

from cbtesting import IN_CI, PROJECT_ROOT, CliResult, cli_env, run_cli  # noqa: F401 - re-exported


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run long soak/stress variants")


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))


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
