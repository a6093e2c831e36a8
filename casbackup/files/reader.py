"""Read file trees through a pinned Snapshot: nodes, chunk lists, path lookup, walking."""
from __future__ import annotations

from typing import Any, Iterator

from ..codec import BlobType, Ref, unpack_structured
from ..errors import BlobCorrupt, NotFound
from .tree import MAX_DEPTH, Chunk, Node, decode_file, decode_tree


class TreeReader:
    def __init__(self, snap: Any) -> None:
        self.snap = snap

    def _structured(self, ref: Ref) -> tuple[list[Ref], Any]:
        """Read and decode without the store's decoded-blob cache: TREEs can carry megabytes of
        inline data, and a walk reads each one once, so caching thousands would only cost memory."""
        payload = self.snap.read_blob(ref)
        try:
            return unpack_structured(payload, ref.id)
        except BlobCorrupt as exc:
            raise BlobCorrupt(ref.id, exc.reason, self.snap.generation.id) from None

    def nodes(self, tree_id: str) -> list[Node]:
        refs, body = self._structured(Ref(BlobType.TREE, tree_id))
        try:
            return decode_tree(tree_id, refs, body)
        except BlobCorrupt as exc:
            raise BlobCorrupt(tree_id, exc.reason, self.snap.generation.id) from None

    def chunks(self, node: Node) -> list[Chunk]:
        if node.file:
            refs, body = self._structured(Ref(BlobType.FILE, node.file))
            try:
                return decode_file(node.file, refs, body)
            except BlobCorrupt as exc:
                raise BlobCorrupt(node.file, exc.reason, self.snap.generation.id) from None
        return list(node.chunks or ())

    def content(self, node: Node) -> Iterator[bytes]:
        """A file's bytes in order, every chunk verified."""
        if node.data is not None:
            yield node.data
            return
        for c in self.chunks(node):
            yield self.read_chunk(c)

    def read_chunk(self, chunk: Chunk) -> bytes:
        data = self.snap.read_blob(chunk.ref)
        if len(data) != chunk.size:
            raise BlobCorrupt(chunk.id, f"chunk is {len(data)} bytes, the tree says {chunk.size}",
                              self.snap.generation.id)
        return data

    def lookup(self, root: str, path: str) -> Node:
        """The node at a '/'-separated path inside a snapshot ('' or '/' is the root)."""
        node = Node(b"", "dir", tree=root, mode=0o755)
        for part in [p for p in path.split("/") if p and p != "."]:
            if not node.is_dir:
                raise NotFound(f"{path!r}: {part!r} is inside a non-directory")
            want = part.encode("utf-8", "surrogateescape")
            found = [n for n in self.nodes(node.tree or "") if n.name == want]
            if not found:
                raise NotFound(f"no such path in snapshot: {path}")
            node = found[0]
        return node

    def walk(self, node: Node, path: str, depth: int = 0) -> Iterator[tuple[str, Node]]:
        """(path, node) depth first, parents before children, names sorted."""
        yield path, node
        if node.is_dir and node.tree:
            if depth > MAX_DEPTH:
                raise BlobCorrupt(node.tree, f"directory nesting deeper than {MAX_DEPTH} levels",
                                  self.snap.generation.id)
            for child in self.nodes(node.tree):
                yield from self.walk(child, join(path, child.name), depth + 1)


def join(path: str, name: bytes) -> str:
    s = name.decode("utf-8", "surrogateescape")
    return f"{path.rstrip('/')}/{s}" if path else s
