"""Compare two snapshot trees; identical subtree IDs are skipped without being read."""
from __future__ import annotations

from typing import Iterator

from .reader import TreeReader, join
from .tree import Node


def _same_content(a: Node, b: Node, reader: TreeReader) -> bool:
    if a.kind != b.kind:
        return False
    if a.kind == "symlink":
        return a.target == b.target
    if a.kind == "file":
        if a.size != b.size:
            return False
        if a.data is not None or b.data is not None:
            return b"".join(reader.content(a)) == b"".join(reader.content(b))
        if a.file and b.file:
            return a.file == b.file
        return [c.id for c in reader.chunks(a)] == [c.id for c in reader.chunks(b)]
    return True


def diff_trees(reader: TreeReader, a: str | None, b: str | None, path: str = "") -> Iterator[tuple[str, str]]:
    """(change, path): '+' added, '-' removed, 'M' content changed, 'T' type changed,
    'U' file or symlink metadata (mode, mtime, owner) changed only;
    directory metadata changes are not reported (every change inside one bumps its mtime)."""
    if a == b:
        return
    olds = {n.name: n for n in reader.nodes(a)} if a else {}
    news = {n.name: n for n in reader.nodes(b)} if b else {}
    for name in sorted(olds.keys() | news.keys()):
        o, n = olds.get(name), news.get(name)
        p = "/" + join(path.lstrip("/"), name)
        if o is None:
            assert n is not None
            yield "+", p + ("/" if n.is_dir else "")
            if n.is_dir:
                yield from diff_trees(reader, None, n.tree, p)
        elif n is None:
            yield "-", p + ("/" if o.is_dir else "")
            if o.is_dir:
                yield from diff_trees(reader, o.tree, None, p)
        elif o.kind != n.kind:
            yield "T", p
            if o.is_dir:
                yield from diff_trees(reader, o.tree, None, p)
            if n.is_dir:
                yield from diff_trees(reader, None, n.tree, p)
        elif o.is_dir:
            yield from diff_trees(reader, o.tree, n.tree, p)
        elif not _same_content(o, n, reader):
            yield "M", p
        elif (o.mode, o.mtime_ns, o.uid, o.gid) != (n.mode, n.mtime_ns, n.uid, n.gid):
            yield "U", p
