"""The tool's five metadata line kinds, file-name consistency and the storage-state report.

Storage keeps lines opaque (byte for byte); only `status` and `import` parse them, to find
what the tool itself would trip over: gaps, overlaps, conflicting duplicates, and files whose
content does not match their name (a file cut short at a line boundary looks valid line by
line, but a compacted file named `transaction_compacted_0-999.meta` must end at version 999).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

KINDS: dict[str, tuple[str, ...]] = {
    "EpochEndingBackup": ("first_epoch", "last_epoch", "first_version", "last_version", "manifest"),
    "StateSnapshotBackup": ("epoch", "version", "manifest"),
    "TransactionBackup": ("first_version", "last_version", "manifest"),
    "Identity": ("id",),
    "CompactionTimestamps": ("file_compacted_at", "compaction_timestamps"),
}


class MetaError(ValueError):
    """A metadata line or file the tool could not use."""


@dataclass(frozen=True)
class Meta:
    kind: str
    fields: dict[str, Any]
    raw: bytes

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]


def _uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64


def parse_line(raw: bytes) -> Meta:
    """One externally tagged JSON line (without its newline)."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MetaError(f"not JSON: {exc}") from None
    if not (isinstance(doc, dict) and len(doc) == 1):
        raise MetaError("not an externally tagged metadata object")
    kind, body = next(iter(doc.items()))
    if kind not in KINDS or not isinstance(body, dict):
        raise MetaError(f"unknown metadata kind {kind!r}")
    for name in KINDS[kind]:
        if name not in body:
            raise MetaError(f"{kind} lacks {name!r}")
        v = body[name]
        if name == "manifest" or name == "id":
            ok = isinstance(v, str) and v != ""
        elif name == "compaction_timestamps":
            ok = isinstance(v, dict) and all(t is None or _uint(t) for t in v.values())
        else:
            ok = _uint(v)
        if not ok:
            raise MetaError(f"{kind}.{name} has a bad value {v!r}")
    for lo, hi in (("first_epoch", "last_epoch"), ("first_version", "last_version")):
        if lo in body and body[lo] > body[hi]:
            raise MetaError(f"{kind}: {lo} {body[lo]} is after {hi} {body[hi]}")
    return Meta(kind, body, raw)


_RANGE = r"(\d+)-(\d+)"
NAME_RULES: list[tuple[re.Pattern[str], str, bool]] = [
    # (file name, kind, compacted: many lines allowed)
    (re.compile(rf"^epoch_ending_{_RANGE}\.meta$"), "EpochEndingBackup", False),
    (re.compile(rf"^epoch_ending_compacted_{_RANGE}\.meta$"), "EpochEndingBackup", True),
    (re.compile(rf"^transaction_{_RANGE}\.meta$"), "TransactionBackup", False),
    (re.compile(rf"^transaction_compacted_{_RANGE}\.meta$"), "TransactionBackup", True),
    (re.compile(r"^state_snapshot_(?:epoch_(\d+)_)?ver_(\d+)\.meta$"), "StateSnapshotBackup", False),
    (re.compile(r"^state_snapshot_compacted_epoch_(\d+)_(\d+)\.meta$"), "StateSnapshotBackup", True),
    (re.compile(r"^identity\.meta$"), "Identity", False),
    (re.compile(r"^compaction_timestamps_(\d+)\.meta$"), "CompactionTimestamps", False),
]


def parse_file(name: str, data: bytes) -> list[Meta]:
    """Every line of a metadata file, checked against the file's name; MetaError if anything is off."""
    if not data:
        raise MetaError("empty file (a create without a write?)")
    if not data.endswith(b"\n"):
        raise MetaError("half-written: the last line has no newline")
    if b"\r" in data:
        raise MetaError("a line contains a carriage return")
    metas = []
    for n, raw in enumerate(data[:-1].split(b"\n"), 1):
        try:
            metas.append(parse_line(raw))
        except MetaError as exc:
            raise MetaError(f"line {n}: {exc}") from None
    _check_name(name, metas)
    return metas


def _check_name(name: str, metas: list[Meta]) -> None:
    for pattern, kind, compacted in NAME_RULES:
        m = pattern.fullmatch(name)  # `$` alone lets "x.meta\n" through
        if not m:
            continue
        wrong = [i for i, x in enumerate(metas, 1) if x.kind != kind]
        if wrong:
            raise MetaError(f"line {wrong[0]} is a {metas[wrong[0] - 1].kind}, the file name says {kind}")
        if not compacted and len(metas) != 1:
            raise MetaError(f"{len(metas)} lines in a file whose name says one {kind}")
        first, last = metas[0], metas[-1]
        a, b = (list(m.groups()) + [None, None])[:2]
        if kind == "EpochEndingBackup":
            found = (first["first_epoch"], last["last_epoch"])
        elif kind == "TransactionBackup":
            found = (first["first_version"], last["last_version"])
        elif kind == "StateSnapshotBackup" and compacted:
            found = (first["epoch"], last["epoch"])
        elif kind == "StateSnapshotBackup":
            found = (first["epoch"] if a is not None else None, first["version"])
        else:
            return
        expect = (int(a) if a is not None else None, int(b) if b is not None else None)
        if found != expect:
            raise MetaError(f"content covers {found[0]}..{found[1]} but the name says {expect[0]}..{expect[1]} "
                            "(truncated or misnamed)")
        return


@dataclass
class RangeReport:
    ranges: list[list[int]] = field(default_factory=list)   # distinct [first, last], sorted
    gaps: list[list[int]] = field(default_factory=list)     # [first, last] missing
    overlaps: list[list[int]] = field(default_factory=list)  # ranges starting before the previous ended
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # same range, different manifests
    duplicates: int = 0  # identical lines in several files: normal while compaction's grace runs

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.overlaps or self.conflicts)


def analyze_ranges(items: Iterable[tuple[int, int, str]]) -> RangeReport:
    """The tool's rule: ranges continuous from 0, no overlap, one manifest per range."""
    rep = RangeReport()
    by_range: dict[tuple[int, int], set[str]] = {}
    total = 0
    for first, last, manifest in items:
        total += 1
        by_range.setdefault((first, last), set()).add(manifest)
    rep.duplicates = total - sum(len(v) for v in by_range.values())
    expected = 0
    for (first, last), manifests in sorted(by_range.items()):
        rep.ranges.append([first, last])
        if len(manifests) > 1:
            rep.conflicts.append({"range": [first, last], "manifests": sorted(manifests)})
        if first > expected:
            rep.gaps.append([expected, first - 1])
        elif first < expected:
            rep.overlaps.append([first, last])
        expected = max(expected, last + 1)
    return rep


def storage_report(files: Iterable[tuple[str, bytes]]) -> dict[str, Any]:
    """What `aptos status` prints: storage state, ranges and every problem found."""
    unparsable: list[dict[str, str]] = []
    metas: list[Meta] = []
    names = 0
    for name, data in files:
        names += 1
        try:
            metas.extend(parse_file(name, data))
        except MetaError as exc:
            unparsable.append({"file": name, "error": str(exc)})
    unique = {(m.kind, m.raw): m for m in metas}.values()
    txn = analyze_ranges((m["first_version"], m["last_version"], m["manifest"])
                         for m in metas if m.kind == "TransactionBackup")
    epochs = analyze_ranges((m["first_epoch"], m["last_epoch"], m["manifest"])
                            for m in metas if m.kind == "EpochEndingBackup")
    snaps = sorted({(m["version"], m["epoch"], m["manifest"]) for m in unique if m.kind == "StateSnapshotBackup"})
    ids = sorted({m["id"] for m in unique if m.kind == "Identity"})
    stamps = [m for m in unique if m.kind == "CompactionTimestamps"]
    latest_stamp = max(stamps, key=lambda m: m["file_compacted_at"]) if stamps else None
    state = {
        "latest_epoch_ending_epoch": max((r[1] for r in epochs.ranges), default=None),
        "latest_transaction_version": max((r[1] for r in txn.ranges), default=None),
        "latest_state_snapshot_epoch": snaps[-1][1] if snaps else None,
        "latest_state_snapshot_version": snaps[-1][0] if snaps else None,
    }
    problems = [f"{u['file']}: {u['error']}" for u in unparsable]
    for label, rep in (("transaction", txn), ("epoch_ending", epochs)):
        problems += [f"{label} gap {g[0]}..{g[1]}" for g in rep.gaps]
        problems += [f"{label} overlap at {o[0]}..{o[1]}" for o in rep.overlaps]
        problems += [f"{label} range {c['range'][0]}..{c['range'][1]} has {len(c['manifests'])} different manifests"
                     for c in rep.conflicts]
    if len(ids) > 1:
        problems.append(f"{len(ids)} different identities")
    return {
        "ok": not problems,
        "metadata_files": names,
        "lines": len(metas),
        "storage_state": state,
        "transaction": _range_json(txn),
        "epoch_ending": _range_json(epochs),
        "state_snapshots": [{"epoch": e, "version": v, "manifest": mf} for v, e, mf in snaps],
        "identity": ids,
        "latest_compaction": latest_stamp["file_compacted_at"] if latest_stamp else None,
        "unparsable": unparsable,
        "problems": problems,
    }


def _range_json(rep: RangeReport) -> dict[str, Any]:
    return {"ranges": len(rep.ranges), "first": rep.ranges[0][0] if rep.ranges else None,
            "last": max((r[1] for r in rep.ranges), default=None), "gaps": rep.gaps, "overlaps": rep.overlaps,
            "conflicts": rep.conflicts, "duplicates": rep.duplicates}
