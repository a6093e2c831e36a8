"""Damaged and hostile repositories through the real CLI (S5, S9), and check (library + CLI).

Every case must give the right error class (exit code from casbackup/errors.py), one clear
line on stderr naming the blob, and no traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import zstandard

from helpers_common import run_cli, store_orphan, without_plaintext_warning
from casbackup import codec
from casbackup.backends import LocalBackend
from casbackup.check import check
from casbackup.codec import BlobType, Compression, Ref
from casbackup.records import ROOT_KEY, Root, new_write_id
from casbackup.repository import Repository
from casbackup.layout import pack_key
from casbackup.store import blob_key

pytestmark = pytest.mark.slow  # every case damages a repository and runs the CLI on it

BIG = b"B" * 30000  # stored in its own VALUE blob


def one_line_error(result: Any, code: int, *needles: str) -> None:
    assert result.code == code, (result.code, result.stderr)
    err = without_plaintext_warning(result.stderr).strip()
    assert "Traceback" not in err
    assert err.startswith("casbackup: error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, (n, err)


@pytest.fixture
def plain_repo_dir(tmp_path: Path, cli: Callable[..., Any]) -> Path:
    """An unencrypted repository: hand-crafted plaintext envelopes are what its readers meet."""
    path = tmp_path / "plain"
    assert cli("-r", str(path), "init", "--insecure-no-encryption").code == 0
    assert cli("-r", str(path), "meta", "put", "ns", "small", "hello").code == 0
    return path


@pytest.fixture
def repo_dir(cli_repo: Path, cli: Callable[..., Any]) -> Path:
    path = cli_repo
    assert cli("-r", str(path), "meta", "put", "ns", "small", "hello").code == 0
    assert cli("-r", str(path), "meta", "put", "ns", "big", "-", input=BIG).code == 0
    return path


def library(path: Path) -> Repository:
    return Repository.open(LocalBackend(path))


def blob_path(path: Path, blob: str) -> Path:
    """A loose blob's file, or (format 2) the pack the head locates a packed blob in (the test
    data puts the big value alone in its pack)."""
    repo = library(path)
    loc = repo.locate(repo.read_root()[0].generation, blob)
    return path / (pack_key(loc.pack) if loc else blob_key(blob))


def value_blob(path: Path) -> str:
    with library(path).reader() as snap:
        e = snap.entry("ns", "big")
        assert e is not None and e.value_ref is not None
        return e.value_ref.id


def tree_root(path: Path) -> str:
    repo = library(path)
    gen = repo.load_generation(repo.read_root()[0].generation)
    assert gen.index is not None
    return gen.index.id


def head(path: Path) -> str:
    return library(path).read_root()[0].generation


def test_clean_repository_checks_ok(repo_dir: Path, cli: Callable[..., Any]) -> None:
    r = cli("-r", str(repo_dir), "check", "--read-data")
    assert r.code == 0 and "no errors found" in r.out, r.stderr
    doc = json.loads(cli("-r", str(repo_dir), "check", "--read-data", "--json").out)
    assert doc["ok"] is True and doc["dangling"] == [] and doc["corrupt"] == []


def test_flipped_byte(repo_dir: Path, cli: Callable[..., Any]) -> None:
    blob = value_blob(repo_dir)
    p = blob_path(repo_dir, blob)
    data = bytearray(p.read_bytes())
    repo = library(repo_dir)
    loc = repo.locate(repo.read_root()[0].generation, blob)  # format 2: the blob's range in its pack
    data[loc.offset + loc.length // 2] ^= 0x01
    p.write_bytes(bytes(data))
    one_line_error(cli("-r", str(repo_dir), "meta", "get", "ns", "big"), 5, blob, "corrupt", head(repo_dir))
    assert cli("-r", str(repo_dir), "meta", "get", "ns", "small").stdout == b"hello"  # the rest still reads
    assert cli("-r", str(repo_dir), "check").code == 0  # without --read-data, raw blobs are not read
    r = cli("-r", str(repo_dir), "check", "--read-data")
    assert r.code == 13 and f"corrupt: {blob}" in r.out
    one_line_error(r, 13, "1 corrupt")


def test_truncated_page(repo_dir: Path, cli: Callable[..., Any]) -> None:
    page = tree_root(repo_dir)
    p = blob_path(repo_dir, page)
    p.write_bytes(p.read_bytes()[:-7])
    one_line_error(cli("-r", str(repo_dir), "meta", "list"), 5, page, "corrupt")
    one_line_error(cli("-r", str(repo_dir), "meta", "get", "ns", "small"), 5, page)
    r = cli("-r", str(repo_dir), "check")
    assert r.code == 13 and page in r.out


def test_deleted_blob(repo_dir: Path, cli: Callable[..., Any]) -> None:
    blob = value_blob(repo_dir)
    blob_path(repo_dir, blob).unlink()
    one_line_error(cli("-r", str(repo_dir), "meta", "get", "ns", "big"), 4, blob, "missing", head(repo_dir))
    r = cli("-r", str(repo_dir), "check", "--json")
    assert r.code == 13
    doc = json.loads(r.out)
    assert [d["blob"] for d in doc["dangling"]] == [blob] and doc["ok"] is False


def test_deleted_page_lists_loudly(repo_dir: Path, cli: Callable[..., Any]) -> None:
    page = tree_root(repo_dir)
    blob_path(repo_dir, page).unlink()
    one_line_error(cli("-r", str(repo_dir), "meta", "list"), 4, page, "missing")


def publish_tree(path: Path, tree: Ref) -> None:
    """Make a new head whose tree is `tree` (a hostile page with a valid hash)."""
    repo = Repository.open(LocalBackend(path), write=True)
    root, etag = repo.read_root()
    gen = repo._write_generation(root.seq + 1, root.generation, tree, 1, new_write_id(), "hostile")
    new_root = Root(gen.id, gen.seq, gen.write_id, root.gc_epoch, root.condemned, root.sweeping, root.retain_floor,
                    repo.backend.now())
    repo.backend.compare_and_swap(ROOT_KEY, etag, new_root.encode())


@pytest.mark.parametrize("payload,reason", [
    (b"\x92\x90" + b"\x91" * 200_000 + b"\xc0", "nested"),  # [[], [[[[...]]]]]
    (b"\x92\x90\x92\x00\xdd\xff\xff\xff\xff", "exceeds"),  # [[], [0, array of 4G items]]
    (b"\x92\x90\x92\x00\x91\xdb\xff\xff\xff\xff", "msgpack"),  # a 4 GiB string, 0 bytes of it
], ids=["deep-nesting", "huge-array", "huge-string"])
def test_hostile_msgpack_with_a_valid_hash(repo_dir: Path, cli: Callable[..., Any], payload: bytes,
                                           reason: str) -> None:
    repo = Repository.open(LocalBackend(repo_dir), write=True)
    ref = repo.store.put(BlobType.PAGE, payload).ref  # hashes correctly: only the content is evil
    publish_tree(repo_dir, ref)
    r = cli("-r", str(repo_dir), "meta", "list")
    one_line_error(r, 5, ref.id, "msgpack")
    assert reason in r.stderr
    assert cli("-r", str(repo_dir), "check").code == 13


def test_zstd_bomb(plain_repo_dir: Path, cli: Callable[..., Any]) -> None:
    repo_dir = plain_repo_dir
    page = tree_root(repo_dir)
    cobj = zstandard.ZstdCompressor(level=1, write_content_size=True).compressobj(size=8 << 30)
    piece = b"\0" * (1 << 20)
    frame = b"".join(cobj.compress(piece) for _ in range(8 << 10)) + cobj.flush()
    bomb = codec.seal(codec.MAGIC + bytes([codec.FORMAT_VERSION, BlobType.PAGE, Compression.ZSTD, 0]) + frame)
    assert len(bomb) < 1 << 20  # 8 GiB declared in well under 1 MiB
    blob_path(repo_dir, page).write_bytes(bomb)
    r = cli("-r", str(repo_dir), "meta", "list", timeout=60)
    one_line_error(r, 5, page, "declares")
    assert cli("-r", str(repo_dir), "check").code == 13


def test_unknown_format_version(plain_repo_dir: Path, cli: Callable[..., Any]) -> None:
    repo_dir = plain_repo_dir
    page = tree_root(repo_dir)
    p = blob_path(repo_dir, page)
    data = p.read_bytes()
    # A (future) version 7 object: sealed, or a damaged version byte is plain corruption.
    p.write_bytes(codec.seal(data[:4] + b"\x07" + data[5:-codec.CHECKSUM_LEN]))
    one_line_error(cli("-r", str(repo_dir), "meta", "list"), 10, "version 7")


def test_corrupt_root_and_config(repo_dir: Path, cli: Callable[..., Any]) -> None:
    (repo_dir / "root").write_bytes(b"CASB\x01\x11\x00\x00garbage")
    one_line_error(cli("-r", str(repo_dir), "meta", "list"), 5, "root")
    (repo_dir / "config").write_bytes(b"")
    one_line_error(cli("-r", str(repo_dir), "meta", "list"), 5, "config")


def test_hostile_and_bad_arguments(tmp_path: Path, repo_dir: Path, cli: Callable[..., Any]) -> None:
    one_line_error(cli("-r", str(tmp_path / "nope"), "meta", "list"), 9, "no repository")
    one_line_error(cli("-r", str(repo_dir), "meta", "get", "ns", "absent"), 3, "absent")
    one_line_error(cli("-r", str(repo_dir), "meta", "put", "ns", "", "v"), 2, "invalid key")
    one_line_error(cli("-r", str(repo_dir), "-o", "novalue", "meta", "list"), 2)
    one_line_error(cli("meta", "list"), 2, "CASBACKUP_REPO")
    r = cli("-r", str(repo_dir), "gc", "--grace", "5 minutes")
    assert r.code == 2 and "Traceback" not in r.stderr and "duration" in r.stderr
    one_line_error(cli("-r", str(repo_dir), "gc", "--grace", "10m"), 2, "--force")
    one_line_error(cli("-r", "s3x://bucket", "meta", "list"), 2, "scheme")


def test_check_reports_orphans_and_expired_pins_without_failing(repo_dir: Path, cli: Callable[..., Any]) -> None:
    repo = Repository.open(LocalBackend(repo_dir), write=True)
    orphan = store_orphan(repo, b"never committed")
    from casbackup.pins import new_pin

    pin = new_pin(repo.backend, head(repo_dir), 2, "dead", ttl=0.01, renew=False)
    import time

    time.sleep(0.05)
    report = check(repo, read_data=True)
    assert report.ok and report.orphans >= 1 and report.expired_pins == [pin.key]
    r = cli("-r", str(repo_dir), "check", "--json")
    assert r.code == 0
    doc = json.loads(r.out)
    assert doc["orphans"] >= 1 and doc["expired_pins"] == [pin.key]
    assert orphan  # informational only: still stored
    assert repo.store.exists_object(orphan)


def test_check_library_finds_dangling_and_corrupt(repo_dir: Path) -> None:
    value = value_blob(repo_dir)
    blob_path(repo_dir, value).write_bytes(b"CASB\x01\x02\x00\x00" + b"x" * 100)
    repo = library(repo_dir)
    report = check(repo)
    assert report.ok  # raw blob present, not read
    report = check(repo, read_data=True)
    # the blob, and the pack it was in (read whole: its layout is gone too)
    assert [p.blob for p in report.corrupt][:1] == [value] and not report.dangling
    assert {p.blob for p in report.corrupt[1:]} <= {"pack:" + p.name for p in [blob_path(repo_dir, value)]}
    assert report.corrupt[0].generation == head(repo_dir)
    blob_path(repo_dir, value).unlink()
    report = check(repo, read_data=True)
    assert [p.blob for p in report.dangling] == [value] and not report.ok


def test_usage_errors_are_one_line(tmp_path, cli):
    repo = str(tmp_path / "r")
    assert cli("-r", repo, "init").code == 0
    for args in (("gc", "--grace", "5x"), ("bogus",), ("meta", "put", "only-namespace")):
        r = cli("-r", repo, *args)
        assert r.code == 2, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("casbackup: error: ") and "--help" in lines[0], r.stderr


def test_init_refuses_chunk_sizes_the_chunker_cannot_use(tmp_path) -> None:
    """Accepting them would make every later backup fail; nothing may be created."""
    repo = tmp_path / "repo"
    r = run_cli("-r", str(repo), "init", "--chunk-min", "64", "--chunk-avg", "64", "--chunk-max", "256")
    assert r.code == 2 and r.stderr.count("\n") == 1 and "chunker" in r.stderr, r.stderr
    assert not (repo / "config").exists()
