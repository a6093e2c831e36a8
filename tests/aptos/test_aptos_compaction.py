"""Compaction the way the tool runs it (`backup-maintenance compact --*-compact-factor 100`),
through the shipped adapter config, while a verify runs and a restore that listed before it
reads on; then `casbackup gc` reclaims the replaced metadata once the pins have expired.
"""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers_aptos_compactor import compact
from helpers_aptos_dataset import line, verify, write_epoch_ending_backup, write_transaction_backup
from helpers_aptos import LibraryStorage, load_lines

from casbackup.aptos.names import NS_METADATA
from casbackup.aptos.storage import FileValue
from helpers_common import stored_anywhere

pytestmark = pytest.mark.slow  # waits for pins to expire (minutes)

PIN_TTL = 90  # seconds: the restore's, from its listing to its last read (then it lapses)
VERIFY_PIN_TTL = 10  # the verify's listings: each is read at once

TXN_FILES, EPOCHS = 5, 2


def _populate(st) -> dict[str, bytes]:
    """Many small metadata files, as a node that backs up continuously leaves them."""
    rng = random.Random(11)
    out = {}
    for i in range(TXN_FILES):
        ln = write_transaction_backup(st, i * 10, i * 10 + 9, 10, rng)
        out[st.save_metadata_lines(f"transaction_{i * 10}-{i * 10 + 9}.meta", [ln])] = ln
    for e in range(EPOCHS):
        ln = write_epoch_ending_backup(st, e, e, rng)
        out[st.save_metadata_lines(f"epoch_ending_{e}-{e}.meta", [ln])] = ln
    for v, e in ((55, 1), (105, 3)):
        ln = line("StateSnapshotBackup", epoch=e, version=v, manifest=f"state_epoch_{e}_ver_{v}.abcd/state.manifest")
        out[st.save_metadata_lines(f"state_snapshot_ver_{v}.meta", [ln])] = ln
    ln = line("Identity", id="cd" * 16)
    out[st.save_metadata_lines("identity.meta", [ln])] = ln
    return out


def _read_all(adapter, handles: list[str]) -> dict[str, bytes]:
    with ThreadPoolExecutor(4) as pool:  # the tool's --concurrent-downloads
        return dict(zip(handles, pool.map(adapter.open_for_read, handles)))


def _gc(cli, repo) -> dict:
    r = cli("-r", str(repo), "gc", "--grace", "0s", "--force", "--keep-last", "1", "--json")
    assert r.code == 0, r.stderr
    return json.loads(r.out)


def test_compaction_with_a_verify_and_an_earlier_restore_then_gc(aptos_env, cli):
    a = aptos_env.with_env()
    a.env_vars["CASBACKUP_APTOS_PIN_TTL"] = f"{PIN_TTL}s"
    verifier_adapter = aptos_env.with_env()
    verifier_adapter.env_vars["CASBACKUP_APTOS_PIN_TTL"] = f"{VERIFY_PIN_TTL}s"
    lib = LibraryStorage(aptos_env.open(write=True))
    singles = _populate(lib)  # set-up in-process; everything below goes through the adapter
    repo = aptos_env.open()
    with repo.reader() as snap:
        single_ids = {h: FileValue.decode(snap.get(NS_METADATA, h.split("/")[1]), h).file.id for h in singles}

    # The restore lists (pinning that generation) and reads half of it before compaction starts.
    t_listed = time.monotonic()
    restore_listed = a.list_metadata_files()
    assert sorted(restore_listed) == sorted(singles)
    first_half = _read_all(a, restore_listed[: len(restore_listed) // 2])

    # A verify runs the whole time compaction does: list, read everything, check the ranges.
    done = threading.Event()
    verifies: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def verify_loop() -> None:
        try:
            while True:
                finished = done.is_set()
                raw = _read_all(verifier_adapter, verifier_adapter.list_metadata_files())
                view = {h: load_lines(d) for h, d in raw.items()}
                verifies.append(verify(lib, view, read_data=False))
                if finished:
                    return
                time.sleep(0.5)  # the tool's verify is one pass; a loop of them must not starve the compactor
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    verifier = threading.Thread(target=verify_loop)
    verifier.start()
    t_start = time.monotonic()
    try:
        result = compact(a, factor=100, remove_compacted_file_after=0)
    finally:
        done.set()
        verifier.join(300)
    t_compacted = time.monotonic()
    print(f"restore listed+half {t_start - t_listed:.1f}s, compaction {t_compacted - t_start:.1f}s, "
          f"{len(verifies)} verifies")
    assert errors == [] and len(verifies) >= 2
    assert all(v == {"transactions": TXN_FILES * 10, "epochs": EPOCHS, "records": 0} for v in verifies)
    assert sorted(result["saved"]) == ["metadata/compaction_timestamps_%s.meta" % result["saved"][-1].split("_")[-1][:-5],
                                       f"metadata/epoch_ending_compacted_0-{EPOCHS - 1}.meta",
                                       "metadata/state_snapshot_compacted_epoch_1_3.meta",
                                       f"metadata/transaction_compacted_0-{TXN_FILES * 10 - 1}.meta"]
    assert sorted(result["moved"]) == sorted(h for h in singles if h != "metadata/identity.meta")
    live = verifier_adapter.list_metadata_files()  # a short pin: it must not hold up the last gc
    assert sorted(live) == sorted(result["saved"] + ["metadata/identity.meta"])

    # gc while the restore's pin lives: nothing it listed may go.
    assert time.monotonic() - t_listed < PIN_TTL - 5, f"too slow here: {time.monotonic() - t_listed:.0f}s"
    _gc(cli, aptos_env.repo)
    missing = [h for h, i in single_ids.items() if not stored_anywhere(aptos_env.repo, i)]
    assert missing == [], (missing, f"{time.monotonic() - t_listed:.0f}s after the listing")
    rest = _read_all(a, restore_listed[len(restore_listed) // 2:])
    assert time.monotonic() - t_listed < PIN_TTL, "the machine was too slow: the restore's pin lapsed mid-test"
    raw = {**first_half, **rest}
    assert raw == singles  # the restore read exactly what it listed, all of it
    view = {h: load_lines(d) for h, d in raw.items()}
    assert verify(lib, view) == {"transactions": TXN_FILES * 10, "epochs": EPOCHS, "records": TXN_FILES * 10}

    # Once every pin has expired, gc reclaims the replaced metadata; the compacted set stays whole.
    # (the restore's pin, and the compactor's own listing pin taken a few seconds later)
    time.sleep(max(0.0, PIN_TTL + 2 - (time.monotonic() - t_listed)))
    deadline = time.monotonic() + PIN_TTL
    while True:
        pins = json.loads(cli("-r", str(aptos_env.repo), "pins", "--json").out)
        if not [p for p in pins if p.get("state") == "live"] or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert not [p for p in pins if p.get("state") == "live"], pins
    report = _gc(cli, aptos_env.repo)
    assert report["deleted"] > 0
    kept = [h for h, i in single_ids.items() if stored_anywhere(aptos_env.repo, i)]
    assert kept == ["metadata/identity.meta"]  # the one file compaction did not replace
    after = {h: load_lines(d) for h, d in _read_all(a, a.list_metadata_files()).items()}
    assert verify(lib, after) == {"transactions": TXN_FILES * 10, "epochs": EPOCHS, "records": TXN_FILES * 10}
    st = cli("-r", str(aptos_env.repo), "aptos", "status", "--json")
    assert st.code == 0 and json.loads(st.out)["problems"] == []
