"""Fixtures: a local repository and the shipped adapter config pointed at it."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_aptos import Adapter, tool_env, write_config  # noqa: E402

from casbackup.backends import LocalBackend  # noqa: E402
from casbackup.repository import Repository  # noqa: E402


@dataclass
class AptosEnv:
    repo: Path
    config: Path
    adapter: Adapter

    def with_env(self, **extra: str) -> Adapter:
        """The same config, with extra variables in the tool's environment."""
        return Adapter(self.config, tool_env(extra))

    def open(self, write: bool = False) -> Repository:
        return Repository.open(LocalBackend(self.repo), write=write)


@pytest.fixture
def aptos_env(tmp_path: Path) -> AptosEnv:
    repo = tmp_path / "repo"
    Repository.init(LocalBackend(repo, create=True)).close()
    config = write_config(tmp_path / "casbackup.yaml", str(repo))
    return AptosEnv(repo, config, Adapter(config))


@dataclass
class Built:
    """A repository holding the synthetic data set, written in-process once per session (copied per test)."""

    template: Path
    saved: dict[str, list[bytes]]

    def copy(self, tmp_path: Path) -> AptosEnv:
        import shutil

        repo = tmp_path / "repo"
        shutil.copytree(self.template, repo)
        config = write_config(tmp_path / "casbackup.yaml", str(repo))
        return AptosEnv(repo, config, Adapter(config))


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    from helpers_aptos_dataset import build

    base = tmp_path_factory.mktemp("aptos-built")
    repo = base / "repo"
    Repository.init(LocalBackend(repo, create=True)).close()
    from helpers_aptos import LibraryStorage

    r = Repository.open(LocalBackend(repo), write=True)
    saved = build(LibraryStorage(r))
    r.close()
    return Built(repo, saved)


def _backend_fixtures():  # type: ignore[no-untyped-def]
    """tests/backends/conftest.py's servers (moto on 127.0.0.1), shared rather than copied.

    Imported as the package module pytest itself uses (`backends.conftest`: tests/ is on sys.path
    through tests/conftest.py), so its relative imports work; the tests here import it by an alias."""
    import importlib

    mod = importlib.import_module("backends.conftest")
    sys.modules["aptos_backend_fixtures"] = mod
    return mod


_bf = _backend_fixtures()
moto_endpoint = _bf.moto_endpoint
make_bucket = _bf.make_bucket
S3_TEST_ENV = _bf.S3_TEST_ENV
