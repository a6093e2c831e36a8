"""Name, line and handle rules, metadata parsing and range analysis (in-process, fast)."""
from __future__ import annotations

import pytest
from helpers_aptos_dataset import line

from casbackup.aptos.metadata import MetaError, analyze_ranges, parse_file, parse_line, storage_report
from casbackup.aptos.names import check_lines, check_name, parse_handle
from casbackup.errors import UsageError


@pytest.mark.parametrize("name", ["abc", "transaction_0-.a1b2", "epoch_ending_3-.ffff", "0-99.chunk",
                                  "state_epoch_5_ver_100.0a0b", "a" * 127])
def test_valid_names(name):
    assert check_name("name", name) == name


@pytest.mark.parametrize("name", ["", "ab", ".hidden", "-x-y", "a/b", "a b", "a" * 128, "../x", "x\n", "ünï"])
def test_invalid_names(name):
    with pytest.raises(UsageError, match="name"):
        check_name("name", name)


@pytest.mark.parametrize("handle", ["/etc/passwd", "../x/y", "a/../b", "metadata/../../x", "abc/def/ghi", "abc",
                                    "abc/", "/abc/def", "abc//def", "abc\\def/x", "./abc/def", "abc/.."])
def test_hostile_handles_rejected(handle):
    with pytest.raises(UsageError):
        parse_handle(handle)


def test_handle_kinds():
    assert parse_handle("transaction_0-.a1b2/0-99.chunk").kind == "data"
    assert parse_handle("metadata/identity.meta").key == "identity.meta"
    assert parse_handle("metadata_backup/identity.meta").kind == "metadata_backup"


@pytest.mark.parametrize("data,why", [(b"", "no metadata"), (b'{"a":1}', "newline"), (b'{"a":1}\r\n', "carriage"),
                                      (b"\xff\xfe\n", "UTF-8")])
def test_line_rule(data, why):
    with pytest.raises(UsageError, match=why):
        check_lines(data)


def test_line_rule_counts_lines():
    assert check_lines(b'{"a":1}\n{"b":2}\n') == 2


def _txn(a, b):
    return line("TransactionBackup", first_version=a, last_version=b, manifest=f"t{a}/transaction.manifest")


def test_compacted_file_cut_at_a_line_boundary_is_detected():
    full = _txn(0, 99) + _txn(100, 199) + _txn(200, 299)
    assert len(parse_file("transaction_compacted_0-299.meta", full)) == 3
    with pytest.raises(MetaError, match="truncated"):
        parse_file("transaction_compacted_0-299.meta", full[: len(_txn(0, 99))])
    with pytest.raises(MetaError, match="half-written"):
        parse_file("transaction_compacted_0-299.meta", full[:-5])


def test_name_must_match_kind_and_count():
    with pytest.raises(MetaError, match="file name says"):
        parse_file("epoch_ending_0-0.meta", _txn(0, 99))
    with pytest.raises(MetaError, match="2 lines"):
        parse_file("transaction_0-199.meta", _txn(0, 99) + _txn(100, 199))
    snap = line("StateSnapshotBackup", epoch=2, version=250, manifest="s/state.manifest")
    assert parse_file("state_snapshot_ver_250.meta", snap)
    assert parse_file("state_snapshot_epoch_2_ver_250.meta", snap)
    with pytest.raises(MetaError):
        parse_file("state_snapshot_ver_251.meta", snap)


@pytest.mark.parametrize("raw", [b"{}", b"[]", b'{"Nope":{}}', b'{"TransactionBackup":{"first_version":5}}',
                                 b'{"TransactionBackup":{"first_version":5,"last_version":4,"manifest":"m"}}',
                                 b'{"TransactionBackup":{"first_version":-1,"last_version":4,"manifest":"m"}}',
                                 b'{"Identity":{"id":true}}', b"not json"])
def test_bad_lines(raw):
    with pytest.raises(MetaError):
        parse_line(raw)


def test_range_analysis():
    rep = analyze_ranges([(0, 9, "a"), (10, 19, "b"), (10, 19, "b"), (25, 30, "c"), (28, 40, "d"), (41, 50, "e"),
                          (41, 50, "f")])
    assert rep.gaps == [[20, 24]]
    assert rep.overlaps == [[28, 40]]
    assert rep.conflicts == [{"range": [41, 50], "manifests": ["e", "f"]}]
    assert rep.duplicates == 1
    assert not rep.ok
    assert analyze_ranges([(0, 9, "a"), (10, 19, "b")]).ok


def test_storage_report_state_and_problems():
    files = [
        ("transaction_compacted_0-199.meta", _txn(0, 99) + _txn(100, 199)),
        ("transaction_100-199.meta", _txn(100, 199)),  # compaction's grace window: a benign duplicate
        ("epoch_ending_0-0.meta", line("EpochEndingBackup", first_epoch=0, last_epoch=0, first_version=0,
                                       last_version=99, manifest="e0/epoch_ending.manifest")),
        ("state_snapshot_ver_150.meta", line("StateSnapshotBackup", epoch=0, version=150, manifest="s/m")),
        ("identity.meta", line("Identity", id="ab" * 16)),
        ("compaction_timestamps_5.meta", line("CompactionTimestamps", file_compacted_at=5,
                                              compaction_timestamps={"metadata/x.meta": None})),
    ]
    rep = storage_report(files)
    assert rep["ok"], rep["problems"]
    assert rep["storage_state"] == {"latest_epoch_ending_epoch": 0, "latest_transaction_version": 199,
                                    "latest_state_snapshot_epoch": 0, "latest_state_snapshot_version": 150}
    assert rep["transaction"]["duplicates"] == 1
    bad = storage_report(files + [("transaction_300-399.meta", _txn(300, 399)),
                                  ("transaction_compacted_400-599.meta", _txn(400, 499))])
    assert not bad["ok"]
    assert "transaction gap 200..299" in bad["problems"]
    assert any("transaction_compacted_400-599.meta" in p for p in bad["problems"])
