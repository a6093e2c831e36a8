"""An explicit `-o endpoint=URL` is where the writes go, whatever AWS_ENDPOINT_URL_S3 says (item 5),
and missing credentials are named against a real S3 endpoint (item 17). Loopback only."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from .conftest import S3_TEST_ENV, make_bucket

from helpers_common import cli_env, run_cli

pytestmark = pytest.mark.slow  # CLI subprocesses against moto


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_explicit_endpoint_beats_aws_endpoint_url_s3(moto_endpoint: str) -> None:
    bucket = make_bucket(moto_endpoint)
    elsewhere = f"http://127.0.0.1:{_closed_port()}"  # nothing listens there
    env = {**S3_TEST_ENV, "AWS_ENDPOINT_URL_S3": elsewhere, "AWS_ENDPOINT_URL": elsewhere}
    url = f"s3://{bucket}/repo"
    opts = ["-o", f"endpoint={moto_endpoint}", "-o", "allow_http=true"]
    r = run_cli("-r", url, *opts, "init", env=env)
    assert r.code == 0, r.stderr
    assert run_cli("-r", url, *opts, "meta", "put", "ns", "k", "v", env=env).code == 0
    got = run_cli("-r", url, *opts, "meta", "get", "ns", "k", env=env)
    assert got.code == 0 and got.stdout == b"v", got.stderr


def test_moto_without_credentials_names_the_variables(moto_endpoint: str) -> None:
    bucket = make_bucket(moto_endpoint)
    env = {k: v for k, v in cli_env().items() if not k.startswith("AWS_")}
    env["AWS_METADATA_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"  # no metadata server either
    proc = subprocess.run([sys.executable, "-m", "casbackup", "-r", f"s3://{bucket}/repo", "-o",
                           f"endpoint={moto_endpoint}", "-o", "allow_http=true", "snapshots"],
                          env=env, capture_output=True, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 8 and err.count("\n") == 1, err
    assert "AWS_ACCESS_KEY_ID" in err and "credentials" in err, err
