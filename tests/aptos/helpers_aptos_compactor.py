"""`backup-maintenance compact`, as the tool runs it, over any storage with the six operations.

Mirrors backup-cli's metadata compaction: sync every metadata file (list, then read each),
group each kind's lines in order into files of at most `factor` lines (the
`--{epoch-ending,state-snapshot,transaction}-file-compact-factor` options), save every group
that merges more than one file as a `*_compacted_*` file, save a new
`compaction_timestamps_{now}.meta` recording when each replaced file was compacted (merged
with the previous record), then move every replaced file whose compaction is older than
`remove_compacted_file_after` to `metadata_backup/`, the replaced timestamp files included.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from helpers_aptos_dataset import line
from helpers_aptos import load_lines

KINDS = {
    "TransactionBackup": ("first_version", "last_version", lambda a, b: f"transaction_compacted_{a}-{b}.meta"),
    "EpochEndingBackup": ("first_epoch", "last_epoch", lambda a, b: f"epoch_ending_compacted_{a}-{b}.meta"),
    "StateSnapshotBackup": ("epoch", "epoch", lambda a, b: f"state_snapshot_compacted_epoch_{a}_{b}.meta"),
}


def compact(st: Any, factor: int = 100, remove_compacted_file_after: float = 0, now: int | None = None,
            concurrent_downloads: int = 4) -> dict[str, Any]:
    now = int(time.time()) if now is None else now
    handles = st.list_metadata_files()
    with ThreadPoolExecutor(concurrent_downloads) as pool:  # the tool's --concurrent-downloads
        contents = dict(zip(handles, pool.map(lambda h: load_lines(st.open_for_read(h)), handles)))
    by_kind: dict[str, list[tuple[int, str, dict[str, Any]]]] = {k: [] for k in KINDS}
    stamps: dict[str, int | None] = {}
    old_stamp_files = []
    for h, lines in contents.items():
        for m in lines:
            kind, fields = next(iter(m.items()))
            if kind in KINDS:
                by_kind[kind].append((fields[KINDS[kind][0]], h, fields))
            elif kind == "CompactionTimestamps":
                stamps.update(fields["compaction_timestamps"])
                old_stamp_files.append(h)
    saved, replaced = [], set()
    for kind, items in by_kind.items():
        first_key, last_key, name_of = KINDS[kind]
        uniq = sorted({json.dumps(f, sort_keys=True): (k, h, f) for k, h, f in items}.values(), key=lambda x: x[0])
        for i in range(0, len(uniq), factor):
            group = uniq[i:i + factor]
            sources = {h for _, h, _ in group}
            if len(sources) < 2:
                continue  # already one file: nothing to merge
            name = name_of(group[0][2][first_key], group[-1][2][last_key])
            handle = st.save_metadata_lines(name, [line(kind, **f) for _, _, f in group])
            saved.append(handle)
            replaced |= sources - {handle}
    for h in replaced:
        stamps.setdefault(h, now)
    if replaced:
        saved.append(st.save_metadata_lines(f"compaction_timestamps_{now}.meta", [line(
            "CompactionTimestamps", file_compacted_at=now, compaction_timestamps=stamps)]))
        replaced |= set(old_stamp_files)
    moved = sorted(h for h in replaced if (stamps.get(h) or now) <= now - remove_compacted_file_after)
    for h in moved:
        st.backup_metadata_file(h)
    return {"listed": handles, "saved": saved, "moved": moved}
