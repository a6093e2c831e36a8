"""Compare two snapshot trees; identical subtree IDs are skipped without being read.

The walk is iterative (an explicit stack of directory pairs) and refuses nesting deeper than
MAX_DEPTH, as ls and restore do: a hostile snapshot gets a BlobCorrupt, not a RecursionError.
"""
from __future__ import annotations

from typing import Iterator

from ..errors import BlobCorrupt
from .reader import TreeReader, join
from .tree import DEVICES, MAX_DEPTH, Node

# one step of a directory pair: (change, None, None, path) to report, or (None, old tree,
# new tree, path) to descend into
Step = tuple[str | None, str | None, str | None, str]


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


def _level(reader: TreeReader, a: str | None, b: str | None, path: str) -> Iterator[Step]:
    """The steps of one directory pair, in name order; a descent follows its directory's line."""
    olds = {n.name: n for n in reader.nodes(a)} if a else {}
    news = {n.name: n for n in reader.nodes(b)} if b else {}
    for name in sorted(olds.keys() | news.keys()):
        o, n = olds.get(name), news.get(name)
        p = "/" + join(path.lstrip("/"), name)
        if o is None:
            assert n is not None
            yield "+", None, None, p + ("/" if n.is_dir else "")
            if n.is_dir:
                yield None, None, n.tree, p
        elif n is None:
            yield "-", None, None, p + ("/" if o.is_dir else "")
            if o.is_dir:
                yield None, o.tree, None, p
        elif o.kind != n.kind:
            yield "T", None, None, p
            if o.is_dir:
                yield None, o.tree, None, p
            if n.is_dir:
                yield None, None, n.tree, p
        elif o.is_dir:
            yield None, o.tree, n.tree, p
        elif not _same_content(o, n, reader):
            yield "M", None, None, p
        elif (o.mode, o.mtime_ns, o.uid, o.gid) != (n.mode, n.mtime_ns, n.uid, n.gid):
            yield "U", None, None, p


def diff_trees(reader: TreeReader, a: str | None, b: str | None, path: str = "") -> Iterator[tuple[str, str]]:
    """(change, path): '+' added, '-' removed, 'M' content changed, 'T' type changed,
    'U' file or symlink metadata (mode, mtime, owner) changed only;
    directory metadata changes are not reported (every change inside one bumps its mtime)."""
    if a == b:
        return
    stack = [_level(reader, a, b, path)]
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
            stack.append(_level(reader, old, new, p))
