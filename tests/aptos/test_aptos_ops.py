"""What an operator deploying the adapter relies on: cheap calls, unsigned public reads, old backups."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from aptos_harness import STRICT, tool_env

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
