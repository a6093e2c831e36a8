"""restic's snapshot filters through the CLI: `latest` narrowed by --host/--path/--tag, and
`snapshots --latest N --compact`. A filter or include that selects nothing is exit 3."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end-to-end CLI sessions


def j(r) -> object:
    assert r.code == 0, r.stderr
    return json.loads(r.out)


@pytest.fixture
def repo3(tmp_path: Path, cli):
    """Three jobs: a tree on host A (twice), then a stdin dump on host B (the newest)."""
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("alpha\n")
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    ids = []
    for tag in ("nightly,files", "nightly"):
        ids.append(j(cli("-r", repo, "backup", str(src), "--host", "A", "--tag", tag.split(",")[0],
                         *(["--tag", "files"] if "files" in tag else []), "--json"))["id"])
    r = cli("-r", repo, "backup", "--stdin", "--stdin-name", "db.sql", "--host", "B", "--tag", "db", "--json",
            input=b"dump\n")
    ids.append(j(r)["id"])
    return repo, src, ids


def test_latest_takes_host_path_tag_filters(repo3, tmp_path: Path, cli) -> None:
    repo, src, (a1, a2, b1) = repo3
    # unfiltered 'latest' is the other job's stdin snapshot
    assert cli("-r", repo, "cat", "latest", "/db.sql").out == "dump\n"
    assert cli("-r", repo, "cat", "latest", f"{src}/docs/a.txt", "--host", "A").out == "alpha\n"
    assert cli("-r", repo, "cat", "latest", f"{src}/docs/a.txt", "--path", f"{src}/").out == "alpha\n"
    rows = j(cli("-r", repo, "ls", "latest", "--tag", "nightly,files", "--json"))
    assert f"{src}/docs/a.txt" in {r["path"] for r in rows}

    target = tmp_path / "out"
    doc = j(cli("-r", repo, "restore", "latest", "--host", "A", "--target", str(target), "--json"))
    assert doc["id"] == a2 and (target / str(src).lstrip("/") / "docs" / "a.txt").read_text() == "alpha\n"
    changes = j(cli("-r", repo, "diff", a1, "latest", "--host", "A", "--json"))
    assert changes == []

    # a filter that selects nothing: exit 3 and nothing restored, never an empty success
    for args in (["--host", "C"], ["--path", "/nowhere"], ["--tag", "db,files"]):
        empty = tmp_path / ("none" + args[1].replace("/", "_"))
        r = cli("-r", repo, "restore", "latest", "--target", str(empty), *args)
        assert r.code == 3, (args, r.code, r.stderr)
        assert "no snapshot matches" in r.stderr and "Traceback" not in r.stderr
        assert not empty.exists() or not any(empty.iterdir())
        assert cli("-r", repo, "ls", "latest", *args).code == 3
    # an include that is not in the chosen snapshot: exit 3 too
    r = cli("-r", repo, "restore", "latest", "--target", str(tmp_path / "inc"), "--include", f"{src}/docs")
    assert r.code == 3, r.stderr
    # an explicit ID is not narrowed (as in restic)
    assert cli("-r", repo, "cat", b1[:8], "/db.sql", "--host", "A").out == "dump\n"


def test_snapshots_filters_latest_compact(repo3, cli) -> None:
    repo, src, (a1, a2, b1) = repo3
    ids = lambda *a: [s["id"] for s in j(cli("-r", repo, "snapshots", "--json", *a))]  # noqa: E731
    assert ids() == [a1, a2, b1]
    assert ids("--host", "A") == [a1, a2]
    assert ids("--host", "A", "--host", "B") == [a1, a2, b1]
    assert ids("--path", str(src)) == [a1, a2]
    assert ids("--tag", "nightly") == [a1, a2]
    assert ids("--tag", "nightly,files") == [a1]
    assert ids("--tag", "files", "--tag", "db") == [a1, b1]
    assert ids("--latest", "1") == [a2, b1]  # the newest per host and path set
    assert ids("--latest", "1", "--host", "A") == [a2]
    assert ids("--host", "C") == []
    r = cli("-r", repo, "snapshots", "--compact", "--host", "A")
    assert r.code == 0, r.stderr
    lines = r.out.splitlines()
    assert [ln.split()[0] for ln in lines] == [a1[:8], a2[:8]]
    assert all(str(src) not in ln for ln in lines) and "A" in lines[0].split()
