"""Aptos streams stored in the legacy FILE body ({"size", "chunks"}, before the one FILE codec of
spec/FORMAT.md §6.4) still read back byte-identical, pass `check --read-data`, survive gc, and are
recognised as the same content by save-metadata-line and import (S1, S6).

The old body is built by hand here, exactly as the old aptos/streams.py wrote it, so the test
does not depend on the code under test to produce it.
"""
from __future__ import annotations

import io
from pathlib import Path

from casbackup.aptos.names import NS_BACKUPS, NS_FILES, NS_METADATA, parse_handle
from casbackup.aptos.storage import AptosStorage, FileValue
from casbackup.backends import LocalBackend
from casbackup.codec import BlobType, Ref, packb
from casbackup.gc import Collector
from casbackup.repository import Repository
from helpers_common import blob_stored, store_orphan

PIECE = 4 * 1024 * 1024
DATA = bytes(range(256)) * (9 * 1024 * 1024 // 256) + b"tail"  # three pieces, the last one short
META = b'{"EpochEndingBackup":{"first_epoch":0,"last_epoch":9,"first_version":0,"last_version":99,' \
       b'"manifest":"bak1/file1"}}\n'


def _old_stream(txn, data: bytes) -> tuple[Ref, int]:
    """The pre-codec Aptos writer: 4 MiB CHUNK pieces, then a FILE {"size", "chunks"} (no "v")."""
    chunks = []
    for off in range(0, len(data), PIECE):
        piece = data[off:off + PIECE]
        chunks.append((txn.put_blob(BlobType.CHUNK, piece).ref.id, len(piece)))
    refs = [Ref(BlobType.CHUNK, cid) for cid, _ in chunks]
    body = {"size": len(data), "chunks": [[bytes.fromhex(cid), n] for cid, n in chunks]}
    return txn.put_structured(BlobType.FILE, refs, body).ref, len(data)


def _old_repository(path: Path) -> tuple[Repository, Ref, Ref]:
    repo = Repository.init(LocalBackend(path, create=True))
    with repo.transaction("old aptos writes") as txn:
        txn.put(NS_BACKUPS, "bak1", packb({"name": "bak1", "created": 0.0}))
        data_ref, size = _old_stream(txn, DATA)
        txn.put(NS_FILES, "bak1/file1", FileValue(data_ref, size).encode(), refs=[data_ref])
        meta_ref, msize = _old_stream(txn, META)
        txn.put(NS_METADATA, "epoch_ending_0-9.meta", FileValue(meta_ref, msize, 1).encode(), refs=[meta_ref])
    return repo, data_ref, meta_ref


def test_legacy_body_reads_checks_and_survives_gc(tmp_path, cli):
    repo, data_ref, meta_ref = _old_repository(tmp_path / "repo")
    storage = AptosStorage(repo)
    assert storage.read_all("bak1/file1") == DATA
    assert storage.read_all("metadata/epoch_ending_0-9.meta") == META
    got = cli("-r", str(tmp_path / "repo"), "aptos", "open-for-read", "--file-handle", "bak1/file1")
    assert got.code == 0, got.stderr
    assert got.stdout == DATA

    # An orphan chunk is the control: gc must delete it and keep everything the old FILEs list.
    orphan = store_orphan(repo, b"nobody lists me")  # a pack no generation locates
    with repo.transaction("later") as txn:
        txn.put("other", "k", b"v")
    for _ in range(2):  # condemn, then delete
        Collector(repo, grace=0, keep_last=1, force=True).run()
    assert not repo.store.exists_object(orphan)
    assert storage.read_all("bak1/file1") == DATA
    head = repo.read_root()[0].generation
    for ref in (data_ref, meta_ref):
        refs, _ = repo.store.get_structured(ref, head)
        assert refs and all(blob_stored(repo, r.id) for r in refs)

    r = cli("-r", str(tmp_path / "repo"), "check", "--read-data")
    assert r.code == 0, r.stdout.decode() + r.stderr


def test_new_writes_use_the_v1_body_and_old_content_is_the_same_content(tmp_path):
    repo, _, meta_ref = _old_repository(tmp_path / "repo")
    storage = AptosStorage(repo)
    # A retried save of the same lines finds the old entry: success, nothing written.
    again = storage.save_metadata("epoch_ending_0-9.meta", META)
    assert again.file == meta_ref
    # A new file is written in the v1 body of FORMAT.md §6.4.
    storage.create_backup("bak2")
    value = storage.write_file(storage.prepare_write("bak2", "file2"), io.BytesIO(DATA))
    _, body = repo.store.get_structured(value.file, repo.read_root()[0].generation)
    assert body["v"] == 1 and "size" not in body and len(body["chunks"]) == 3
    assert value.file != storage.resolve(parse_handle("bak1/file1")).file  # same bytes, new body, new ID
    assert storage.read_all("bak2/file2") == DATA


def test_import_rerun_recognises_content_stored_in_the_old_body(tmp_path):
    from casbackup.aptos.legacy import LegacyImporter

    repo, _, _ = _old_repository(tmp_path / "repo")
    legacy = tmp_path / "legacy"
    (legacy / "bak1").mkdir(parents=True)
    (legacy / "bak1" / "file1").write_bytes(DATA)
    (legacy / "metadata").mkdir()
    (legacy / "metadata" / "epoch_ending_0-9.meta").write_bytes(META)
    report = LegacyImporter(AptosStorage(repo), legacy).run()
    assert report.files_present == 1 and report.files_imported == 0
    assert report.metadata_present == 1 and report.metadata_imported == 0
    assert not report.rejected
