"""Concurrent soak: continuous backups, a verify loop and a compactor running gc, all at once.

Every listing must be continuous and complete (it holds at least what the writers had
committed before it started), and every read must succeed; a failure anywhere fails the test.
Short under CI=true; `--soak` runs it for two minutes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_aptos import tool_env, write_config

from casbackup.backends import LocalBackend
from casbackup.repository import Repository

pytestmark = pytest.mark.slow  # a concurrent soak of many processes

HERE = Path(__file__).resolve().parent
ROLES = ("txn", "epoch", "verify", "compact")


def test_concurrent_soak(tmp_path, soak, cli):
    seconds = 120.0 if soak else (15.0 if os.environ.get("CI") else 25.0)
    repo = tmp_path / "repo"
    Repository.init(LocalBackend(repo, create=True)).close()
    # Listing pins last 30 s here (24 h in the shipped config) so that gc gets to collect.
    config = write_config(tmp_path / "casbackup.yaml", str(repo), {"CASBACKUP_APTOS_PIN_TTL": "30s"})
    procs = {role: subprocess.Popen([sys.executable, str(HERE / "helpers_aptos_soak_worker.py"), role, str(config),
                                     str(tmp_path), str(seconds)], env=tool_env(), stderr=subprocess.PIPE)
             for role in ROLES}
    errors = {}
    for role, p in procs.items():
        _, err = p.communicate(timeout=seconds + 360)
        if p.returncode != 0:
            errors[role] = err.decode()[-2000:]
    results = {role: json.loads((tmp_path / f"{role}.json").read_text()) for role in ROLES
               if (tmp_path / f"{role}.json").exists()}
    failed = {r: (res.get("error"), res.get("traceback")) for r, res in results.items() if not res.get("ok")}
    assert not failed and not errors, (failed, errors)
    print(json.dumps(results, indent=1))
    assert results["txn"]["ranges"] >= 2 and results["epoch"]["epochs"] >= 2
    assert results["verify"]["iterations"] >= 2 and results["verify"]["records_read"] > 0
    assert results["compact"]["compactions"] >= 1 and results["compact"]["gc_runs"] >= 1
    # Afterwards: consistent, complete metadata, and every reachable blob verified.
    st = cli("-r", str(repo), "aptos", "status", "--json")
    assert st.code == 0, st.out + st.stderr
    doc = json.loads(st.out)
    assert doc["storage_state"]["latest_transaction_version"] == results["txn"]["ranges"] * 100 - 1
    assert doc["storage_state"]["latest_epoch_ending_epoch"] == results["epoch"]["epochs"] - 1
    assert cli("-r", str(repo), "check", "--read-data").code == 0
