"""Read file trees through a pinned Reader: nodes, chunk lists, path lookup, walking.

Every read path (ls, cat, restore, diff, the files cache) goes through here, so the checks a
reader owes the format live in one place: index TREEs are flattened with their order checked
across parts, a file's chunks are streamed (never listed whole) with their sizes checked against
the entry's size, and walks are iterative with a depth bound.
"""
from __future__ import annotations

from typing import Any, Iterator

from ..chunklist import iter_chunks
from ..codec import BlobType, Ref, unpack_structured
from ..errors import BlobCorrupt, BlobMissing, CasbackupError, NotFound
from ..packs import Location
from ..repository import Reader
from .names import as_bytes, from_bytes, shown
from .tree import MAX_DEPTH, Chunk, Node, TreeBody, decode_tree_body


def in_file(exc: CasbackupError, doing: str) -> CasbackupError:
    """Prefix an error with the file being read ("restoring /a/x: blob ... is corrupt ..."),
    keeping its class (so its exit code), blob and generation. Only the first prefix sticks."""
    if not getattr(exc, "file_context", None):
        exc.file_context = doing  # type: ignore[attr-defined]
        exc.args = (f"{doing}: {exc}",)
    return exc


class TreeReader:
    def __init__(self, snap: Reader) -> None:
        self.snap = snap

    @property
    def generation(self) -> str:
        return str(self.snap.generation.id)

    def _structured(self, ref: Ref) -> tuple[list[Ref], Any]:
        """Read and decode without the store's decoded-blob cache: TREEs can carry megabytes of
        inline data, and a walk reads each one once, so caching thousands would only cost memory."""
        payload = self.snap.read_blob(ref)
        try:
            return unpack_structured(payload, ref.id)
        except BlobCorrupt as exc:
            raise BlobCorrupt(ref.id, exc.reason, self.generation) from None

    def _tree_body(self, tree_id: str) -> TreeBody:
        refs, body = self._structured(Ref(BlobType.TREE, tree_id))
        try:
            return decode_tree_body(tree_id, refs, body)
        except BlobCorrupt as exc:
            raise BlobCorrupt(tree_id, exc.reason, self.generation) from None

    def nodes(self, tree_id: str) -> list[Node]:
        """A directory's entries, validated; an index TREE's parts are read and concatenated,
        each a plain TREE, names strictly ascending across parts as within one."""
        tb = self._tree_body(tree_id)
        if tb.entries is not None:
            return list(tb.entries)
        out: list[Node] = []
        for part in tb.parts or []:
            pb = self._tree_body(part)
            if pb.entries is None:
                raise BlobCorrupt(part, f"TREE part of {tree_id} is itself an index (parts do not nest)",
                                  self.generation)
            if not pb.entries:
                raise BlobCorrupt(part, f"TREE part of {tree_id} is empty", self.generation)
            if out and pb.entries[0].name <= out[-1].name:
                raise BlobCorrupt(part, f"entry {pb.entries[0].name!r} is duplicated or out of order across "
                                        f"the parts of {tree_id}", self.generation)
            out.extend(pb.entries)
        return out

    def chunks(self, node: Node, path: str | None = None, doing: str = "reading") -> Iterator[Chunk]:
        """A file's chunks in order, streamed (one FILE part in memory per level), after checking
        that they add up to the entry's size; FILE parts are checked against their index as they
        are reached. Errors name the blob, the generation and (given `path`) the file."""
        try:
            if node.data is not None:
                return
            if node.file:
                for c in iter_chunks(self._structured, node.file, node.size):
                    yield c
                return
            listed = node.chunks or []
            total = sum(c.size for c in listed)
            if total != node.size:
                raise BlobCorrupt(node.where or "?", f"the chunks of {node.name!r} add up to {total} bytes, "
                                                     f"its size is {node.size}", self.generation)
            yield from listed
        except BlobCorrupt as exc:
            if exc.generation is None:  # raised by the FILE codec, which does not know it
                exc = BlobCorrupt(exc.blob_id, exc.reason, self.generation)
            raise (in_file(exc, f"{doing} {path}") if path else exc) from None
        except BlobMissing as exc:
            raise (in_file(exc, f"{doing} {path}") if path else exc) from None

    def content(self, node: Node, path: str | None = None) -> Iterator[bytes]:
        """A file's bytes in order, every chunk verified (hash, and length against its list)."""
        if node.data is not None:
            yield node.data
            return
        for c in self.chunks(node, path):
            try:
                data = self.read_chunk(c)
            except (BlobCorrupt, BlobMissing) as exc:
                raise (in_file(exc, f"reading {path}") if path else exc) from None
            yield data

    def read_chunk(self, chunk: Chunk) -> bytes:
        return self._sized(chunk, self.snap.read_blob(chunk.ref))

    def read_chunks(self, run: list[tuple[Chunk, Location | None]]) -> list[bytes]:
        """Chunks of one pack (as `located` found them), read with one ranged read spanning them;
        one chunk, or one not located, is read alone (which says what is wrong)."""
        located = [(c.ref, loc) for c, loc in run if loc is not None]
        if len(run) == 1 or len(located) != len(run):
            return [self.read_chunk(c) for c, _ in run]
        return [self._sized(c, data) for (c, _), data in zip(run, self.snap.read_run(located))]

    def located(self, chunks: list[Chunk]) -> dict[str, Location]:
        """Where the generation stores these chunks (those it does not locate are left out)."""
        return self.snap.locations(c.ref for c in chunks)

    def _sized(self, chunk: Chunk, data: bytes) -> bytes:
        if len(data) != chunk.size:
            raise BlobCorrupt(chunk.id, f"chunk is {len(data)} bytes, the tree says {chunk.size}", self.generation)
        return data

    def lookup(self, root: str, path: str) -> Node:
        """The node at a '/'-separated path inside a snapshot ('' or '/' is the root)."""
        node = Node(b"", "dir", tree=root, mode=0o755)
        for part in [p for p in path.split("/") if p and p != "."]:
            if not node.is_dir:
                raise NotFound(f"{shown(path)}: {shown(part)} is inside a non-directory")
            want = as_bytes(part)
            found = [n for n in self.nodes(node.tree or "") if n.name == want]
            if not found:
                raise NotFound(f"no such path in snapshot: {shown(path)}")
            node = found[0]
        return node

    def walk(self, node: Node, path: str) -> Iterator[tuple[str, Node]]:
        """(path, node) depth first, parents before children, names sorted. Iterative, and
        refuses nesting deeper than MAX_DEPTH below `node` (a hostile snapshot gets an error)."""
        yield path, node
        stack: list[tuple[str, Iterator[Node]]] = []
        if node.is_dir and node.tree:
            stack.append((path, iter(self.nodes(node.tree))))
        while stack:
            base, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            p = join(base, child.name)
            yield p, child
            if child.is_dir and child.tree:
                if len(stack) > MAX_DEPTH:
                    raise BlobCorrupt(child.tree, f"directory nesting deeper than {MAX_DEPTH} levels",
                                      self.generation)
                stack.append((p, iter(self.nodes(child.tree))))


def join(path: str, name: bytes) -> str:
    s = from_bytes(name)
    return f"{path.rstrip('/')}/{s}" if path else s
