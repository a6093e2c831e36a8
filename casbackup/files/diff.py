"""Compare two snapshot trees; identical subtree IDs are skipped without being read.

The walk is iterative (an explicit stack of directory pairs) and refuses nesting deeper than
MAX_DEPTH, as ls and restore do: a hostile snapshot gets a BlobCorrupt, not a RecursionError.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from ..errors import BlobCorrupt
from .reader import TreeReader, join
from .tree import DEVICES, MAX_DEPTH, Node

# one step of a directory pair: (change, None, None, path) to report, or (None, old tree,
# new tree, path) to descend into
Step = tuple[str | None, str | None, str | None, str]


@dataclass
class DiffSummary:
    """restic's diff statistics: entries added/removed/changed by kind, and the data blobs (chunks)
    and tree blobs only one side holds, among the entries that differ. Added/Removed bytes are the
    sizes of those chunks plus the inline bytes of small files (kept inside their TREE blob)."""

    files_new: int = 0
    files_removed: int = 0
    files_changed: int = 0
    dirs_new: int = 0
    dirs_removed: int = 0
    others_new: int = 0
    others_removed: int = 0
    chunks_a: dict[str, int] = field(default_factory=dict)
    chunks_b: dict[str, int] = field(default_factory=dict)
    trees_a: set[str] = field(default_factory=set)
    trees_b: set[str] = field(default_factory=set)
    inline_a: int = 0
    inline_b: int = 0

    def count(self, node: Node, side: str, reader: TreeReader) -> None:
        """`node` is only on `side` ('a' removed, 'b' added): count it and note its content."""
        kind = "files" if node.kind == "file" else "dirs" if node.is_dir else "others"
        attr = f"{kind}_{'removed' if side == 'a' else 'new'}"
        setattr(self, attr, getattr(self, attr) + 1)
        self.content(node, side, reader)

    def content(self, node: Node, side: str, reader: TreeReader) -> None:
        if node.kind != "file":
            return
        if node.data is not None:
            setattr(self, f"inline_{side}", getattr(self, f"inline_{side}") + len(node.data))
            return
        chunks = self.chunks_a if side == "a" else self.chunks_b
        for c in reader.chunks(node):
            chunks[c.id] = c.size

    def to_json(self) -> dict[str, Any]:
        new = self.chunks_b.keys() - self.chunks_a.keys()
        gone = self.chunks_a.keys() - self.chunks_b.keys()
        return {
            "changed_files": self.files_changed,
            "added": {"files": self.files_new, "dirs": self.dirs_new, "others": self.others_new,
                      "data_blobs": len(new), "tree_blobs": len(self.trees_b - self.trees_a),
                      "bytes": sum(self.chunks_b[i] for i in new) + self.inline_b},
            "removed": {"files": self.files_removed, "dirs": self.dirs_removed, "others": self.others_removed,
                        "data_blobs": len(gone), "tree_blobs": len(self.trees_a - self.trees_b),
                        "bytes": sum(self.chunks_a[i] for i in gone) + self.inline_a},
        }


def _same_content(a: Node, b: Node, reader: TreeReader) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "symlink":
        return a.target == b.target
    if a.kind in DEVICES:
        return a.rdev == b.rdev
    if a.kind == "file":
        if a.size != b.size:
            return False
        if a.data is not None or b.data is not None:
            return b"".join(reader.content(a)) == b"".join(reader.content(b))
        if a.file and b.file:
            return a.file == b.file
        ca, cb = reader.chunks(a), reader.chunks(b)
        while True:  # streamed: a file of 10^6 chunks is not listed twice in memory
            x, y = next(ca, None), next(cb, None)
            if x is None or y is None:
                return x is None and y is None
            if x.id != y.id:
                return False
    return True


def _level(reader: TreeReader, a: str | None, b: str | None, path: str,
           summary: DiffSummary | None = None) -> Iterator[Step]:
    """The steps of one directory pair, in name order; a descent follows its directory's line.
    With a `summary`, every entry that differs is counted in it."""
    olds = {n.name: n for n in reader.nodes(a)} if a else {}
    news = {n.name: n for n in reader.nodes(b)} if b else {}
    if summary is not None:
        summary.trees_a.update([a] if a else [])
        summary.trees_b.update([b] if b else [])
    for name in sorted(olds.keys() | news.keys()):
        o, n = olds.get(name), news.get(name)
        p = "/" + join(path.lstrip("/"), name)
        if o is None:
            assert n is not None
            if summary is not None:
                summary.count(n, "b", reader)
            yield "+", None, None, p + ("/" if n.is_dir else "")
            if n.is_dir:
                yield None, None, n.tree, p
        elif n is None:
            if summary is not None:
                summary.count(o, "a", reader)
            yield "-", None, None, p + ("/" if o.is_dir else "")
            if o.is_dir:
                yield None, o.tree, None, p
        elif o.kind != n.kind:
            if summary is not None:
                summary.count(o, "a", reader)
                summary.count(n, "b", reader)
            yield "T", None, None, p
            if o.is_dir:
                yield None, o.tree, None, p
            if n.is_dir:
                yield None, None, n.tree, p
        elif o.is_dir:
            yield None, o.tree, n.tree, p
        elif not _same_content(o, n, reader):
            if summary is not None:
                summary.files_changed += o.kind == "file"
                summary.content(o, "a", reader)
                summary.content(n, "b", reader)
            yield "M", None, None, p
        elif (o.mode, o.mtime_ns, o.uid, o.gid) != (n.mode, n.mtime_ns, n.uid, n.gid):
            yield "U", None, None, p


def diff_trees(reader: TreeReader, a: str | None, b: str | None, path: str = "",
               summary: DiffSummary | None = None) -> Iterator[tuple[str, str]]:
    """(change, path): '+' added, '-' removed, 'M' content changed, 'T' type changed,
    'U' file or symlink metadata (mode, mtime, owner) changed only;
    directory metadata changes are not reported (every change inside one bumps its mtime).
    A `summary` given is filled with restic's counts as the changes are produced."""
    if a == b:
        return
    stack = [_level(reader, a, b, path, summary)]
    while stack:
        step = next(stack[-1], None)
        if step is None:
            stack.pop()
            continue
        change, old, new, p = step
        if change is not None:
            yield change, p
        elif old != new:
            if len(stack) > MAX_DEPTH:
                raise BlobCorrupt(new or old or "?", f"directory nesting deeper than {MAX_DEPTH} levels",
                                  reader.generation)
            stack.append(_level(reader, old, new, p, summary))
