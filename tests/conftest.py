"""Shared fixtures: the CLI through a real subprocess, and the one family of repository fixtures
(`mem_repo`, `local_repo`, `cli_repo`). Also the `slow` marker's switch: tests marked slow
(stateful, soak, stress, long waits) are skipped unless `--run-slow`, `--soak` or
CASBACKUP_SLOW=1 asks for them, so the inner loop `python3 -m pytest -q` stays short; the
README's test command and .ci/run pass `--run-slow` and run everything."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from casbackup.backends import LocalBackend, MemoryBackend
from casbackup.repository import Repository

from helpers_common import IN_CI, PROJECT_ROOT, TEST_PASSWORD, CliResult, cli_env, run_cli  # noqa: F401 - re-exported


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (skipped by default; CASBACKUP_SLOW=1 does the same)")
    parser.addoption("--soak", action="store_true", help="run the slow tests, with long soak/stress variants")


def run_slow(config: pytest.Config) -> bool:
    return bool(config.getoption("--run-slow") or config.getoption("--soak")
                or os.environ.get("CASBACKUP_SLOW", "") == "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip (visibly, with the way to run them) the tests marked slow, unless asked for."""
    if run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (or --soak, or CASBACKUP_SLOW=1)")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def mem_repo() -> Repository:
    """A new repository in memory, open for writing."""
    return Repository.init(MemoryBackend())


@pytest.fixture
def local_repo(tmp_path: Path) -> Repository:
    """A new repository on real disk at tmp_path/"repo", open for writing."""
    return Repository.init(LocalBackend(tmp_path / "repo", create=True))


@pytest.fixture
def cli_repo(tmp_path: Path) -> Path:
    """The path of a new repository on real disk, made by `casbackup -r PATH init` (a subprocess)."""
    path = tmp_path / "repo"
    result = run_cli("-r", str(path), "init")
    assert result.code == 0, result.stderr
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis profiles: small under CI=true, bigger with --soak. Rollback watermarks
    (casbackup/rollback.py) go to a cache directory of this run, never the user's."""
    import tempfile
    from hypothesis import HealthCheck, settings

    os.environ.setdefault("CASBACKUP_PASSWORD", TEST_PASSWORD)  # what the CLI's repositories are made with
    if "CASBACKUP_CACHE_DIR" not in os.environ:
        os.environ["CASBACKUP_CACHE_DIR"] = tempfile.mkdtemp(prefix="casbackup-test-cache-")

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
