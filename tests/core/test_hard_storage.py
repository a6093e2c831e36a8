"""Messages that name the thing (item 17) and reading read-only storage with --no-pin (item 18)."""
from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

import casbackup.backends.local as local_mod
from casbackup.backends import LocalBackend
from casbackup.backends.objectstore import ObjectStoreBackend
from casbackup.errors import BackendError, BlobMissing, WriteRefused
from casbackup.gc import Collector
from casbackup.repository import Repository

from helpers_common import cli_env, run_cli

# ---- item 17: a full disk names the path and is a storage error --------------------------------


def test_local_enospc_is_a_backend_error_naming_the_path(tmp_path: Path, local_repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = local_repo

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(local_mod.os, "write", full)
    with pytest.raises(BackendError) as info:
        repo.commit(puts=[("ns", "k", b"x" * 20000)])
    assert info.value.exit_code == 8
    assert "No space left on device" in str(info.value) and str(tmp_path / "repo" / "pins") in str(info.value)
    with pytest.raises(BackendError, match=f"writing {tmp_path / 'repo' / 'blobs'}.*No space left on device"):
        repo.backend.create("blobs/ab/" + "ab" * 32, b"data")


@pytest.mark.parametrize("code", [errno.EDQUOT, errno.EIO, errno.EROFS])
def test_local_write_errors_name_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    backend = LocalBackend(tmp_path / "repo", create=True)

    def fail(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(local_mod.os, "fsync", fail)
    with pytest.raises(BackendError) as info:
        backend.create("blobs/ab/key", b"data")
    assert str(tmp_path / "repo" / "blobs" / "ab") in str(info.value) and os.strerror(code) in str(info.value)
    assert isinstance(info.value, WriteRefused) == (code == errno.EROFS)


def _mount(*args: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only; skipped elsewhere: the injected tests above cover the mapping)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_cli_full_disk_exits_8_naming_the_path(tiny_disk: Path) -> None:
    repo = str(tiny_disk / "repo")
    assert run_cli("-r", repo, "init").code == 0
    r = run_cli("-r", repo, "meta", "put", "ns", "k", "-", input=os.urandom(3 * 1024 * 1024))
    assert r.code == 8, (r.code, r.stderr)
    assert r.stderr.startswith("casbackup: error:") and r.stderr.count("\n") == 1, r.stderr
    assert "No space left on device" in r.stderr and repo in r.stderr


def test_cli_oserror_mapping_names_the_path_and_maps_storage_errnos() -> None:
    from casbackup.cli import _os_error

    exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    exc.add_note("path: /restore/target/file")
    assert _os_error(exc) == "No space left on device: /restore/target/file"
    assert _os_error(OSError(errno.EIO, "Input/output error", b"/x/\xff")) == "Input/output error: /x/\\xff"


# ---- item 17: missing S3 credentials are named -------------------------------------------------


class _FakeObstoreError(Exception):
    pass


def test_metadata_server_refusal_says_credentials_are_missing() -> None:
    backend = ObjectStoreBackend(lambda _retries: object(), "s3://bkt/p")
    exc = _FakeObstoreError("Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token in 2ms"
                            " - Server returned non-2xx status code: 403 Forbidden: resolve_deny")
    msg = str(backend._fail("get", "config", exc))
    assert "no storage credentials" in msg and "AWS_ACCESS_KEY_ID" in msg and "AWS_SECRET_ACCESS_KEY" in msg
    assert "169.254" not in msg and "403" not in msg


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [["snapshots"], ["init"]])
def test_cli_s3_without_credentials_names_the_variables(command: list[str]) -> None:
    env = {k: v for k, v in cli_env().items() if not k.startswith("AWS_")}
    env["AWS_METADATA_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"  # no metadata server: loopback only
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    proc = subprocess.run([sys.executable, "-m", "casbackup", "-r", "s3://bkt/p", "-o",
                           f"endpoint=http://127.0.0.1:{_closed_port()}", "-o", "allow_http=true", *command],
                          env=env, capture_output=True, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 8, err
    assert err.count("\n") == 1 and "AWS_ACCESS_KEY_ID" in err and "credentials" in err, err


# ---- item 18: --no-pin -------------------------------------------------------------------------


class _ReadOnly(LocalBackend):
    """Local storage whose writes fail as a read-only mount's do (EROFS)."""

    def _write_temp(self, directory: Path, data: bytes) -> Path:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(directory))

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self.root / key))
        except OSError as exc:
            raise local_mod._fail("writing", self.root / key, exc) from exc


def test_unwritable_pin_suggests_no_pin_and_unpinned_reader_reads(tmp_path: Path, local_repo: Repository) -> None:
    repo = local_repo
    repo.commit(puts=[("ns", "k", b"v"), ("ns", "big", b"b" * 50000)])
    ro = Repository.open(_ReadOnly(tmp_path / "repo"))
    with pytest.raises(WriteRefused, match="--no-pin") as info:
        ro.open_reader()
    assert info.value.exit_code == 8 and "Read-only file system" in str(info.value)
    with ro.reader(pin=False) as snap:
        assert snap.get("ns", "k") == b"v" and snap.get("ns", "big") == b"b" * 50000
    ro.pin_reads = False
    with ro.reader() as snap:
        assert [e.key for e in snap.list("ns")] == ["big", "k"]
    assert not [p for p in (tmp_path / "repo").glob("pins/*") if not p.name.startswith(".")]


def test_unpinned_reader_still_fails_loudly_on_a_collected_blob(mem_repo: Repository) -> None:
    repo = mem_repo
    repo.commit(puts=[("ns", "big", b"b" * 50000)])
    snap = repo.open_reader(pin=False)
    repo.commit(deletes=[("ns", "big")])
    for _ in range(5):
        repo.commit(puts=[("ns", "other", os.urandom(8))])
    Collector(repo, grace=0, force=True).run()
    Collector(repo, grace=0, force=True).run()
    with pytest.raises(BlobMissing):
        snap.get("ns", "big")


def test_transactions_always_pin(mem_repo: Repository) -> None:
    repo = mem_repo
    repo.pin_reads = False
    txn = repo.transaction()
    assert any(info.key.startswith("pins/") for info in repo.backend.list("pins/"))
    txn.abort()


def _tree(root: Path) -> dict[str, tuple[int, float]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime)
    return out


@pytest.fixture
def filled_repo(tmp_path: Path) -> tuple[str, Path]:
    repo = str(tmp_path / "repo")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"hello")
    assert run_cli("-r", repo, "init").code == 0
    assert run_cli("-r", repo, "backup", str(src)).code == 0
    assert run_cli("-r", repo, "meta", "put", "ns", "k", "v").code == 0
    return repo, src


@pytest.mark.slow
def test_cli_no_pin_reads_write_nothing(filled_repo: tuple[str, Path], tmp_path: Path) -> None:
    repo, src = filled_repo
    before = _tree(Path(repo))
    commands = [["snapshots"], ["ls", "latest"], ["cat", "latest", str(src / "a.txt")],
                ["restore", "latest", "--target", str(tmp_path / "out")], ["meta", "get", "ns", "k"],
                ["meta", "list"]]
    for cmd in commands:
        r = run_cli("--no-pin", "-r", repo, *cmd)
        assert r.code == 0, (cmd, r.stderr)
        assert r.stderr.count("--no-pin") == 1 and r.stderr.count("\n") == 1, r.stderr
    assert run_cli("--no-pin", "-r", repo, "cat", "latest", str(src / "a.txt")).stdout == b"hello"
    r = run_cli("-r", repo, "snapshots", env={"CASBACKUP_NO_PIN": "1"})
    assert r.code == 0 and "--no-pin" in r.stderr
    assert _tree(Path(repo)) == before


@pytest.mark.parametrize("cmd", [["meta", "put", "ns", "k", "v"], ["gc"], ["forget", "latest"]])
@pytest.mark.slow
def test_cli_no_pin_with_a_write_command_is_a_usage_error(filled_repo: tuple[str, Path], cmd: list[str]) -> None:
    repo, _ = filled_repo
    r = run_cli("--no-pin", "-r", repo, *cmd)
    assert r.code == 2 and r.stderr.count("\n") == 1 and "--no-pin" in r.stderr, r.stderr
    assert "for reading only" in r.stderr, r.stderr


@pytest.fixture
def read_only_mount(filled_repo: tuple[str, Path], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The repository seen through a read-only bind mount (root only)."""
    repo, src = filled_repo
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if not _mount("--bind", repo, str(mnt)):
        pytest.skip("cannot bind-mount here")
    try:
        if not _mount("-o", "remount,bind,ro", str(mnt)):
            pytest.skip("cannot remount read-only here")
        yield str(mnt), src
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_cli_read_only_mount_needs_and_works_with_no_pin(read_only_mount: tuple[str, Path], tmp_path: Path) -> None:
    repo, src = read_only_mount
    r = run_cli("-r", repo, "snapshots")
    assert r.code == 8 and r.stderr.count("\n") == 1, r.stderr
    assert "--no-pin" in r.stderr and "Read-only file system" in r.stderr and repo in r.stderr
    for cmd in (["snapshots"], ["ls", "latest"], ["cat", "latest", str(src / "a.txt")],
                ["restore", "latest", "--target", str(tmp_path / "out")], ["meta", "get", "ns", "k"],
                ["check"]):
        r = run_cli("--no-pin", "-r", repo, *cmd)
        assert r.code == 0, (cmd, r.stderr)
    assert (tmp_path / "out" / str(src).lstrip("/") / "a.txt").read_bytes() == b"hello"




@pytest.mark.slow
def test_cli_restore_onto_a_full_disk_exits_8_naming_the_file(tiny_disk: Path, tmp_path: Path) -> None:
    """pwrite's ENOSPC carries no file name: restore attaches the target path (item 17)."""
    repo, src = str(tmp_path / "repo"), tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    assert run_cli("-r", repo, "init").code == 0
    assert run_cli("-r", repo, "backup", str(src)).code == 0
    r = run_cli("-r", repo, "restore", "latest", "--target", str(tiny_disk / "out"))
    assert r.code == 8, (r.code, r.stderr)
    assert r.stderr.startswith("casbackup: error:") and r.stderr.count("\n") == 1, r.stderr
    assert "No space left on device" in r.stderr and "big.bin" in r.stderr, r.stderr
