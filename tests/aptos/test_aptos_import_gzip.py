"""Old backups stay reachable: a legacy bucket written by the tool's gzip configs, imported.

The legacy tree is written by the legacy adapter commands themselves (`gzip -c` into
`$BACKUP_HANDLE/$FILE_NAME` and `metadata/$FILE_NAME`, as the tool's s3.yaml does, with a
folder standing in for the bucket after `aws s3 sync`), and read back by their `gzip -cd`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from helpers_aptos_dataset import build, verify
from helpers_aptos import Adapter, LibraryStorage, sync_and_load_strict, tool_env

LEGACY_GZIP_CONFIG = {
    "env_vars": [],
    "commands": {
        "create_backup": 'mkdir -p "$LEGACY/$BACKUP_NAME"; echo "$BACKUP_NAME"',
        "create_for_write": 'FILE_HANDLE="$BACKUP_HANDLE/$FILE_NAME"\necho "$FILE_HANDLE"\nexec 1>&-\n'
                            'gzip -c > "$LEGACY/$FILE_HANDLE"',
        "open_for_read": 'cat "$LEGACY/$FILE_HANDLE" | gzip -cd',
        "save_metadata_line": 'mkdir -p "$LEGACY/metadata"\nFILE_HANDLE="metadata/$FILE_NAME"\necho "$FILE_HANDLE"\n'
                              'exec 1>&-\ngzip -c > "$LEGACY/$FILE_HANDLE"',
        "list_metadata_files": 'ls "$LEGACY/metadata" | sed -e "s#^#metadata/#"',
        "backup_metadata_file": 'mkdir -p "$LEGACY/metadata_backup"; '
                                'mv "$LEGACY/metadata/$FILE_NAME" "$LEGACY/metadata_backup/$FILE_NAME"',
    },
}


def legacy_gzip(tmp_path: Path) -> tuple[Path, Adapter]:
    root = tmp_path / "legacy-bucket"
    root.mkdir()
    cfg = tmp_path / "legacy-s3.yaml"
    cfg.write_text(yaml.safe_dump(LEGACY_GZIP_CONFIG))
    return root, Adapter(cfg, tool_env({"LEGACY": str(root)}))


def handles_in(doc: Any) -> Iterator[str]:
    """Every string in a manifest that is a file handle (`<backup>/<file>`)."""
    if isinstance(doc, dict):
        for v in doc.values():
            yield from handles_in(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from handles_in(v)
    elif isinstance(doc, str) and doc.count("/") == 1:
        yield doc


@pytest.mark.slow
def test_gzip_legacy_bucket_imports_and_every_handle_resolves(aptos_env, cli, tmp_path):
    root, legacy = legacy_gzip(tmp_path)
    saved = build(legacy, txn_ranges=3, epochs=2, compact_txn=2)
    some = next(root.glob("transaction_0-*/*.chunk"))
    assert some.read_bytes()[:3] == b"\x1f\x8b\x08"  # really gzip on "disk", as in the bucket
    # Compaction ran once already: the one-line file it folded into the compacted one was moved.
    first = saved["transaction_compacted_0-199.meta"][0]
    legacy.save_metadata_lines("transaction_0-99.meta", [first])
    legacy.backup_metadata_file("metadata/transaction_0-99.meta")
    # One backup was written raw (a LocalFs copy merged in): auto mode takes it as it is.
    raw = root / "raw_backup.abcd"
    raw.mkdir()
    (raw / "0-9.chunk").write_bytes(b"\x00\x00\x00\x05hello")
    # A gzip upload cut short, and a gzip of nothing (the writer died before sending).
    bh = some.parent
    (bh / "cut.chunk").write_bytes(some.read_bytes()[:40])
    (bh / "nothing.chunk").write_bytes(__import__("gzip").compress(b""))

    r = cli("-r", str(aptos_env.repo), "aptos", "import", str(root), "--json")
    assert r.code == 15, r.stderr  # the two damaged files, reported
    rep = json.loads(r.out)
    reasons = {x["path"]: x["reason"] for x in rep["rejected"]}
    assert set(reasons) == {f"{bh.name}/cut.chunk", f"{bh.name}/nothing.chunk"}
    assert "not a valid gzip stream" in reasons[f"{bh.name}/cut.chunk"]
    assert "empty after gunzip" in reasons[f"{bh.name}/nothing.chunk"]
    data_files = [p for p in root.rglob("*") if p.is_file() and p.parent.name not in ("metadata", "metadata_backup")
                  and p.name not in ("cut.chunk", "nothing.chunk")]
    meta_files = list((root / "metadata").iterdir()) + list((root / "metadata_backup").iterdir())
    assert rep["files_imported"] == len(data_files) and rep["gunzipped"] == len(data_files) - 1 + len(meta_files)

    # Every handle the tool knows -- listed metadata, and every handle inside every manifest --
    # gives through casbackup exactly what the legacy `gzip -cd` read gives.
    ours = aptos_env.adapter
    lib = LibraryStorage(aptos_env.open())
    view = sync_and_load_strict(ours)
    assert sorted(view) == sorted(legacy.list_metadata_files())
    for h in view:
        assert ours.open_for_read(h) == legacy.open_for_read(h)
    manifests = {m[k]["manifest"] for lines in view.values() for m in lines for k in m if "manifest" in m[k]}
    assert len(manifests) == 3 + 2 + 1
    named = set(manifests)
    for mh in manifests:
        named |= set(handles_in(json.loads(lib.open_for_read(mh))))
    assert len(named) > 20
    for h in sorted(named):
        assert lib.open_for_read(h) == legacy.open_for_read(h), h
    chunk = next(h for h in sorted(named) if h.endswith(".chunk"))
    assert ours.open_for_read(chunk) == legacy.open_for_read(chunk)  # and through the adapter itself
    assert ours.open_for_read("metadata_backup/transaction_0-99.meta") == first
    assert lib.open_for_read("raw_backup.abcd/0-9.chunk") == b"\x00\x00\x00\x05hello"
    assert verify(lib, view)["records"] == 300
    assert cli("-r", str(aptos_env.repo), "aptos", "status").code == 0


def test_gzip_modes(aptos_env, cli, tmp_path):
    root, legacy = legacy_gzip(tmp_path)
    bh = legacy.create_backup("transaction_0-.beef")
    h = legacy.create_for_write(bh, "0-9.chunk", b"\x00\x00\x00\x02hi")
    (root / bh / "raw.chunk").write_bytes(b"\x00\x00\x00\x02ho")
    always = cli("-r", str(aptos_env.repo), "aptos", "import", "--gzip", "always", str(root), "--json")
    assert always.code == 15
    assert json.loads(always.out)["rejected"] == [{"path": f"{bh}/raw.chunk",
                                                   "reason": "not gzip-compressed (--gzip always)"}]
    lib = LibraryStorage(aptos_env.open())
    assert lib.open_for_read(h) == b"\x00\x00\x00\x02hi"
    never = tmp_path / "repo2"
    assert cli("-r", str(never), "init").code == 0
    assert cli("-r", str(never), "aptos", "import", "--gzip", "never", str(root)).code == 0
    from casbackup.backends import LocalBackend
    from casbackup.repository import Repository

    kept = LibraryStorage(Repository.open(LocalBackend(never)))
    assert kept.open_for_read(h) == (root / h).read_bytes()  # the gzip bytes, as they are
