"""Round trips: a real tree (part of the stdlib) and a generated one with every awkward case."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from casbackup.files.reader import TreeReader
from casbackup.files.snapshots import resolve
from helpers_files import backup, make_repo, restore, restored, snapshot_of


def test_stdlib_subset_roundtrip(tmp_path: Path) -> None:
    src = Path(json.__file__).parent.parent / "email"
    repo = make_repo(tmp_path / "repo")
    info, summary = backup(repo, src)
    assert summary.error_count == 0 and summary.files_new > 10
    _, rs = restore(repo, tmp_path / "out")
    assert snapshot_of(restored(tmp_path / "out", src)) == snapshot_of(src)
    assert rs.files == summary.files_new


def make_awkward_tree(root: Path, big: int) -> None:
    root.mkdir()
    (root / "empty").write_bytes(b"")
    (root / "empty dir").mkdir()
    (root / "with space.txt").write_text("spaces\n")
    (root / "ünïcødé—名前.txt").write_text("unicode\n")
    (root / "new\nline").write_bytes(b"newline in name")
    (root / os.fsdecode(b"latin1-\xe9")).write_bytes(b"not utf-8 name")
    (root / "sub" / "deeper" / "deepest").mkdir(parents=True)
    (root / "sub" / "deeper" / "deepest" / "leaf").write_bytes(os.urandom(100_000))
    (root / "exec.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "exec.sh").chmod(0o751)
    (root / "private").write_text("secret")
    (root / "private").chmod(0o600)
    os.symlink("with space.txt", root / "rel-link")
    os.symlink("/nonexistent/absolute/target", root / "dangling-abs-link")
    os.symlink("sub/deeper", root / "dir-link")
    # a big sparse file with real data in a few places: fast to make, many chunks
    with open(root / "big.bin", "wb") as f:
        f.truncate(big)
        for off in (0, big // 3, big - 65536):
            f.seek(off)
            f.write(os.urandom(65536))
    (root / "readonly-dir").mkdir()
    (root / "readonly-dir" / "f").write_text("x")
    (root / "readonly-dir").chmod(0o555)
    for i, p in enumerate(sorted(root.rglob("*"))):
        os.utime(p, ns=(1_600_000_000_000_000_000 + i * 1_000_003, 1_600_000_000_000_000_000 + i * 1_000_003),
                 follow_symlinks=False)
    os.utime(root, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))


@pytest.fixture
def awkward(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    make_awkward_tree(root, 100 * 1024 * 1024)
    yield root
    (root / "readonly-dir").chmod(0o755)


def test_awkward_tree_roundtrip(tmp_path: Path, awkward: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    info, summary = backup(repo, awkward)
    assert summary.error_count == 0
    assert summary.symlinks == 3
    out = tmp_path / "out"
    restore(repo, out)
    got = restored(out, awkward)
    assert snapshot_of(got) == snapshot_of(awkward)
    assert os.lstat(got).st_mtime_ns == os.lstat(awkward).st_mtime_ns
    assert os.readlink(got / "dir-link") == "sub/deeper"
    # the big file went through a FILE blob (more than INLINE_CHUNKS chunks) and stays sparse-capable
    with repo.reader() as snap:
        node = TreeReader(snap).lookup(resolve(snap, "latest").tree, str(awkward.absolute()) + "/big.bin")
        assert node.file is not None
    (got / "readonly-dir").chmod(0o755)


def test_restore_include_and_overwrite(tmp_path: Path, awkward: Path) -> None:
    repo = make_repo()
    backup(repo, awkward)
    out = tmp_path / "out"
    target_file = restored(out, awkward) / "sub" / "deeper" / "deepest" / "leaf"
    target_file.parent.mkdir(parents=True)
    target_file.write_bytes(b"stale content")
    restore(repo, out, includes=[str(awkward.absolute()) + "/sub"])
    assert target_file.read_bytes() == (awkward / "sub" / "deeper" / "deepest" / "leaf").read_bytes()
    assert not (restored(out, awkward) / "big.bin").exists()
    assert not [p for p in out.rglob(".casbackup-restore-*")]


def test_stdin_roundtrip(tmp_path: Path) -> None:
    import io
    from casbackup.files.backup import BackupOptions, run_backup
    repo = make_repo()
    data = os.urandom(3 * 1024 * 1024)
    info, summary = run_backup(repo, BackupOptions(stdin=io.BytesIO(data), stdin_name="dump.sql"))
    assert info.paths == ["dump.sql"] and summary.bytes_read == len(data)
    restore(repo, tmp_path / "out")
    assert (tmp_path / "out" / "dump.sql").read_bytes() == data


def test_multiple_paths_and_excludes(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "keep.txt").write_text(str(d))
        (d / "skip.pyc").write_text("x")
        (d / "cache").mkdir()
        (d / "cache" / "c").write_text("c")
    repo = make_repo()
    info, summary = backup(repo, a, b, excludes=["*.pyc", str(b / "cache")])
    restore(repo, tmp_path / "out")
    ra, rb = restored(tmp_path / "out", a), restored(tmp_path / "out", b)
    assert (ra / "keep.txt").read_text() == str(a) and (rb / "keep.txt").read_text() == str(b)
    assert not (ra / "skip.pyc").exists() and (ra / "cache" / "c").exists() and not (rb / "cache").exists()


def test_symlink_given_as_a_path_is_stored_as_a_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_text("x")
    os.symlink(real, tmp_path / "alias")
    repo = make_repo()
    info, summary = backup(repo, tmp_path / "alias")
    assert summary.symlinks == 1 and summary.files_new == 0
    restore(repo, tmp_path / "out")
    assert os.readlink(restored(tmp_path / "out", tmp_path / "alias")) == str(real)


def test_diff_reports_every_kind_of_change(tmp_path: Path) -> None:
    from casbackup.files.diff import diff_trees
    src = tmp_path / "src"
    src.mkdir()
    (src / "same").write_text("same")
    (src / "edit").write_bytes(os.urandom(50_000))
    (src / "gone").write_text("bye")
    (src / "kind").write_text("file first")
    (src / "chmod").write_text("m")
    repo = make_repo()
    a, _ = backup(repo, src)
    (src / "edit").write_bytes(os.urandom(50_000))
    (src / "gone").unlink()
    (src / "kind").unlink()
    (src / "kind").mkdir()
    (src / "kind" / "inside").write_text("i")
    (src / "chmod").chmod(0o600)
    (src / "added").write_text("new")
    b, _ = backup(repo, src)
    with repo.reader() as snap:
        changes = list(diff_trees(TreeReader(snap), a.tree, b.tree))
    base = str(src.absolute())
    assert ("M", f"{base}/edit") in changes and ("-", f"{base}/gone") in changes
    assert ("T", f"{base}/kind") in changes and ("+", f"{base}/kind/inside") in changes
    assert ("U", f"{base}/chmod") in changes and ("+", f"{base}/added") in changes
    assert not [c for c in changes if c[1].endswith("/same")]
