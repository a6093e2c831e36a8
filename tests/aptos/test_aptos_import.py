"""`casbackup aptos import`: a legacy LocalFs folder, with the damage the old layout allows."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers_aptos_dataset import build, line
from helpers_aptos import LibraryStorage
from helpers_aptos_legacy import LegacyLocalFs


def _legacy(tmp_path: Path) -> tuple[Path, dict[str, list[bytes]]]:
    root = tmp_path / "legacy"
    st = LegacyLocalFs(root)
    saved = build(st)
    meta = root / "metadata"
    # A compacted file cut at a line boundary: every line parses, but it is short.
    compacted = meta / "transaction_compacted_0-399.meta"
    compacted.write_bytes(b"".join(saved["transaction_compacted_0-399.meta"][:2]))
    # A file caught half-written, mid-line.
    (meta / "transaction_600-699.meta").write_bytes(
        line("TransactionBackup", first_version=600, last_version=699, manifest="t600/transaction.manifest")[:30])
    (meta / ".tmp_identity.meta").write_bytes(b"junk")  # a temp file
    # A crash between create and write; symlinks that point out of the folder.
    bh = next(p for p in root.iterdir() if p.name.startswith("transaction_0-"))
    (bh / "crashed.chunk").write_bytes(b"")
    os.symlink("/etc/passwd", bh / "passwd.chunk")
    os.symlink("/etc", root / "evil_backup.abcd")
    # A file compaction moved away earlier.
    (root / "metadata_backup").mkdir()
    (root / "metadata_backup" / "transaction_0-99.meta").write_bytes(saved["transaction_compacted_0-399.meta"][0])
    return root, saved


REJECTED = {
    "metadata/transaction_compacted_0-399.meta": "truncated",
    "metadata/transaction_600-699.meta": "half-written",
    "metadata/.tmp_identity.meta": "not a valid name",
    "evil_backup.abcd": "symbolic link",
}


def _log_len(cli, repo) -> int:
    return len(json.loads(cli("-r", str(repo), "log", "--json").out))


@pytest.mark.slow
def test_import_reports_damage_and_imports_nothing_twice(aptos_env, cli, tmp_path):
    root, saved = _legacy(tmp_path)
    r = cli("-r", str(aptos_env.repo), "aptos", "import", str(root), "--json")
    assert r.code == 15, r.stderr  # incomplete: said so, not silent
    rep = json.loads(r.out)
    reasons = {x["path"]: x["reason"] for x in rep["rejected"]}
    for path, why in REJECTED.items():
        assert why in reasons[path], (path, reasons.get(path))
    assert any(p.endswith("/crashed.chunk") and "empty" in w for p, w in reasons.items())
    assert any(p.endswith("/passwd.chunk") and "symbolic link" in w for p, w in reasons.items())
    assert "not imported" in r.stderr
    legacy_files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                          and p.parent.name not in ("metadata", "metadata_backup") and p.stat().st_size)
    assert rep["files_imported"] == len(legacy_files) > 20
    assert rep["metadata_imported"] == len(saved) - 1 and rep["replaced_imported"] == 1

    # Old handles keep resolving, byte for byte; the damaged metadata is not there at all.
    lib = LibraryStorage(aptos_env.open())
    for p in legacy_files:
        assert lib.open_for_read(f"{p.parent.name}/{p.name}") == p.read_bytes()
    a = aptos_env.adapter
    listed = a.list_metadata_files()
    assert sorted(listed) == sorted(f"metadata/{n}" for n in saved if n != "transaction_compacted_0-399.meta")
    some = next(p for p in legacy_files if p.name == "transaction.manifest")
    assert a.open_for_read(f"{some.parent.name}/{some.name}") == some.read_bytes()
    assert a.open_for_read("metadata/transaction_400-499.meta") == (root / "metadata/transaction_400-499.meta").read_bytes()
    assert a.open_for_read("metadata_backup/transaction_0-99.meta") == saved["transaction_compacted_0-399.meta"][0]

    # status makes the hole the damaged file leaves visible.
    st = cli("-r", str(aptos_env.repo), "aptos", "status", "--json")
    assert st.code == 14 and [0, 399] in json.loads(st.out)["transaction"]["gaps"]

    # Again: nothing is imported twice, nothing is committed, the damage is reported again.
    generations = _log_len(cli, aptos_env.repo)
    again = cli("-r", str(aptos_env.repo), "aptos", "import", str(root), "--json")
    assert again.code == 15
    rep2 = json.loads(again.out)
    assert (rep2["files_imported"], rep2["metadata_imported"], rep2["replaced_imported"], rep2["backups"]) == (0, 0, 0, 0)
    assert rep2["files_present"] == rep["files_imported"] and rep2["metadata_present"] == rep["metadata_imported"]
    assert {x["path"] for x in rep2["rejected"]} == set(reasons)
    assert _log_len(cli, aptos_env.repo) == generations


def test_import_of_a_clean_folder_succeeds_and_checks(aptos_env, cli, tmp_path):
    root = tmp_path / "legacy"
    saved = build(LegacyLocalFs(root))
    r = cli("-r", str(aptos_env.repo), "aptos", "import", str(root))
    assert r.code == 0, r.stderr
    assert f"metadata: {len(saved)} imported" in r.out
    assert cli("-r", str(aptos_env.repo), "aptos", "status").code == 0
    assert cli("-r", str(aptos_env.repo), "check", "--read-data").code == 0


def test_import_rejects_a_changed_file_under_an_imported_handle(aptos_env, cli, tmp_path):
    root = tmp_path / "legacy"
    build(LegacyLocalFs(root), txn_ranges=1, epochs=1, compact_txn=0)
    assert cli("-r", str(aptos_env.repo), "aptos", "import", str(root)).code == 0
    manifest = next(root.glob("transaction_0-*/transaction.manifest"))
    manifest.write_bytes(manifest.read_bytes() + b" ")
    r = cli("-r", str(aptos_env.repo), "aptos", "import", str(root))
    assert r.code == 15 and "differs from the file already imported" in r.out
