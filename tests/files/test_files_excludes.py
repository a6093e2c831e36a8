"""Exclude patterns through `casbackup backup`, against what restic 0.14 keeps for the same
tree and flags (each row's expectation was produced by running restic; the one deliberate
difference, a trailing `/` meaning directories only, is marked)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a table of end-to-end CLI backups

ALL = ("Docs Docs/README.md a.txt b.log big.bin cache cache/CACHEDIR.TAG cache/blob dir dir/sub dir/sub/y.txt "
       "dir/x.txt keep keep/k.txt keep/l.log other other/dir share share/vim share/vim/vim90 "
       "share/vim/vim90/syntax.vim share/vim/vimrc").split()


def without(*gone: str) -> set[str]:
    return set(ALL) - set(gone)


DIR = ("dir", "dir/sub", "dir/sub/y.txt", "dir/x.txt")
# (flags, kept paths); "{src}" is the backed-up directory's absolute path
TABLE = [
    (["--exclude", "dir"], without(*DIR, "other/dir")),
    (["--exclude", "dir/"], without(*DIR)),  # casbackup: directories only (restic also drops the file other/dir)
    (["--exclude", "share/vim"], without("share/vim", "share/vim/vim90", "share/vim/vim90/syntax.vim",
                                         "share/vim/vimrc")),
    (["--exclude", "vim/vim90"], without("share/vim/vim90", "share/vim/vim90/syntax.vim")),
    (["--exclude", "*.log"], without("b.log", "keep/l.log")),
    (["--exclude", "{src}/dir"], without(*DIR)),
    (["--exclude", "/src/dir"], set(ALL)),  # anchored at the root: matches nothing here
    (["--exclude", "**/*.txt"], without("a.txt", "dir/x.txt", "dir/sub/y.txt", "keep/k.txt")),
    (["--exclude", "share/**/syntax.vim"], without("share/vim/vim90/syntax.vim")),
    (["--exclude", "d?r"], without(*DIR, "other/dir")),
    (["--exclude", "[ab].*"], without("a.txt", "b.log")),
    (["--exclude", "[^ab]*.txt"], without("dir/x.txt", "dir/sub/y.txt", "keep/k.txt")),
    (["--exclude", "src/*/vimrc"], set(ALL)),  # '*' is exactly one component
    (["--exclude", "docs"], set(ALL)),
    (["--iexclude", "docs"], without("Docs", "Docs/README.md")),
    (["--exclude", "keep/*", "--exclude", "!keep/k.txt"], without("keep/l.log")),
    (["--exclude", "keep", "--exclude", "!keep/k.txt"], without("keep", "keep/k.txt", "keep/l.log")),
    (["--exclude", "!keep/k.txt", "--exclude", "keep/*"], without("keep/k.txt", "keep/l.log")),  # last wins
    (["--exclude-file", "{file:*.txt\n!**/dir/**\n# a comment\n\n  sub  }"],
     without("a.txt", "keep/k.txt", "dir/sub", "dir/sub/y.txt")),
    (["--iexclude-file", "{file:DOCS\n*.LOG}"], without("Docs", "Docs/README.md", "b.log", "keep/l.log")),
    (["--exclude-caches"], without("cache/blob")),
    (["--exclude-if-present", "vimrc"], without("share/vim/vim90", "share/vim/vim90/syntax.vim")),
    (["--exclude-if-present", "CACHEDIR.TAG:Signature: nope"], set(ALL)),
    (["--exclude-larger-than", "10k"], without("big.bin")),
    (["--exclude-larger-than", "1M"], set(ALL)),
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("ex") / "src"
    files = {"a.txt": b"a", "b.log": b"b", "dir/x.txt": b"x", "dir/sub/y.txt": b"y", "share/vim/vim90/syntax.vim": b"s",
             "share/vim/vimrc": b"r", "other/dir": b"f", "Docs/README.md": b"m", "cache/blob": b"c",
             "cache/CACHEDIR.TAG": b"Signature: 8a477f597d28d172789f06886806bc55\n", "keep/k.txt": b"k",
             "keep/l.log": b"l", "big.bin": bytes(20000)}
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    return src


@pytest.mark.parametrize("flags,kept", TABLE, ids=[" ".join(f) for f, _ in TABLE])
def test_exclude_table_matches_restic(tree: Path, tmp_path: Path, cli, flags: list[str], kept: set[str]) -> None:
    args = []
    for f in flags:
        if f.startswith("{file:"):
            pf = tmp_path / "patterns.txt"
            pf.write_text(f[len("{file:"):-1])
            f = str(pf)
        args.append(f.replace("{src}", str(tree)))
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    r = cli("-r", repo, "backup", str(tree), *args)
    assert r.code == 0, r.stderr
    rows = json.loads(cli("-r", repo, "ls", "latest", str(tree), "--recursive", "--json").out)
    got = {row["path"][len(str(tree)) + 1:] for row in rows if row["path"].startswith(f"{tree}/")}
    assert got == kept


def test_bad_pattern_and_size_are_usage_errors(tree: Path, tmp_path: Path, cli) -> None:
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    for args in (["--exclude", "[abc"], ["--exclude-larger-than", "ten"], ["--exclude-file", str(tmp_path / "no")]):
        r = cli("-r", repo, "backup", str(tree), *args)
        assert r.code == 2 and "Traceback" not in r.stderr, (args, r.stderr)
    assert json.loads(cli("-r", repo, "snapshots", "--json").out) == []
