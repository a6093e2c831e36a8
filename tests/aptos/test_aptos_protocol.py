"""The adapter commands, driven exactly as the tool drives them, through the shipped config."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers_aptos_dataset import line, verify
from helpers_aptos import SHIPPED_CONFIG, STRICT, AdapterError, LibraryStorage, load_lines, sync_and_load_strict, sync_raw

from casbackup.aptos.names import NS_FILES
from casbackup.aptos.storage import AptosStorage, FileValue
from casbackup.layout import pack_key
from helpers_common import head_location, rewrite_stored_blob


def test_shipped_config_is_complete():
    cfg = yaml.safe_load(SHIPPED_CONFIG.read_text())
    assert set(cfg["commands"]) == {"create_backup", "create_for_write", "open_for_read", "save_metadata_line",
                                    "list_metadata_files", "backup_metadata_file"}
    assert "CASBACKUP_REPO" in {e["key"] for e in cfg["env_vars"]}
    for op, cmd in cfg["commands"].items():
        assert "exec ${CASBACKUP_BIN:-casbackup}" in cmd and f"aptos {op.replace('_', '-')}" in cmd
        assert "||" not in cmd  # no swallowed failures


@pytest.mark.slow
def test_dataset_roundtrip(built, tmp_path, cli):
    env = built.copy(tmp_path)
    a = env.adapter
    raw = sync_raw(a)
    assert raw == {f"metadata/{n}": b"".join(lines) for n, lines in built.saved.items()}  # byte for byte
    view = {h: load_lines(data) for h, data in raw.items()}
    got = verify(LibraryStorage(env.open()), view)  # data reads in-process; the adapter path is tested below
    assert got == {"transactions": 600, "epochs": 4, "records": 600}
    kinds = {next(iter(m)) for lines in view.values() for m in lines}
    assert kinds == {"TransactionBackup", "EpochEndingBackup", "StateSnapshotBackup", "Identity",
                     "CompactionTimestamps"}
    r = cli("-r", str(env.repo), "aptos", "status", "--json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.out)
    assert doc["ok"] and doc["problems"] == []
    assert doc["storage_state"] == {"latest_epoch_ending_epoch": 3, "latest_transaction_version": 599,
                                    "latest_state_snapshot_epoch": 2, "latest_state_snapshot_version": 250}
    assert doc["transaction"]["ranges"] == 6 and doc["transaction"]["gaps"] == []
    human = cli("-r", str(env.repo), "aptos", "status")
    assert human.code == 0 and "latest transaction version: 599" in human.out


def test_status_reports_gaps_and_fails(aptos_env, cli):
    a = aptos_env.adapter
    a.save_metadata_lines("transaction_0-99.meta", [line("TransactionBackup", first_version=0, last_version=99,
                                                         manifest="x/m")])
    a.save_metadata_lines("transaction_200-299.meta", [line("TransactionBackup", first_version=200,
                                                            last_version=299, manifest="y/m")])
    r = cli("-r", str(aptos_env.repo), "aptos", "status", "--json")
    assert r.code == 14
    assert json.loads(r.out)["transaction"]["gaps"] == [[100, 199]]
    assert "transaction gap 100..199" in r.stderr


@pytest.mark.slow
def test_one_transaction_backup_written_through_the_adapter(aptos_env):
    """The tool's write order through the shipped config: chunks and proofs, manifest, metadata line."""
    import random

    from helpers_aptos_dataset import write_transaction_backup

    a = aptos_env.adapter
    ln = write_transaction_backup(a, 0, 99, 50, random.Random(1))
    assert a.save_metadata_lines("transaction_0-99.meta", [ln]) == "metadata/transaction_0-99.meta"
    view = sync_and_load_strict(a)
    assert verify(a, view) == {"transactions": 100, "epochs": 0, "records": 100}


def test_multi_chunk_file_roundtrip(aptos_env):
    a = aptos_env.adapter
    bh = a.create_backup("transaction_0-.beef")
    data = os.urandom(9 * 1024 * 1024 + 123)  # three 4 MiB pieces
    h = a.create_for_write(bh, "0-999.chunk", data)
    assert h == f"{bh}/0-999.chunk"
    assert a.open_for_read(h) == data


@pytest.mark.parametrize("op,env,msg", [
    ("create_backup", {"BACKUP_NAME": "../etc"}, "invalid backup handle"),
    ("create_backup", {"BACKUP_NAME": "metadata"}, "reserved"),
    ("open_for_read", {"FILE_HANDLE": "/etc/passwd"}, "invalid file handle"),
    ("open_for_read", {"FILE_HANDLE": "abc/../../etc/passwd"}, "invalid file handle"),
    ("open_for_read", {"FILE_HANDLE": "metadata/../x"}, "invalid file handle"),
    ("open_for_read", {}, "FILE_HANDLE is not set"),
    ("backup_metadata_file", {"FILE_NAME": "x"}, "invalid metadata file name"),
    ("list_metadata_files", {"CASBACKUP_APTOS_PIN_TTL": "forever"}, "invalid duration"),
])
def test_bad_input_is_a_clear_error(aptos_env, op, env, msg):
    with pytest.raises(AdapterError) as ei:
        aptos_env.adapter.run(op, env)
    assert ei.value.code == 2 and msg in ei.value.stderr
    assert "Traceback" not in ei.value.stderr


@pytest.mark.slow
def test_write_rejections_publish_nothing(aptos_env):
    a = aptos_env.adapter
    with pytest.raises(AdapterError, match="unknown backup handle"):
        a.create_for_write("transaction_0-.dead", "0-9.chunk", b"x")
    bh = a.create_backup("transaction_0-.a1b2")
    with pytest.raises(AdapterError, match="invalid file name"):
        a.create_for_write(bh, "../../x", b"x")
    with pytest.raises(AdapterError, match="no data was received"):
        a.create_for_write(bh, "0-9.chunk", b"")
    h = a.create_for_write(bh, "0-9.chunk", b"records")
    with pytest.raises(AdapterError, match="already exists"):
        a.create_for_write(bh, "0-9.chunk", b"other records")
    assert a.open_for_read(h) == b"records"
    with pytest.raises(AdapterError, match="newline"):
        a.save_metadata_lines("transaction_0-9.meta", [b'{"TransactionBackup":{}}\n', b'{"Trans'])
    with pytest.raises(AdapterError, match="carriage return"):
        a.save_metadata_lines("transaction_0-9.meta", [b'{"a":1}\r\n'])
    with pytest.raises(AdapterError, match="no metadata lines"):
        a.save_metadata_lines("transaction_0-9.meta", [])
    assert a.list_metadata_files() == []
    with pytest.raises(AdapterError, match="no file with handle"):
        a.open_for_read("metadata/transaction_0-9.meta")


def test_backup_handle_collision_gets_a_fresh_handle(aptos_env):
    a = aptos_env.adapter
    first = a.create_backup("transaction_0-.a1b2")
    second = a.create_backup("transaction_0-.a1b2")  # the tool's 16-bit suffix collided
    assert first == "transaction_0-.a1b2" and second.startswith("transaction_0-.a1b2-") and second != first
    a.create_for_write(first, "0-9.chunk", b"one")
    a.create_for_write(second, "0-9.chunk", b"two")
    assert a.open_for_read(f"{first}/0-9.chunk") == b"one"  # nothing overwritten
    assert a.open_for_read(f"{second}/0-9.chunk") == b"two"


@pytest.mark.slow
def test_metadata_names_denote_one_content(aptos_env):
    a = aptos_env.adapter
    ln = line("Identity", id="ab" * 16)
    assert a.save_metadata_lines("identity.meta", [ln]) == "metadata/identity.meta"
    assert a.save_metadata_lines("identity.meta", [ln]) == "metadata/identity.meta"  # a retry: fine
    with pytest.raises(AdapterError, match="different content"):
        a.save_metadata_lines("identity.meta", [line("Identity", id="cd" * 16)])
    a.backup_metadata_file("metadata/identity.meta")
    a.backup_metadata_file("metadata/identity.meta")  # already moved: idempotent, like a retried move
    assert a.list_metadata_files() == []
    with pytest.raises(AdapterError, match="replaced by compaction"):
        a.save_metadata_lines("identity.meta", [line("Identity", id="cd" * 16)])
    a.save_metadata_lines("identity.meta", [ln])  # the same content again: live again
    assert a.list_metadata_files() == ["metadata/identity.meta"]
    with pytest.raises(AdapterError, match="no metadata file"):
        a.backup_metadata_file("metadata/never_saved.meta")


def _corrupt_first_chunk(env, handle: str, how: str) -> str:
    repo = env.open()
    snap = AptosStorage(repo).head()
    value = FileValue.decode(snap.get(NS_FILES, handle), "x")
    refs, body = repo.store.get_structured(value.file, snap.generation.id)
    chunk_id = body["chunks"][0][0].hex()
    if how == "missing":  # format v2: the chunk's pack is lost
        (env.repo / pack_key(head_location(repo, chunk_id).pack)).unlink()
    else:
        rewrite_stored_blob(repo, chunk_id, lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]))
    return chunk_id


@pytest.mark.parametrize("how,code", [("missing", 4), ("corrupt", 5)])
def test_read_of_damaged_file_fails_loudly(aptos_env, how, code):
    a = aptos_env.adapter
    bh = a.create_backup("transaction_0-.a1b2")
    h = a.create_for_write(bh, "0-9.chunk", os.urandom(1000))
    chunk_id = _corrupt_first_chunk(aptos_env, h, how)
    proc = subprocess.run(["bash", "-c", STRICT + a.commands["open_for_read"]], capture_output=True,
                          env={**a.base_env, **a.env_vars, "FILE_HANDLE": h})
    assert proc.returncode == code
    assert proc.stdout == b""  # nothing unverified was written
    assert chunk_id in proc.stderr.decode()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if not p.is_dir()}


@pytest.mark.slow
def test_reads_never_write_and_a_listing_writes_only_its_pin(built, tmp_path, cli):
    env = built.copy(tmp_path)
    before = _tree(env.repo)
    quiet = env.with_env(CASBACKUP_APTOS_NO_PIN="1")
    handles = quiet.list_metadata_files()
    for h in handles:
        quiet.open_for_read(h)
    assert cli("-r", str(env.repo), "aptos", "--no-pin", "status").code == 0
    assert _tree(env.repo) == before
    env.adapter.list_metadata_files()
    after = _tree(env.repo)
    changed = (set(after) ^ set(before)) | {k for k in before if k in after and after[k] != before[k]}
    assert changed and all(k.startswith("pins/") for k in changed), changed


def test_pin_outlives_the_listing_process(aptos_env, cli):
    a = aptos_env.adapter
    a.save_metadata_lines("identity.meta", [line("Identity", id="ab" * 16)])
    a.list_metadata_files()
    r = cli("-r", str(aptos_env.repo), "pins", "--json")
    pins = json.loads(r.out)
    assert len(pins) == 1 and pins[0]["state"] == "live" and pins[0]["purpose"] == "aptos list-metadata-files"
    created = time.strptime(pins[0]["created"], "%Y-%m-%dT%H:%M:%SZ")
    expires = time.strptime(pins[0]["expires"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs((time.mktime(expires) - time.mktime(created)) - 86400) <= 2  # 24 h by default


_DYING_WRITER = r"""
import os, subprocess, sys
proc = subprocess.Popen(["bash", "-c", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
handle = proc.stdout.read()
proc.stdin.write(sys.argv[2].encode()); proc.stdin.flush()
print(proc.pid, handle.decode().strip(), flush=True)
os._exit(0)  # the tool dies mid-write: its end of the pipe closes with it
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the writer-death check reads /proc")
@pytest.mark.parametrize("op,env,data", [
    ("create_for_write", {"BACKUP_HANDLE": "transaction_0-.a1b2", "FILE_NAME": "0-9.chunk"}, "half a chunk"),
    ("save_metadata_line", {"FILE_NAME": "identity.meta"}, '{"Identity":{"id":"abab"}}\n'),
])
@pytest.mark.slow
def test_writer_death_publishes_nothing(aptos_env, op, env, data):
    a = aptos_env.adapter
    a.create_backup("transaction_0-.a1b2")
    full_env = {**a.base_env, **a.env_vars, **env}
    out = subprocess.run([sys.executable, "-c", _DYING_WRITER, STRICT + a.commands[op], data],
                         capture_output=True, env=full_env, timeout=60)
    pid, handle = out.stdout.decode().split()
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break
        except OSError:
            break
        time.sleep(0.05)
    with pytest.raises(AdapterError, match="no file with handle"):
        a.open_for_read(handle)
    assert a.list_metadata_files() == []
