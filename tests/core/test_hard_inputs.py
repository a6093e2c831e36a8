"""Honest inputs: validators match the whole text (item 15), non-UTF-8 text arguments are usage
errors while non-UTF-8 file names keep working (item 16), explicit options beat the environment
(item 5, at the spec level: no network)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from casbackup.aptos.names import check_backup_handle, check_name, parse_handle
from casbackup.backends.base import validate_key
from casbackup.backends.cloud import parse_cloud_url, store_spec
from casbackup.backends.command import CommandConfig
from casbackup.cli.common import parse_duration
from casbackup.errors import UsageError

from helpers_common import run_cli

# ---- item 15: a trailing newline passes no validator -------------------------------------------


@pytest.mark.parametrize("check,good", [
    (validate_key, "root"),
    (lambda t: check_name("name", t), "backup_1"),
    (check_backup_handle, "backup_1"),
    (lambda t: parse_handle(t), "backup_1/file_1"),
    (parse_duration, "24h"),
    (lambda t: parse_cloud_url(f"s3://{t}"), "bucket-1"),
    (lambda t: parse_cloud_url(f"s3://bucket-1/{t}"), "prefix"),
    (lambda t: parse_cloud_url(f"gs://{t}"), "bucket_1"),
    (lambda t: parse_cloud_url(f"az://{t}"), "container-1"),
])
def test_trailing_newline_is_refused(check, good: str) -> None:  # type: ignore[no-untyped-def]
    check(good)
    for bad in (good + "\n", good + "\r\n", good + "\n\n"):
        with pytest.raises(UsageError):
            check(bad)


def test_command_backend_env_names_full_match() -> None:
    from casbackup.backends.command import REQUIRED

    cmds = {k: "true" for k in REQUIRED}
    CommandConfig.from_dict({"commands": cmds, "env": {"GOOD_NAME": "x"}})
    with pytest.raises(UsageError, match="UPPER_CASE"):
        CommandConfig.from_dict({"commands": cmds, "env": {"GOOD_NAME\n": "x"}})


def test_snapshot_id_with_newline_is_a_usage_error(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert run_cli("-r", repo, "init").code == 0
    r = run_cli("-r", repo, "ls", "abc\n")
    assert r.code == 2 and r.stderr.count("\n") == 1, r.stderr


def test_grace_with_newline_is_a_usage_error(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert run_cli("-r", repo, "init").code == 0
    r = run_cli("-r", repo, "gc", "--dry-run", "--grace", "24h\n")
    assert r.code == 2 and r.stderr.startswith("casbackup: error:") and r.stderr.count("\n") == 1, r.stderr


# ---- item 16: non-UTF-8 arguments ----------------------------------------------------------------

FF = os.fsdecode(b"\xff")  # what Python makes of an argv byte that is not UTF-8


@pytest.fixture
def repo(cli_repo: Path) -> str:
    path = str(cli_repo)
    assert run_cli("-r", path, "meta", "put", "ns", "k", "v").code == 0
    return path


@pytest.mark.parametrize("args", [
    lambda r: ["-r", FF, "snapshots"],
    lambda r: ["-r", f"/tmp/x{FF}", "init"],
    lambda r: ["-r", r, "-o", f"a{FF}=b", "snapshots"],
    lambda r: ["-r", r, "meta", "put", FF, "k", "v"],
    lambda r: ["-r", r, "meta", "put", "ns", f"k{FF}", "v"],
    lambda r: ["-r", r, "meta", "get", "ns", FF],
    lambda r: ["-r", r, "meta", "rm", FF, "k"],
    lambda r: ["-r", r, "meta", "list", FF],
    lambda r: ["-r", r, "backup", "--tag", FF, "/etc/hostname"],
    lambda r: ["-r", r, "backup", "--host", FF, "/etc/hostname"],
])
@pytest.mark.slow
def test_non_utf8_text_argument_is_a_usage_error(repo: str, args) -> None:  # type: ignore[no-untyped-def]
    r = run_cli(*args(repo))
    assert r.code == 2, (r.code, r.stderr)
    assert r.stderr.startswith("casbackup: error:") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr


@pytest.mark.slow
def test_non_utf8_file_names_back_up_and_restore(repo: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    odd = os.path.join(os.fsencode(src), b"dir\xfe")
    os.makedirs(odd)
    with open(os.path.join(odd, b"f\xff"), "wb") as f:
        f.write(b"data")
    r = run_cli("-r", repo, "backup", str(src))
    assert r.code == 0, r.stderr
    cat = run_cli("-r", repo, "cat", "latest", os.fsdecode(os.path.join(odd, b"f\xff")))
    assert cat.code == 0 and cat.stdout == b"data", cat.stderr
    target = tmp_path / "out"
    r = run_cli("-r", repo, "restore", "latest", "--target", str(target))
    assert r.code == 0, r.stderr
    restored = os.path.join(os.fsencode(target), os.fsencode(src).lstrip(b"/"), b"dir\xfe", b"f\xff")
    with open(restored, "rb") as f:
        assert f.read() == b"data"


# ---- item 5: an explicit option always wins over the environment -------------------------------

OPT = "http://127.0.0.1:9000"
ENV = "http://127.0.0.1:1"

S3_TWINS = [
    ("endpoint", OPT, "AWS_ENDPOINT_URL_S3", ENV, {"endpoint": OPT, "aws_endpoint_url_s3": OPT}),
    ("endpoint", OPT, "AWS_ENDPOINT_URL", ENV, {"endpoint": OPT, "aws_endpoint_url_s3": OPT}),
    ("endpoint", OPT, "AWS_ENDPOINT", ENV, {"endpoint": OPT, "aws_endpoint_url_s3": OPT}),
    ("region", "eu-north-1", "AWS_REGION", "us-west-2", {"region": "eu-north-1", "default_region": "eu-north-1"}),
    ("region", "eu-north-1", "AWS_DEFAULT_REGION", "us-west-2", {"region": "eu-north-1", "default_region": "eu-north-1"}),
    ("virtual_hosted_style", "false", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true",
     {"virtual_hosted_style_request": False}),
]


@pytest.mark.parametrize("option,value,var,env_value,expect", S3_TWINS)
def test_s3_option_beats_environment(option: str, value: str, var: str, env_value: str, expect: dict) -> None:  # type: ignore[type-arg]
    opts = {option: value, "allow_http": "true"} if option == "endpoint" else {option: value}
    spec = store_spec("s3://bkt/p", opts, {var: env_value})
    for k, v in expect.items():
        assert spec.config[k] == v, (k, spec.config)


def test_s3_environment_is_used_without_an_option_and_allow_http_option_wins() -> None:
    spec = store_spec("s3://bkt/p", {}, {"AWS_ENDPOINT_URL_S3": OPT, "AWS_ALLOW_HTTP": "true"})
    assert spec.config["endpoint"] == spec.config["aws_endpoint_url_s3"] == OPT
    with pytest.raises(UsageError, match="plain HTTP"):
        store_spec("s3://bkt/p", {"allow_http": "false"}, {"AWS_ENDPOINT_URL_S3": OPT, "AWS_ALLOW_HTTP": "true"})


def test_gcs_and_azure_options_beat_environment() -> None:
    gs = store_spec("gs://bkt/p", {"base_url": "https://a.example"}, {"GOOGLE_BASE_URL": "https://b.example"})
    assert gs.config["base_url"] == "https://a.example"
    env = {"AZURE_STORAGE_ENDPOINT": "https://b.example", "AZURE_STORAGE_ACCOUNT_NAME": "envacct",
           "AZURE_STORAGE_USE_EMULATOR": "true"}
    az = store_spec("az://cont/p", {"endpoint": "https://a.example", "account_name": "optacct",
                                    "use_emulator": "false"}, env)
    assert az.config == {"endpoint": "https://a.example", "account_name": "optacct", "use_emulator": False}
    az = store_spec("az://cont/p", {"endpoint": "https://a.example"}, {"AZURE_ENDPOINT": "https://b.example"})
    assert az.config["endpoint"] == "https://a.example" and az.config["use_emulator"] is False


def test_empty_option_is_refused_not_replaced_by_environment() -> None:
    with pytest.raises(UsageError, match="empty"):
        store_spec("s3://bkt/p", {"endpoint": ""}, {"AWS_ENDPOINT_URL_S3": OPT})


def test_built_s3_store_keeps_the_explicit_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client itself reads AWS_ENDPOINT_URL_S3 and prefers it to `endpoint`: the built store's
    configuration must name ours under both keys (no request is sent)."""
    from obstore.store import S3Store

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", ENV)
    spec = store_spec("s3://bkt/p", {"endpoint": OPT, "allow_http": "true"})
    store = S3Store(spec.url.bucket, config=spec.config)
    cfg = {k.lower(): v for k, v in store.config.items()}
    assert cfg.get("endpoint") == OPT and cfg.get("endpoint_url_s3") == OPT, cfg
