"""File fidelity through the real CLI (issue 12): hard links come back as links, extended
attributes and POSIX ACLs are kept, sparse files stay sparse with --sparse, setuid survives the
owner change, symlinks get their owner and times. Root-only parts skip otherwise."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from casbackup.files import fidelity
from casbackup.files.tree import MAX_XATTR_BYTES
from helpers_files import backup, make_repo

ROOT = os.geteuid() == 0
T0 = 1_650_000_000_000_000_000
# a POSIX access ACL in the kernel's xattr form: user::rw-, user:1001:r--, group::r--, mask::r--, other::---
ACL = bytes.fromhex("02000000" "01000600ffffffff" "02000400e9030000" "04000400ffffffff"
                    "10000400ffffffff" "20000000ffffffff")


def j(r) -> dict:
    assert r.code == 0, r.stderr
    return json.loads(r.out)


def xattrs_supported(path: Path) -> bool:
    probe = path / ".probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def make_tree(src: Path) -> None:
    """Hard links (3 names, 2 dirs), xattrs, an ACL, a FIFO, a socket, a sparse file, setuid."""
    (src / "d1").mkdir(parents=True)
    (src / "d2").mkdir()
    (src / "d1" / "a").write_bytes(os.urandom(100_000))
    os.link(src / "d1" / "a", src / "d2" / "b")
    os.link(src / "d1" / "a", src / "c")
    (src / "small").write_bytes(b"tiny")
    os.link(src / "small", src / "d2" / "small-too")
    os.setxattr(src / "d1" / "a", "user.comment", b"shared by three names")
    os.setxattr(src / "small", "user.bin", b"\x00\xff\x10")
    os.setxattr(src / "d1", "user.dir", b"on a directory")
    os.mkfifo(src / "fifo", 0o640)
    os.link(src / "fifo", src / "d1" / "fifo-too")  # a hard-linked special file
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    sock.close()
    with open(src / "sparse", "wb") as f:  # zeros inside chunks too: only --sparse makes them holes
        for i in range(16):
            f.seek(i * 512 * 1024)
            f.write(os.urandom(8192))
        f.truncate(8 * 1024 * 1024)
    os.symlink("d1/a", src / "link")
    if ROOT:
        os.setxattr(src / "d1" / "a", "trusted.note", b"root only")
        os.setxattr(src / "small", "system.posix_acl_access", ACL)
        os.setxattr(src / "d2", "system.posix_acl_default", ACL)
        os.setxattr(src / "fifo", "trusted.fifo", b"f")
        os.setxattr(src / "link", "trusted.link", b"l", follow_symlinks=False)
        (src / "suid").write_bytes(b"#!/bin/sh\n")
        os.chown(src / "suid", 1234, 5678)
        os.chmod(src / "suid", 0o6755)  # survives only if the owner is set first
        os.chown(src / "link", 4321, 8765, follow_symlinks=False)
        os.chown(src / "d1" / "a", 1111, 2222)
    for i, p in enumerate(sorted(src.rglob("*"), reverse=True)):
        os.utime(p, ns=(T0 + i * 1_000_003, T0 + i * 1_000_003), follow_symlinks=False)


def view(root: Path) -> dict[str, tuple]:
    """Everything fidelity promises, per relative path: type, mode, owner, mtime, size, content
    hash, rdev, xattrs, the link count, and which earlier path shares the inode."""
    out: dict[str, tuple] = {}
    first: dict[int, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        st = os.lstat(p)
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
        names = sorted(os.listxattr(p, follow_symlinks=False))
        xattrs = tuple((n, os.getxattr(p, n, follow_symlinks=False)) for n in names)
        link_of = first.setdefault(st.st_ino, rel) if not stat.S_ISDIR(st.st_mode) else rel
        out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                    st.st_size if not stat.S_ISDIR(st.st_mode) else 0, digest, st.st_rdev, xattrs,
                    st.st_nlink if not stat.S_ISDIR(st.st_mode) else 0, link_of)
    return out


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    if not xattrs_supported(src):
        pytest.skip("the test file system has no user xattrs")
    make_tree(src)
    return src


def test_round_trip_keeps_links_xattrs_acls_specials_sparse_setuid(tree: Path, tmp_path: Path, cli) -> None:
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    doc = j(cli("-r", repo, "backup", str(tree), "--json"))
    assert doc["error_count"] == 0, doc["errors"]
    target = tmp_path / "out"
    res = j(cli("-r", repo, "restore", "latest", "--target", str(target), "--sparse", "--json"))
    got = target / str(tree).lstrip("/")
    want = view(tree)
    assert view(got) == want
    assert os.lstat(got / "c").st_nlink == 3 and os.lstat(got / "d2" / "b").st_ino == os.lstat(got / "d1" / "a").st_ino
    assert res["hardlinks"] == 4 and res["xattrs_skipped"] == 0  # b (or a), c, small-too, a fifo name
    assert os.lstat(got / "fifo").st_ino == os.lstat(got / "d1" / "fifo-too").st_ino
    # --sparse: the 8 MiB file holds 128 KiB of data; zero blocks inside chunks became holes
    assert os.lstat(got / "sparse").st_blocks * 512 < 1024 * 1024
    if ROOT:
        assert stat.S_IMODE(os.lstat(got / "suid").st_mode) == 0o6755 and os.lstat(got / "suid").st_uid == 1234
        assert os.lstat(got / "link").st_uid == 4321
        assert os.getxattr(got / "small", "system.posix_acl_access") == ACL
    # without --sparse the zeros inside chunks are written; the bytes are the same either way
    dense = tmp_path / "dense"
    j(cli("-r", repo, "restore", "latest", "--target", str(dense), "--json"))
    d = dense / str(tree).lstrip("/")
    assert view(d) == want
    assert os.lstat(d / "sparse").st_blocks > os.lstat(got / "sparse").st_blocks


def test_a_link_whose_first_name_is_not_restored_is_a_file(tree: Path, tmp_path: Path, cli) -> None:
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    j(cli("-r", repo, "backup", str(tree), "--json"))
    target = tmp_path / "out"
    res = j(cli("-r", repo, "restore", "latest", "--target", str(target), "--include", f"{tree}/d2", "--json"))
    b = target / str(tree).lstrip("/") / "d2" / "b"
    assert b.read_bytes() == (tree / "d1" / "a").read_bytes() and os.lstat(b).st_nlink == 1
    assert os.getxattr(b, "user.comment") == b"shared by three names"
    assert res["hardlinks"] == 0


def test_a_kept_existing_file_is_never_a_link_source(tree: Path, tmp_path: Path, cli) -> None:
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    j(cli("-r", repo, "backup", str(tree), "--json"))
    target = tmp_path / "out"
    stale = target / str(tree).lstrip("/") / "d1" / "a"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not the snapshot's")
    j(cli("-r", repo, "restore", "latest", "--target", str(target), "--overwrite", "never", "--json"))
    got = target / str(tree).lstrip("/")
    assert stale.read_bytes() == b"not the snapshot's"
    assert (got / "c").read_bytes() == (tree / "d1" / "a").read_bytes()
    assert os.lstat(got / "c").st_ino == os.lstat(got / "d2" / "b").st_ino != os.lstat(stale).st_ino


def test_xattrs_over_the_bound_are_an_error_not_a_silent_drop(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    big = {"user.a": b"1", "user.b": bytes(MAX_XATTR_BYTES), "user.c": b"3"}
    real_list, real_get = os.listxattr, os.getxattr

    def fake_list(path, follow_symlinks=True):  # type: ignore[no-untyped-def]
        return list(big) if str(path).endswith("/f") else real_list(path, follow_symlinks=follow_symlinks)

    def fake_get(path, name, follow_symlinks=True):  # type: ignore[no-untyped-def]
        if str(path).endswith("/f"):
            return big[os.fsdecode(name)]
        return real_get(path, name, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(fidelity.os, "listxattr", fake_list)
    monkeypatch.setattr(fidelity.os, "getxattr", fake_get)
    repo = make_repo()
    _, summary = backup(repo, src)
    assert summary.error_count == 1 and "user.b" in summary.errors[0]["error"]
    assert summary.errors[0]["path"].endswith("/f")
    from casbackup.files.reader import TreeReader
    from casbackup.files.snapshots import resolve
    with repo.reader() as snap:
        node = TreeReader(snap).lookup(resolve(snap, "latest").tree, f"{src}/f")
    assert node.xattrs == [(b"user.a", b"1"), (b"user.c", b"3")]


def test_xattrs_the_target_refuses_are_counted_not_fatal(tmp_path: Path) -> None:
    """An xattr the target refuses (an unknown namespace here; trusted.* when not root) is
    counted, and the others are still set; capture reads back what was set."""
    from casbackup.files.tree import Node
    if not xattrs_supported(tmp_path):
        pytest.skip("the test file system has no user xattrs")
    errors: list[tuple[str, str]] = []
    f = tmp_path / "f"
    f.write_bytes(b"")
    fd = os.open(f, os.O_RDONLY)
    try:
        n = fidelity.apply_xattrs(fd, [(b"bogus-namespace.x", b"1"), (b"user.ok", b"2")])
    finally:
        os.close(fd)
    assert n == 1 and os.getxattr(f, "user.ok") == b"2"
    node = Node(b"f", "file")
    fidelity.capture(node, str(f), os.lstat(f), lambda p, m: errors.append((p, m)))
    assert node.xattrs == [(b"user.ok", b"2")] and node.links == 0 and errors == []


def test_a_link_the_file_system_refuses_is_restored_as_a_copy(tree: Path, tmp_path: Path, monkeypatch) -> None:
    """EMLINK, EXDEV...: the later names still get the content and metadata, as separate files."""
    from helpers_files import restore, restored
    repo = make_repo(tmp_path / "repo")
    backup(repo, tree)

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(31, "Too many links")
    monkeypatch.setattr(os, "link", refuse)
    _, summary = restore(repo, tmp_path / "out")
    got = restored(tmp_path / "out", tree)
    assert summary.hardlinks == 0
    for name in ("c", "d2/b"):
        assert (got / name).read_bytes() == (tree / "d1" / "a").read_bytes()
        assert os.getxattr(got / name, "user.comment") == b"shared by three names"
        assert os.lstat(got / name).st_nlink == 1
        assert os.lstat(got / name).st_mtime_ns == os.lstat(tree / "d1" / "a").st_mtime_ns
    assert not list(got.rglob(".casbackup-restore-*"))
