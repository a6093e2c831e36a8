"""`find`: which snapshots hold paths matching a pattern (restic's `find`).

A pattern without `/` is a glob on the entry's name; one with `/` is a restic pattern
(files/patterns.py) that must match the whole path up to its last component, so `*.txt`
finds every text file and `/home/*/notes.txt` one file in each home directory.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterator, Sequence

from ..errors import NotFound
from ..repository import Reader
from .names import from_bytes, put_json
from .patterns import Pattern, component_regex, split_path
from .reader import TreeReader
from .snapshots import SnapshotFilter, SnapshotInfo, list_snapshots, resolve
from .tree import Node

_END = "\x00end"  # a sentinel component: a path pattern must match through the last component


class Finder:
    """Name globs and path patterns, of which an entry must match one."""

    def __init__(self, patterns: list[str], fold: bool = False) -> None:
        self.fold = fold
        self.names: list[re.Pattern[str]] = []
        self.paths: list[tuple[str, ...]] = []
        for p in patterns:
            text = p.lower() if fold else p
            if "/" in text.rstrip("/"):
                pat = Pattern.parse(text)
                self.paths.append(pat.parts + (_END,))
            else:
                self.names.append(component_regex(text.rstrip("/") or "*"))

    def matches(self, path: str, name: str) -> bool:
        if self.fold:
            path, name = path.lower(), name.lower()
        if any(rx.fullmatch(name) for rx in self.names):
            return True
        if self.paths:
            comps = split_path(path) + [_END]
            return any(Pattern("", parts, False, False).match(comps) for parts in self.paths)
        return False

    def search(self, reader: TreeReader, info: SnapshotInfo) -> Iterator[tuple[str, Node]]:
        root = Node(b"", "dir", tree=info.tree)
        for path, node in reader.walk(root, "/"):
            if node is root:
                continue
            if self.matches(path, from_bytes(node.name)):
                yield path, node


def snapshots_to_search(reader: Reader, specs: Sequence[str], flt: SnapshotFilter) -> list[SnapshotInfo]:
    """The given snapshots (IDs, prefixes, 'latest' narrowed by the filter), else every one the
    filter selects; a filter that selects none is NotFound, while no match inside is not."""
    if specs:
        return list({s.id: s for s in (resolve(reader, spec, flt) for spec in specs)}.values())
    chosen = flt.apply(list_snapshots(reader))
    if not chosen and not flt.empty():
        raise NotFound(f"no snapshot matches {flt.describe()}")
    return chosen


Hits = list[tuple[str, Node]]


def search_snapshots(reader: Reader, finder: Finder,
                     snapshots: Sequence[SnapshotInfo]) -> Iterator[tuple[SnapshotInfo, Hits]]:
    """(snapshot, matching (path, node)s) for each snapshot with at least one match."""
    trees = TreeReader(reader)
    for info in snapshots:
        hits = list(finder.search(trees, info))
        if hits:
            yield info, hits


def match_json(path: str, n: Node, ts: Callable[[float], str]) -> dict[str, Any]:
    """One match as JSON; a name that is not UTF-8 also as exact bytes (`path_bytes`, files/names.py)."""
    d: dict[str, Any] = put_json({"type": n.kind, "mode": n.mode, "mtime": ts(n.mtime_ns / 1e9),
                                  "uid": n.uid, "gid": n.gid}, "path", path)
    if n.kind == "file":
        d["size"] = n.size
    if n.kind == "symlink":
        put_json(d, "target", n.target or b"")
    return d
