"""A restic user's workflow, end to end through the real CLI on local directory repositories:
init, backup with excludes and --one-file-system, a second backup, snapshots with filters, find,
ls, diff, dump to tar (unpacked and compared), restore of a subtree with include/exclude patterns,
tag, copy to a second repository, rewrite --exclude, forget --keep-* --prune and check
--read-data. Every step asserts what it produced, not just its exit code."""
from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers_common import run_cli

pytestmark = pytest.mark.slow  # about 30 CLI subprocesses


def ok(*args: str) -> bytes:
    r = run_cli(*args)
    assert r.code == 0, f"casbackup {' '.join(args)}: {r.stderr}"
    assert "Traceback" not in r.stderr
    return r.stdout


def js(*args: str) -> Any:
    return json.loads(ok(*args, "--json"))


def files_below(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every regular file below root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[Path, bool]]:
    """A tree with documents, data, a cache and build output to exclude, and (as root) a tmpfs
    mounted inside it for --one-file-system. Yields (tree, whether the mount is there)."""
    src = tmp_path / "src"
    for rel, data in {"docs/a.txt": b"alpha\n", "docs/b.md": b"# bee\n", "docs/readme.md": b"# read me\n",
                      "docs/notes/c.txt": b"see\n", "data.bin": os.urandom(300_000),
                      "cache/blob.tmp": b"cached" * 1000, "build/x.o": b"\x7fELF object"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    mnt = src / "mnt"
    mnt.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "casbackup-workflow", str(mnt)], capture_output=True).returncode == 0
    if mounted:
        (mnt / "other-fs.txt").write_text("on another file system\n")
    try:
        yield src, mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)


def test_restic_user_workflow(source: tuple[Path, bool], tmp_path: Path) -> None:  # noqa: PLR0915 - one story
    src, mounted = source
    repo, repo2 = str(tmp_path / "repo"), str(tmp_path / "repo2")
    ok("-r", repo, "init")

    # backup with excludes and --one-file-system
    first = js("-r", repo, "backup", str(src), "--exclude", "*.o", "--exclude", f"{src}/cache",
               "--one-file-system", "--tag", "first", "--host", "wf")
    assert first["total_files"] == 5 and first["files_new"] == 5  # a, b, readme, c, data.bin
    listed = ok("-r", repo, "ls", first["id"]).decode().splitlines()
    assert f"{src}/docs/notes/c.txt" in listed and f"{src}/data.bin" in listed
    assert not any("cache/" in p or p.endswith(".o") for p in listed)
    assert f"{src}/mnt" in listed  # the mount point is kept ...
    if mounted:
        assert not any(p.startswith(f"{src}/mnt/") for p in listed)  # ... but not entered

    # a second backup: one file changed, one added, one removed; the rest comes from the parent
    (src / "docs" / "a.txt").write_bytes(b"alpha, changed\n")
    (src / "docs" / "new.txt").write_bytes(b"new\n")
    (src / "docs" / "b.md").unlink()
    second = js("-r", repo, "backup", str(src), "--exclude", "*.o", "--exclude", f"{src}/cache",
                "--one-file-system", "--tag", "second", "--host", "wf")
    assert (second["parent"], second["files_new"], second["files_changed"]) == (first["id"], 1, 1)
    assert second["files_unmodified"] == 3 and second["total_files"] == 5

    # snapshots with filters
    assert [s["id"] for s in js("-r", repo, "snapshots")] == [first["id"], second["id"]]
    assert [s["id"] for s in js("-r", repo, "snapshots", "--tag", "first")] == [first["id"]]
    assert [s["id"] for s in js("-r", repo, "snapshots", "--latest", "1")] == [second["id"]]
    assert [s["id"] for s in js("-r", repo, "snapshots", "--host", "wf", "--path", str(src))] == [
        first["id"], second["id"]]
    assert js("-r", repo, "snapshots", "--host", "elsewhere") == []

    # find: which snapshots hold what
    found = {d["snapshot"]: sorted(m["path"] for m in d["matches"]) for d in js("-r", repo, "find", "*.txt")}
    assert found == {first["id"]: [f"{src}/docs/a.txt", f"{src}/docs/notes/c.txt"],
                     second["id"]: [f"{src}/docs/a.txt", f"{src}/docs/new.txt", f"{src}/docs/notes/c.txt"]}
    assert [d["snapshot"] for d in js("-r", repo, "find", "b.md")] == [first["id"]]
    assert ok("-r", repo, "find", "*.o") == b""  # excluded: no match, exit 0

    # ls of a directory: itself and its entries
    assert ok("-r", repo, "ls", "latest", f"{src}/docs").decode().splitlines() == [
        f"{src}/docs", f"{src}/docs/a.txt", f"{src}/docs/new.txt", f"{src}/docs/notes", f"{src}/docs/readme.md"]

    # diff
    changes = {(c["change"], c["path"]) for c in js("-r", repo, "diff", first["id"], second["id"])}
    assert changes == {("M", f"{src}/docs/a.txt"), ("+", f"{src}/docs/new.txt"), ("-", f"{src}/docs/b.md")}

    # dump a directory to tar, unpack it, compare with the source
    unpacked = tmp_path / "unpacked"
    with tarfile.open(fileobj=io.BytesIO(ok("-r", repo, "dump", "latest", f"{src}/docs"))) as tar:
        tar.extractall(unpacked, filter="data")
    assert files_below(unpacked / "docs") == files_below(src / "docs")

    # restore a subtree with include/exclude patterns
    target = tmp_path / "restored"
    ok("-r", repo, "restore", f"latest:{src}", "--target", str(target), "--include", "docs", "--exclude", "*.md")
    assert files_below(target) == {"docs/a.txt": b"alpha, changed\n", "docs/new.txt": b"new\n",
                                   "docs/notes/c.txt": b"see\n"}

    # tag: one commit, a new ID that records the first one
    tagged = js("-r", repo, "tag", first["id"], "--add", "keep")
    assert [(t["old"], t["original"], t["tags"]) for t in tagged] == [(first["id"], first["id"], ["first", "keep"])]
    kept_id = tagged[0]["new"]
    assert [s["id"] for s in js("-r", repo, "snapshots", "--tag", "keep")] == [kept_id] != [first["id"]]

    # copy to a second repository: same snapshots, same IDs, same content
    ok("-r", repo2, "init", "--copy-id-key-from", repo)
    copied = js("-r", repo2, "copy", "--from-repo", repo)
    assert copied["copied"] == 2 and copied["blobs_uploaded"] > 0
    assert sorted(s["id"] for s in js("-r", repo2, "snapshots")) == sorted([kept_id, second["id"]])
    assert ok("-r", repo2, "cat", kept_id, f"{src}/data.bin") == (src / "data.bin").read_bytes()
    assert js("-r", repo2, "copy", "--from-repo", repo)["copied"] == 0  # already there: skipped

    # rewrite --exclude: a new snapshot without the data file, tagged 'rewrite'
    rewritten = js("-r", repo, "rewrite", second["id"], "--exclude", "*.bin")
    assert [(r["old"], r["removed"]) for r in rewritten] == [(second["id"], [f"{src}/data.bin"])]
    new_id = rewritten[0]["new"]
    assert f"{src}/data.bin" not in ok("-r", repo, "ls", new_id).decode().splitlines()
    assert "rewrite" in next(s for s in js("-r", repo, "snapshots") if s["id"] == new_id)["tags"]

    # forget by policy, pruning at once (nothing else runs here)
    forgot = js("-r", repo, "forget", "--keep-tag", "keep", "--keep-tag", "rewrite", "--prune",
                "--grace", "0s", "--force", "--keep-generations", "1")
    assert forgot["removed"] == [second["id"]] and sorted(forgot["kept"]) == sorted([kept_id, new_id])
    assert forgot["gc"]["deleted"] > 0  # the TREEs only the forgotten snapshot had
    assert sorted(s["id"] for s in js("-r", repo, "snapshots")) == sorted([kept_id, new_id])

    # check --read-data: every blob read and verified; what is kept still restores
    report = js("-r", repo, "check", "--read-data")
    assert report["ok"] and report["blobs_read"] == report["blobs_reachable"] > 0
    assert ok("-r", repo, "cat", kept_id, f"{src}/data.bin") == (src / "data.bin").read_bytes()
    assert ok("-r", repo, "cat", new_id, f"{src}/docs/a.txt") == b"alpha, changed\n"
