"""What an operator deploying the adapter relies on: cheap calls, unsigned public reads, old backups."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from helpers_aptos import PROJECT_ROOT, STRICT, tool_env

# Modules an adapter call must never load: the files layer, the object-store client, the config
# parser and the commands of other groups. Each costs import time in every one of thousands of calls.
HEAVY = ("casbackup.files", "casbackup.cli.files", "casbackup.cli.core", "casbackup.gc", "casbackup.check",
         "casbackup.repair", "casbackup.aptos.legacy", "casbackup.aptos.metadata", "casbackup.backends.cloud",
         "obstore", "yaml", "pyfastcdc")


def imported_modules(command: str, env: dict[str, str]) -> set[str]:
    """Modules the real adapter process imports, from `python -X importtime` on its stderr."""
    proc = subprocess.run(["bash", "-c", STRICT + command], env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return {m.group(1).strip() for m in re.finditer(r"^import time:[^|]*\|[^|]*\|\s*(\S+)\s*$",
                                                    proc.stderr.decode(), re.M)}


def test_adapter_calls_import_only_what_they_need(aptos_env):
    a = aptos_env.adapter
    handle = a.create_for_write(a.create_backup("transaction_0-.beef"), "0-9.chunk", os.urandom(1024))
    a.save_metadata_lines("transaction_0-9.meta", [b'{"TransactionBackup":{"first_version":0,"last_version":9,'
                                                   b'"manifest":"x/m"}}\n'])
    env = {**tool_env(), **a.env_vars}
    for op, extra in (("open_for_read", {"FILE_HANDLE": handle}), ("list_metadata_files", {}),
                      ("create_backup", {"BACKUP_NAME": "transaction_10-.beef"})):
        mods = imported_modules(a.commands[op], {**env, **extra})
        assert "casbackup.aptos.storage" in mods  # the measurement really saw the call
        loaded = sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))
        assert loaded == [], f"{op} imported {loaded}"


def test_other_commands_still_load(cli, tmp_path):
    """Lazy loading must not lose a command: --help lists every group, and each runs."""
    r = cli("--help")
    assert r.code == 0
    for name in ("init", "gc", "check", "backup", "restore", "snapshots", "aptos"):
        assert re.search(rf"^\s+{name}\b", r.out, re.M), f"{name} missing from --help"
    assert cli("-r", str(tmp_path / "r"), "init").code == 0
    assert cli("-r", str(tmp_path / "r"), "snapshots").code == 0
    bad = cli("-r", str(tmp_path / "r"), "no-such-command")
    assert bad.code == 2 and "no-such-command" in bad.stderr


def test_status_of_an_empty_repository_prints_no_python_none(aptos_env, cli):
    text = cli("-r", str(aptos_env.repo), "aptos", "status")
    assert text.code == 0, text.stderr
    assert "None" not in text.out
    assert text.out.splitlines() == [
        "generation 0: 0 metadata files, 0 lines",
        "latest epoch ending epoch: none",
        "latest transaction version: none",
        "latest state snapshot: none (0 state snapshots)",
        "transaction: 0 ranges, 0 duplicate lines",
        "epoch_ending: 0 ranges, 0 duplicate lines",
        "identity: none",
        "latest compaction: none",
    ]
    doc = json.loads(cli("-r", str(aptos_env.repo), "aptos", "status", "--json").out)
    assert set(doc) == {"ok", "generation", "metadata_files", "lines", "storage_state", "transaction", "epoch_ending",
                        "state_snapshots", "identity", "latest_compaction", "unparsable", "problems"}
    assert doc["storage_state"] == dict.fromkeys(("latest_epoch_ending_epoch", "latest_transaction_version",
                                                  "latest_state_snapshot_epoch", "latest_state_snapshot_version"))
    assert doc["transaction"] == {"ranges": 0, "first": None, "last": None, "gaps": [], "overlaps": [],
                                  "conflicts": [], "duplicates": 0}


def _s3(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="casbackup-test",
                        aws_secret_access_key="casbackup-test-secret")


def _make_public(endpoint: str, bucket: str) -> None:
    """What a public Aptos bucket grants everyone: list and get, nothing else."""
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject"], "Resource": [f"arn:aws:s3:::{bucket}/*"]},
        {"Effect": "Allow", "Principal": "*", "Action": ["s3:ListBucket"], "Resource": [f"arn:aws:s3:::{bucket}"]}]}
    _s3(endpoint).put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def _bucket_state(endpoint: str, bucket: str) -> dict[str, str]:
    s3 = _s3(endpoint)
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return out


@pytest.mark.slow
def test_public_bucket_reads_unsigned_and_writes_nothing(moto_endpoint, tmp_path, cli):
    from aptos_backend_fixtures import S3_TEST_ENV, make_bucket  # loaded by this folder's conftest

    from helpers_aptos import Adapter, AdapterError, write_config

    bucket = make_bucket(moto_endpoint)
    url = f"s3://{bucket}/aptos"
    base = {k: v for k, v in tool_env().items() if not k.startswith("AWS_")}
    base.update(HOME=str(tmp_path), AWS_ENDPOINT_URL=moto_endpoint, AWS_ALLOW_HTTP="true")
    signed = {**base, **S3_TEST_ENV}
    assert cli("-r", url, "init", env=signed).code == 0
    writer = Adapter(write_config(tmp_path / "writer.yaml", url), signed)
    data = os.urandom(300_000)
    handle = writer.create_for_write(writer.create_backup("transaction_0-.beef"), "0-9.chunk", data)
    meta = b'{"TransactionBackup":{"first_version":0,"last_version":9,"manifest":"%s"}}\n' % handle.encode()
    writer.save_metadata_lines("transaction_0-9.meta", [meta])

    # The shipped public-read config, with what the chart sets; no AWS credentials anywhere.
    public = Adapter(PROJECT_ROOT / "tools" / "aptos" / "helm" / "s3-public.yaml",
                     {**base, "BUCKET": bucket, "SUB_DIR": "aptos"})
    _make_public(moto_endpoint, bucket)
    before = _bucket_state(moto_endpoint, bucket)
    assert public.list_metadata_files() == ["metadata/transaction_0-9.meta"]
    assert public.open_for_read("metadata/transaction_0-9.meta") == meta
    assert public.open_for_read(handle) == data
    assert _bucket_state(moto_endpoint, bucket) == before  # no pin, no clock probe, nothing

    # Any write is refused before a request is sent, with one clear line.
    for attempt in (lambda: public.create_backup("transaction_10-.beef"),
                    lambda: public.save_metadata_lines("transaction_10-19.meta", [meta])):
        try:
            attempt()
            raise AssertionError("an unsigned write succeeded")
        except AdapterError as exc:
            assert exc.code == 2 and "skip_signature=true" in exc.stderr and "Traceback" not in exc.stderr
    r = cli("-r", url, "-o", "skip_signature=true", "gc", env=base)
    assert r.code == 2 and "skip_signature=true" in r.stderr
    assert _bucket_state(moto_endpoint, bucket) == before
    # Signed requests are really not sent: without skip_signature the same reads need credentials.
    assert cli("-r", url, "--no-pin", "aptos", "list-metadata-files", env=base).code != 0
