"""Both seed races (shared/seeds/), replayed with deterministic interleavings.

Each race runs twice: against the tool's LocalFs layout as it is today (the control: the race
happens and nobody is told), and against casbackup through the shipped adapter config (it
cannot happen; where protection is switched off, the read fails loudly instead).
"""
from __future__ import annotations

import json
import random

import pytest
from helpers_aptos_dataset import line, verify, write_transaction_backup
from helpers_aptos import AdapterError, LibraryStorage, load_lines, sync_and_load_strict
from helpers_aptos_legacy import LegacyLocalFs, legacy_sync_and_load

from casbackup.aptos.names import NS_METADATA
from casbackup.aptos.storage import FileValue
from helpers_common import stored_anywhere


def _txn(a: int, b: int, manifest: str = "") -> bytes:
    return line("TransactionBackup", first_version=a, last_version=b, manifest=manifest or f"t{a}/transaction.manifest")


COMPACTED = [_txn(i * 100, i * 100 + 99) for i in range(5)]
COMPACTED_NAME = "transaction_compacted_0-499.meta"


# ---- (a) verify lists and reads while backup writes a multi-line metadata file ----------------

def test_race_a_control_legacy_reader_parses_a_partial_file(tmp_path):
    st = LegacyLocalFs(tmp_path / "legacy")
    seen: dict[str, list] = {}
    warnings: list[str] = []

    def verify_runs_now(i: int) -> None:
        if i == 1:  # the writer has created the file and written its first line
            seen.update(legacy_sync_and_load(st, warnings))

    st.save_metadata_lines(COMPACTED_NAME, COMPACTED, pause=verify_runs_now)
    # The race happened: one of five ranges, parsed without any error or warning.
    assert list(seen) == [f"metadata/{COMPACTED_NAME}"]
    assert len(seen[f"metadata/{COMPACTED_NAME}"]) == 1 and warnings == []
    assert len(load_lines(st.open_for_read(f"metadata/{COMPACTED_NAME}"))) == 5  # the file was fine afterwards


@pytest.mark.slow
def test_race_a_casbackup_reader_sees_all_lines_or_none(aptos_env):
    a = aptos_env.adapter
    a.save_metadata_lines("identity.meta", [line("Identity", id="ab" * 16)])
    writer = a.start_write("save_metadata_line", {"FILE_NAME": COMPACTED_NAME})
    assert writer.handle == f"metadata/{COMPACTED_NAME}"
    views = []
    for i, ln in enumerate(COMPACTED):
        writer.send(ln)
        if i in (0, 2, 4):
            views.append(sync_and_load_strict(a))  # verify lists and reads at this instant
    writer.send(COMPACTED[0][:20])  # even a partial extra line in flight
    views.append(sync_and_load_strict(a))
    writer.proc.stdin.close()
    assert writer.proc.wait(60) != 0  # that partial last line makes the save fail: nothing published
    for v in views:
        assert list(v) == ["metadata/identity.meta"]
    writer = a.start_write("save_metadata_line", {"FILE_NAME": COMPACTED_NAME})
    writer.send(b"".join(COMPACTED))  # every line sent, stdin not yet closed: still not published
    assert a.list_metadata_files() == ["metadata/identity.meta"]
    writer.finish()
    after = sync_and_load_strict(a)
    assert a.open_for_read(f"metadata/{COMPACTED_NAME}") == b"".join(COMPACTED)
    assert len(after[f"metadata/{COMPACTED_NAME}"]) == 5


# ---- (b) restore lists, compaction removes and gc runs, then restore reads every file -------

def _singles(st) -> dict[str, bytes]:
    """Four transaction backups with data, each with its own one-line metadata file."""
    rng = random.Random(3)
    out = {}
    for i in range(4):
        ln = write_transaction_backup(st, i * 100, i * 100 + 99, 100, rng)
        name = f"transaction_{i * 100}-{i * 100 + 99}.meta"
        st.save_metadata_lines(name, [ln])
        out[f"metadata/{name}"] = ln
    return out


def _compact(st, singles: dict[str, bytes]) -> None:
    """The compactor: write the compacted file, then move the replaced (expired) files away."""
    st.save_metadata_lines("transaction_compacted_0-399.meta", list(singles.values()))
    for h in singles:
        st.backup_metadata_file(h)


def test_race_b_control_legacy_restore_silently_misses_files(tmp_path):
    st = LegacyLocalFs(tmp_path / "legacy")
    singles = _singles(st)
    warnings: list[str] = []
    view = legacy_sync_and_load(st, warnings, between=lambda _handles: _compact(st, singles))
    # The race happened: every listed file vanished under the restore, which carried on anyway.
    assert len(warnings) == 4 and all("Ignoring metadata file download error" in w for w in warnings)
    assert view == {}
    assert not any("TransactionBackup" in m for lines in view.values() for m in lines)


def _gc(cli, repo) -> dict:
    r = cli("-r", str(repo), "gc", "--grace", "0s", "--force", "--keep-last", "1", "--json")
    assert r.code == 0, r.stderr
    return json.loads(r.out)


def _file_ids(env, names) -> list[str]:
    repo = env.open()
    with repo.reader() as snap:
        return [FileValue.decode(snap.get(NS_METADATA, n.split("/")[1]), n).file.id for n in names]


@pytest.mark.slow
def test_race_b_casbackup_restore_reads_everything_it_listed(aptos_env, cli):
    a = aptos_env.adapter
    lib = LibraryStorage(aptos_env.open(write=True))
    singles = _singles(lib)  # set-up in-process; the race itself goes through the adapter
    ids = _file_ids(aptos_env, singles)
    listed = a.list_metadata_files()  # the restore lists (and pins that generation)
    assert sorted(listed) == sorted(singles)
    _compact(a, singles)  # compaction, through the adapter
    assert a.list_metadata_files() == ["metadata/transaction_compacted_0-399.meta"]
    report = _gc(cli, aptos_env.repo)
    assert report["deleted"] > 0  # gc really ran and collected what no pin protects
    for i in ids:
        assert stored_anywhere(aptos_env.repo, i)
    raw = {h: a.open_for_read(h) for h in listed}  # the restore reads what it listed
    assert raw == singles
    view = {h: load_lines(data) for h, data in raw.items()}
    assert verify(lib, view) == {"transactions": 400, "epochs": 0, "records": 400}


@pytest.mark.parametrize("how", ["no-pin", "lapsed-pin"])
@pytest.mark.slow
def test_race_b_casbackup_without_a_live_pin_fails_loudly(aptos_env, cli, how):
    import time

    lib = LibraryStorage(aptos_env.open(write=True))
    singles = _singles(lib)
    ids = _file_ids(aptos_env, singles)
    if how == "no-pin":
        restore = aptos_env.with_env(CASBACKUP_APTOS_NO_PIN="1")
    else:
        restore = aptos_env.with_env()
        restore.env_vars["CASBACKUP_APTOS_PIN_TTL"] = "1s"  # as if the config said so
    listed = restore.list_metadata_files()
    _compact(lib, singles)
    if how == "lapsed-pin":
        time.sleep(1.2)
    _gc(cli, aptos_env.repo)
    assert not any(stored_anywhere(aptos_env.repo, i) for i in ids)
    for h in listed:
        with pytest.raises(AdapterError) as ei:
            restore.open_for_read(h)
        assert ei.value.code == 4 and "is missing" in ei.value.stderr  # loud, and names the blob
