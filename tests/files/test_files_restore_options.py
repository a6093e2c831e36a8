"""restore's restic-0.17 options through the CLI: --include/--exclude (and i-variants) combined,
SNAPSHOT:subpath, an include matching nothing (exit 3, nothing written), --dry-run, --overwrite,
--delete (only inside the target) and --verify."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end CLI tables, one subprocess per command (run with --run-slow)


def j(r) -> dict:
    assert r.code == 0, r.stderr
    return json.loads(r.out)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


@pytest.fixture
def snap(tmp_path: Path, cli):
    src = tmp_path / "src"
    for rel, text in {"docs/a.txt": "a", "docs/b.md": "bb", "docs/sub/c.md": "ccc", "docs/sub/D.TXT": "d",
                      "logs/x.log": "x", "logs/old/y.log": "y", "README": "r"}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    sid = j(cli("-r", repo, "backup", str(src), "--json"))["id"]
    return repo, src, sid


def restore_set(cli, repo: str, spec: str, target: Path, *args: str) -> set[str]:
    j(cli("-r", repo, "restore", spec, "--target", str(target), "--json", *args))
    return files_under(target)


CASES = [
    # (args, expected files relative to SRC)
    ([], {"docs/a.txt", "docs/b.md", "docs/sub/c.md", "docs/sub/D.TXT", "logs/x.log", "logs/old/y.log", "README"}),
    (["--include", "*.md"], {"docs/b.md", "docs/sub/c.md"}),
    (["--include", "docs", "--exclude", "*.md"], {"docs/a.txt", "docs/sub/D.TXT"}),
    (["--include", "docs/sub", "--include", "README"], {"docs/sub/c.md", "docs/sub/D.TXT", "README"}),
    (["--exclude", "logs/", "--exclude", "sub"], {"docs/a.txt", "docs/b.md", "README"}),
    (["--include", "*.log", "--exclude", "old"], {"logs/x.log"}),
    (["--iinclude", "*.txt"], {"docs/a.txt", "docs/sub/D.TXT"}),
    (["--include", "*.txt"], {"docs/a.txt"}),
    (["--iexclude", "d.txt", "--include", "docs/sub/**"], {"docs/sub/c.md"}),
    (["--include", "docs", "--include", "!docs/sub"], {"docs/a.txt", "docs/b.md"}),
]


@pytest.mark.slow
def test_include_exclude_table(snap, tmp_path: Path, cli) -> None:
    repo, src, sid = snap
    base = str(src).lstrip("/")
    for k, (args, want) in enumerate(CASES):
        out = tmp_path / f"out{k}"
        got = restore_set(cli, repo, sid, out, *args)
        assert got == {f"{base}/{w}" for w in want}, args
    # an anchored include: exactly the old meaning of --include PATH (parents are created)
    got = restore_set(cli, repo, sid, tmp_path / "anch", "--include", f"{src}/logs")
    assert got == {f"{base}/logs/x.log", f"{base}/logs/old/y.log"}


def test_subpath_restores_that_directory_into_target(snap, tmp_path: Path, cli) -> None:
    repo, src, sid = snap
    assert restore_set(cli, repo, f"{sid}:{src}/docs", tmp_path / "o") == {"a.txt", "b.md", "sub/c.md", "sub/D.TXT"}
    # patterns are relative to the subtree's root, as in restic
    assert restore_set(cli, repo, f"latest:{src}/docs", tmp_path / "p", "--include", "/sub") == {"sub/c.md",
                                                                                                  "sub/D.TXT"}
    r = cli("-r", repo, "restore", f"{sid}:{src}/nope", "--target", str(tmp_path / "q"))
    assert r.code == 3 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_include_matching_nothing_is_exit_3_and_writes_nothing(snap, tmp_path: Path, cli) -> None:
    repo, src, sid = snap
    out = tmp_path / "none"
    for args in (["--include", "*.pdf"], ["--include", "*.md", "--include", "/nowhere"]):
        r = cli("-r", repo, "restore", sid, "--target", str(out), *args)
        assert r.code == 3, r.stderr
        assert "matches nothing" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not out.exists()


def test_dry_run_counts_and_writes_nothing(snap, tmp_path: Path, cli) -> None:
    repo, src, sid = snap
    out = tmp_path / "dry"
    doc = j(cli("-r", repo, "restore", sid, "--target", str(out), "--dry-run", "--include", "*.md", "--json"))
    assert doc["dry_run"] is True and doc["files"] == 2 and doc["bytes"] == 5
    assert sorted(doc["paths"]) == sorted([f"{src}/docs/b.md", f"{src}/docs/sub/c.md"] +
                                          [p for p in _parents(f"{src}/docs/sub/c.md")])
    assert not out.exists()
    r = cli("-r", repo, "restore", sid, "--target", str(out), "-n", "-v", "--exclude", "logs")
    assert r.code == 0 and f"{src}/docs/a.txt" in r.out and "x.log" not in r.out and "dry run" in r.out
    assert not out.exists()


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[:k]) for k in range(1, len(parts) + 1)]


@pytest.mark.slow
def test_overwrite_modes(snap, tmp_path: Path, cli) -> None:
    repo, src, sid = snap
    out = tmp_path / "ow"
    spec = f"{sid}:{src}/docs"
    assert restore_set(cli, repo, spec, out)
    a = out / "a.txt"
    # a local edit with the same size and an older mtime
    a.write_text("Z")
    os.utime(a, ns=(1_000_000_000, 1_000_000_000))
    doc = j(cli("-r", repo, "restore", spec, "--target", str(out), "--overwrite", "never", "--json"))
    assert a.read_text() == "Z" and doc["skipped"] == 4 and doc["files"] == 0
    doc = j(cli("-r", repo, "restore", spec, "--target", str(out), "--overwrite", "if-changed", "--json"))
    assert a.read_text() == "a" and doc["files"] == 1 and doc["skipped"] == 3
    a.write_text("Z")  # now newer than the snapshot's file
    doc = j(cli("-r", repo, "restore", spec, "--target", str(out), "--overwrite", "if-newer", "--json"))
    assert a.read_text() == "Z" and doc["files"] == 0
    doc = j(cli("-r", repo, "restore", spec, "--target", str(out), "--json"))  # default: always
    assert a.read_text() == "a" and doc["files"] == 4 and doc["skipped"] == 0
    r = cli("-r", repo, "restore", spec, "--target", str(out), "--overwrite", "sometimes")
    assert r.code == 2 and "Traceback" not in r.stderr


def test_delete_removes_extras_only_inside_target(snap, tmp_path: Path, cli) -> None:
    repo, src, sid = snap
    out = tmp_path / "del" / "t"
    out.mkdir(parents=True)
    outside = tmp_path / "del" / "outside.txt"
    outside.write_text("keep")
    (out / "extra.txt").write_text("gone")
    (out / "sub").mkdir()
    (out / "sub" / "stale").mkdir()
    (out / "sub" / "stale" / "f").write_text("gone")
    (out / "link").symlink_to(outside)
    (out / "keep.md").write_text("excluded, so kept")
    doc = j(cli("-r", repo, "restore", f"{sid}:{src}/docs", "--target", str(out), "--delete", "--exclude",
                "keep.md", "--json"))
    assert doc["deleted"] == 3
    assert files_under(out) == {"a.txt", "b.md", "sub/c.md", "sub/D.TXT", "keep.md"}
    assert outside.read_text() == "keep"
    assert not os.path.lexists(out / "link")


def test_verify_passes_and_counts(snap, tmp_path: Path, cli) -> None:
    repo, src, sid = snap
    out = tmp_path / "v"
    doc = j(cli("-r", repo, "restore", sid, "--target", str(out), "--verify", "--json"))
    assert doc["verified"] == doc["files"] == 7 and doc["verify_failed"] == []
    r = cli("-r", repo, "restore", sid, "--target", str(out), "--verify", "--overwrite", "if-changed")
    assert r.code == 0 and "skipped" in r.out, r.out


def test_verify_reports_a_mismatch(tmp_path: Path) -> None:
    """The library check itself: a file changed after it was written fails verification."""
    from casbackup.files.restore import RestoreOptions, restore_snapshot
    from casbackup.files.snapshots import resolve
    from tests.files.helpers_files import backup, make_repo

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(200_000))
    repo = make_repo()
    backup(repo, src)
    opts = RestoreOptions(target=str(tmp_path / "out"), verify=True)
    with repo.reader("restore") as snap:
        info = resolve(snap, "latest")
        from casbackup.files import restore as mod
        real = mod.Restorer.verify_written

        def corrupt_then_verify(self, root_fd: int) -> None:
            path = tmp_path / "out" / str(src).lstrip("/") / "f"
            data = bytearray(path.read_bytes())
            data[100] ^= 1
            path.write_bytes(bytes(data))
            real(self, root_fd)

        mod.Restorer.verify_written = corrupt_then_verify  # type: ignore[method-assign]
        try:
            summary = restore_snapshot(snap, info, opts)
        finally:
            mod.Restorer.verify_written = real  # type: ignore[method-assign]
    assert summary.verified == 0 and summary.verify_failed == [f"{src}/f"]


def test_dry_run_delete_counts_what_would_go(snap, tmp_path: Path, cli) -> None:
    repo, src, sid = snap
    out = tmp_path / "dd"
    assert restore_set(cli, repo, f"{sid}:{src}/docs", out)
    (out / "extra").write_text("x")
    (out / "sub" / "old.md").write_text("x")
    doc = j(cli("-r", repo, "restore", f"{sid}:{src}/docs", "--target", str(out), "-n", "--delete", "--json"))
    assert doc["deleted"] == 2 and {"- /extra", "- /sub/old.md"} <= set(doc["paths"])
    assert (out / "extra").exists() and (out / "sub" / "old.md").exists()
    doc = j(cli("-r", repo, "restore", f"{sid}:{src}/docs", "--target", str(out), "--delete", "--json"))
    assert doc["deleted"] == 2 and not (out / "extra").exists() and not (out / "sub" / "old.md").exists()
