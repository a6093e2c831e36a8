"""Encrypted repositories (spec/FORMAT.md §13): nothing readable at rest, every byte
authenticated and bound to its name, no nonce reuse, key slots, rotation, rollback detection.
Library level, on memory and on real disk, with cheap KDF parameters (the CLI tests use the
real ones)."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from casbackup.backends import LocalBackend, MemoryBackend
from casbackup.check import check
from casbackup.codec import BlobType, Cipher, decode_blob, encode_record, pack_structured
from casbackup.errors import (BlobCorrupt, KeyRemoved, KeyUnavailable, PasswordMissing, RecordCorrupt,
                              RollbackDetected, UsageError, WrongPassword)
from casbackup.gcstate import write_gcstate
from casbackup.keys import change_password, list_slots, make_slot, new_kdf, remove_slot, rotate, write_new_slot
from casbackup.layout import CONFIG_KEY, GC_LEASE_KEY, KEY_PREFIX, PIN_PREFIX, ROOT_KEY
from casbackup.pins import acquire_gc_lease
from casbackup.records import RecordType
from casbackup.repository import Repository
from casbackup.sealing import SEAL_PREFIX, Suite

from helpers_common import overwrite

PASSWORD = "correct horse"
PLANTED = [b"PLANTED-CONTENT-4711", b"planted-namespace", b"planted-key-name", b"PLANTED-VALUE-0815",
           b"planted-large-value"]


def encrypted(backend=None) -> Repository:  # type: ignore[no-untyped-def]
    """A cheap KDF: these tests open repositories thousands of times."""
    return Repository.init(backend or MemoryBackend(), password=PASSWORD, kdf=new_kdf(ops=1, mem=8 * 1024))


def reopen(repo: Repository, password: str | None = PASSWORD, write: bool = True) -> Repository:
    return Repository.open(repo.raw_backend, write=write, password=password if password is not None else (lambda: None))


def _populate(repo: Repository) -> None:
    with repo.transaction("planted-message") as txn:
        chunk = txn.put_blob(BlobType.CHUNK, PLANTED[0] * 50).ref
        txn.put("planted-namespace", "planted-key-name", PLANTED[3])
        txn.put("planted-namespace", "big", PLANTED[4] * 1000)  # a VALUE blob
        txn.put("planted-namespace", "with-refs", b"r", refs=[chunk])
        txn.put_blob(BlobType.TREE, pack_structured([chunk], {"v": 1, "entries": [["planted-key-name", 1]]},
                                                    BlobType.TREE))
    write_gcstate(repo.store, "condemned", {chunk.id: 1700000000.0})
    repo.open_reader("planted-purpose", renew=False)  # leaves a pin behind
    acquire_gc_lease(repo.backend).stop_renewing()


def _all_objects(backend) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    keys = [CONFIG_KEY, ROOT_KEY] + sorted(i.key for p in ("blobs/", "packs/", "pins/", "locks/", KEY_PREFIX)
                                           for i in backend.list(p))
    return {k: backend.get(k) for k in keys}


def test_nothing_planted_is_readable_and_every_object_is_sealed() -> None:
    repo = encrypted()
    _populate(repo)
    stored = _all_objects(repo.raw_backend)
    assert any(k.startswith(PIN_PREFIX) for k in stored) and GC_LEASE_KEY in stored
    blob = b"".join(stored.values())
    for text in PLANTED + [b"planted-message", b"planted-purpose"]:
        assert text not in blob
    for key, data in stored.items():
        if key.startswith(KEY_PREFIX):
            assert data[7] == Cipher.NONE  # a slot is plaintext framing around its own AEAD parts
        elif key.startswith("packs/"):
            toc_len = int.from_bytes(data[-12:-8], "little")
            assert data[-12 - toc_len:][7] == Cipher.AES256GCM
        else:
            assert data[:4] == b"CASB" and data[7] == Cipher.AES256GCM, key
    # and it all reads back
    again = reopen(repo, write=False)
    with again.reader() as r:
        assert r.get("planted-namespace", "planted-key-name") == PLANTED[3]
        assert r.get("planted-namespace", "big") == PLANTED[4] * 1000
    assert check(again, read_data=True).ok


def test_ids_are_keyed_so_two_repositories_never_share_an_id() -> None:
    a, b, plain = encrypted(), encrypted(), Repository.init(MemoryBackend())
    ids = [r.store.blob_id(BlobType.CHUNK, b"same content") for r in (a, b, plain)]
    assert len(set(ids)) == 3


def _decode_everything(repo: Repository) -> None:
    """Read every stored object as a reader of this repository would (raises on damage)."""
    fresh = Repository.open(repo.raw_backend, password=PASSWORD)
    report = check(fresh, read_data=True)
    problems = report.corrupt + report.dangling + report.corrupt_records + report.corrupt_unreferenced
    if not report.ok or problems or report.unreadable_pins:
        raise BlobCorrupt("check", "; ".join(f"{p.blob}: {p.reason}" for p in problems) + " ".join(report.unreadable_pins))


def test_every_single_byte_flip_of_every_stored_object_is_detected() -> None:
    backend = MemoryBackend()
    repo = encrypted(backend)
    _populate(repo)
    stored = _all_objects(backend)
    _decode_everything(repo)
    flips = 0
    for key, data in stored.items():
        for offset in range(len(data)):
            bad = bytearray(data)
            bad[offset] ^= 0x01 if offset % 2 else 0xFF
            overwrite(backend, key, bytes(bad))
            try:
                with pytest.raises((BlobCorrupt, WrongPassword)) as err:
                    _decode_everything(repo)
                if not key.startswith(KEY_PREFIX):
                    name = key.rsplit("/", 1)[-1]
                    assert name in str(err.value) or key in str(err.value) or key.startswith("packs/"), (key, offset, err.value)
            finally:
                overwrite(backend, key, data)
            flips += 1
    assert flips > 3000


def test_a_swapped_ciphertext_is_detected() -> None:
    backend = MemoryBackend()
    repo = encrypted(backend)
    _populate(repo)
    with repo.transaction("second") as txn:
        txn.put("ns", "k", b"v")
    loose = sorted(i.key for i in backend.list("blobs/"))
    a, b = loose[0], loose[1]
    data_a = backend.get(a)
    overwrite(backend, b, data_a)  # blob A's bytes under blob B's name
    with pytest.raises(BlobCorrupt, match="authentication failed"):
        decode_blob(b.rsplit("/", 1)[1], data_a, None, repo.store.suite)
    assert not check(Repository.open(backend, password=PASSWORD), read_data=True).ok
    # a record replayed under another record's name
    pins = sorted(i.key for i in backend.list(PIN_PREFIX))
    overwrite(backend, GC_LEASE_KEY, backend.get(pins[0]))
    with pytest.raises(RecordCorrupt, match="authentication failed"):
        Repository.open(backend, password=PASSWORD).backend.get(GC_LEASE_KEY)


def test_a_plaintext_object_substituted_into_an_encrypted_repository_is_refused() -> None:
    repo = encrypted()
    root, _ = repo.read_root()
    plain = encode_record(RecordType.ROOT, {"generation": root.generation, "seq": root.seq + 5,
                                            "write_id": "ab" * 16, "gc_epoch": 0, "condemned": None, "sweeping": None,
                                            "retain_floor": 0, "time": 0.0})
    overwrite(repo.raw_backend, ROOT_KEY, plain)
    with pytest.raises(RecordCorrupt, match="stored unencrypted in an encrypted repository"):
        reopen(repo).read_root()


def test_wrong_missing_and_removed_passwords_each_have_their_own_error() -> None:
    repo = encrypted()
    with pytest.raises(WrongPassword):
        reopen(repo, "not it")
    with pytest.raises(PasswordMissing):
        Repository.open(repo.raw_backend, password=lambda: None)
    second = make_slot(repo.keys.ring, b"second password", new_kdf(ops=1, mem=8 * 1024))
    write_new_slot(repo.raw_backend, second)
    assert reopen(repo, "second password").keys.slot.slot_id == second.slot_id
    remove_slot(repo.raw_backend, repo.keys, second.slot_id)
    with pytest.raises(KeyRemoved, match=second.slot_id):
        reopen(repo, "second password")
    with pytest.raises(WrongPassword):
        reopen(repo, "never a password")
    assert WrongPassword.exit_code != PasswordMissing.exit_code != KeyRemoved.exit_code != WrongPassword.exit_code


def test_the_last_key_and_the_key_in_use_cannot_be_removed() -> None:
    repo = encrypted()
    with pytest.raises(UsageError, match="last key"):
        remove_slot(repo.raw_backend, repo.keys, repo.keys.slot.slot_id)
    other = make_slot(repo.keys.ring, b"other", new_kdf(ops=1, mem=8 * 1024))
    write_new_slot(repo.raw_backend, other)
    with pytest.raises(UsageError, match="opened the repository with"):
        remove_slot(repo.raw_backend, repo.keys, repo.keys.slot.slot_id)


def test_passwd_keeps_the_slot_and_changes_the_password() -> None:
    repo = encrypted()
    slot_id = repo.keys.slot.slot_id
    change_password(repo.raw_backend, repo.keys, b"new password", new_kdf(ops=1, mem=8 * 1024))
    with pytest.raises(WrongPassword):
        reopen(repo, PASSWORD)
    assert reopen(repo, "new password").keys.slot.slot_id == slot_id


def test_rotate_seals_new_writes_under_the_new_epoch_and_old_data_stays_readable() -> None:
    repo = encrypted()
    with repo.transaction("before") as txn:
        txn.put("ns", "old", b"old value" * 500)
    other = make_slot(repo.keys.ring, b"other", new_kdf(ops=1, mem=8 * 1024))
    write_new_slot(repo.raw_backend, other)
    old_slot_bytes = repo.raw_backend.get(other.key)  # a copy of the slot holding epoch 0 only
    ring = rotate(repo.raw_backend, repo.keys)
    assert ring.current == 1 and all(s.epoch == 1 for s in list_slots(repo.raw_backend))
    rotated = reopen(repo)
    assert rotated.keys.ring.current == 1
    with rotated.transaction("after") as txn:
        txn.put("ns", "new", b"new value" * 500)
    epoch_of_root = SEAL_PREFIX.unpack(repo.raw_backend.get(ROOT_KEY)[8:36])[0]
    assert epoch_of_root == 1
    with reopen(repo, "other").reader() as r:  # the other key got the new epoch too
        assert r.get("ns", "old") == b"old value" * 500 and r.get("ns", "new") == b"new value" * 500
    # someone who kept the old slot (epoch 0 only) reads nothing written since
    overwrite(repo.raw_backend, other.key, old_slot_bytes)
    stale = reopen(repo, "other")
    assert stale.keys.ring.current == 0
    with pytest.raises(KeyUnavailable, match="key epoch 1"):
        stale.read_root()


def test_many_threads_and_sessions_never_reuse_a_nonce() -> None:
    epochs = {0: b"\x01" * 32}
    suites = [Suite(b"\x02" * 16, b"\x03" * 32, epochs, 0) for _ in range(4)]
    seen: list[bytes] = []
    lock = threading.Lock()

    def seal_many(s: Suite) -> None:
        out = [s.seal(b"CASB\x02\x01\x00\x01", b"x", "n")[:28] for _ in range(5000)]
        with lock:
            seen.extend(out)

    threads = [threading.Thread(target=seal_many, args=(s,)) for s in suites for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 40000 and len(set(seen)) == 40000  # (epoch, session, counter) never repeats


def test_a_rolled_back_root_is_refused(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo", create=True)
    repo = encrypted(backend)
    with repo.transaction("one") as txn:
        txn.put("ns", "a", b"1")
    saved = (tmp_path / "repo" / "root").read_bytes()
    with reopen(repo).transaction("two") as txn:
        txn.put("ns", "b", b"2")
    reopen(repo).read_root()  # this machine has now seen generation 2
    (tmp_path / "repo" / "root").write_bytes(saved)  # the store serves the older, authentic root
    with pytest.raises(RollbackDetected, match="already seen generation 2"):
        reopen(repo).read_root()


def test_an_unencrypted_repository_has_no_watermark_and_no_keys() -> None:
    repo = Repository.init(MemoryBackend())
    assert not repo.encrypted and repo.root.watermark is None and repo.store.suite is None


def test_the_copy_of_a_whole_repository_directory_opens_with_the_same_password(tmp_path: Path) -> None:
    repo = encrypted(LocalBackend(tmp_path / "a", create=True))
    with repo.transaction("one") as txn:
        txn.put("ns", "a", b"1")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = Repository.open(LocalBackend(tmp_path / "b"), write=True, password=PASSWORD)
    with copy.transaction("in the copy") as txn:  # a new session: no nonce of the original is reused
        txn.put("ns", "b", b"2")
    with copy.reader() as r:
        assert r.get("ns", "a") == b"1" and r.get("ns", "b") == b"2"


def test_rotate_reencrypt_then_gc_leaves_nothing_an_old_key_opens(tmp_path: Path) -> None:
    from casbackup.codec import sealed_epoch
    from casbackup.gc import collect
    from casbackup.packs import split_pack, toc_epoch

    backend = LocalBackend(tmp_path / "repo", create=True)
    repo = encrypted(backend)
    for i in range(3):
        with reopen(repo).transaction(f"commit {i}") as txn:
            txn.put("ns", f"k{i}", bytes([i]) * 20000)  # a VALUE blob, packed
            txn.put_blob(BlobType.CHUNK, bytes([i + 7]) * 5000)
    other = make_slot(repo.keys.ring, b"other", new_kdf(ops=1, mem=8 * 1024))
    write_new_slot(backend, other)
    old_slot = backend.get(other.key)  # kept by someone whose key is about to be retired
    rotate(backend, repo.keys)
    report = collect(reopen(repo), reencrypt=True, grace=0, force=True, keep_last=1)
    assert report.repacked_packs >= 1 and report.resealed >= 1
    collect(reopen(repo), grace=0, force=True, keep_last=1)  # the old packs are garbage now
    for info in backend.list(""):
        data = backend.get(info.key)
        if info.key.startswith(KEY_PREFIX) or info.key.startswith("selftest/"):
            continue
        if info.key.startswith("packs/"):
            pack_id = info.key.rsplit("/", 1)[1]
            assert toc_epoch(backend, pack_id, len(data)) == 1, info.key
            assert all(sealed_epoch(stored) == 1 for _, stored in split_pack(pack_id, data, reopen(repo).store.suite)[1])
        else:
            assert sealed_epoch(data) == 1, info.key
    with reopen(repo, "other").reader() as r:  # every current key reads all of it
        assert r.get("ns", "k0") == b"\x00" * 20000
    assert check(reopen(repo), read_data=True).ok
    overwrite(backend, other.key, old_slot)  # the retired key (epoch 0 only) opens nothing, not even the config
    with pytest.raises(KeyUnavailable, match="config is unreadable: sealed under key epoch 1"):
        Repository.open(backend, password="other")


def test_a_plaintext_repository_swapped_in_for_an_encrypted_one_is_refused(tmp_path: Path) -> None:
    where = tmp_path / "repo"
    encrypted(LocalBackend(where, create=True))
    Repository.open(LocalBackend(where), password=PASSWORD)  # this machine has seen it encrypted
    forged = tmp_path / "forged"
    Repository.init(LocalBackend(forged, create=True))  # the store's unencrypted forgery
    shutil.rmtree(where)
    shutil.copytree(forged, where)
    with pytest.raises(RollbackDetected, match="seen an encrypted repository there"):
        Repository.open(LocalBackend(where))
    Repository.open(LocalBackend(forged))  # elsewhere it is just an unencrypted repository
    shutil.rmtree(where)
    Repository.init(LocalBackend(where, create=True))  # an init there on purpose forgets the mark
    Repository.open(LocalBackend(where))
