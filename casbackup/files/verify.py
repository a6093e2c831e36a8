"""check's validators for the files layer: TREE, FILE and snapshot entries, decoded exactly as
restore decodes them, plus the sizes restore insists on (spec/files.md, spec/FORMAT.md §10).

check is core and knows nothing of files; the CLI passes these in. One FilesVerifier per check
run: it remembers the sizes trees declare for chunks and FILE blobs and compares them with the
sizes those blobs really have once they are read (only with --read-data for chunks).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from .. import chunklist
from ..codec import BlobType, Ref
from ..errors import BlobCorrupt
from . import snapshots
from .tree import Chunk, decode_tree

Validator = Callable[[str, list[Ref], Any], None]
EntryValidator = Callable[[str, bytes, tuple[Ref, ...]], None]


class FilesVerifier:
    """Cross-blob checks of the files layer: every FILE of any layer (chunklist, FORMAT §6.4)
    and TREE, and that sizes declared by one blob match what another holds."""

    def __init__(self) -> None:
        # blob id -> (declared size, the blob that declared it)
        self._declared: dict[str, tuple[int, str]] = {}
        # blob id -> real size (chunk payload length, or a FILE's total), once read
        self._actual: dict[str, int] = {}
        self._disputed: list[tuple[str, int, str]] = []

    def _declare(self, blob_id: str, size: int, by: str, what: str) -> None:
        actual = self._actual.get(blob_id)
        if actual is not None and actual != size:
            raise BlobCorrupt(by, f"{what} {blob_id} is {actual} bytes, this blob says {size}")
        first = self._declared.setdefault(blob_id, (size, by))
        if first[0] != size and actual is None:
            self._disputed.append((blob_id, size, by))  # two blobs disagree: settled when it is read

    def _observe(self, blob_id: str, size: int, what: str) -> None:
        self._actual[blob_id] = size
        claims = [self._declared[blob_id]] if blob_id in self._declared else []
        claims += [(s, by) for i, s, by in self._disputed if i == blob_id]
        for declared, by in claims:
            if declared != size:
                raise BlobCorrupt(by, f"{what} {blob_id} is {size} bytes, this blob says {declared}")

    def _chunks(self, chunks: list[Chunk], by: str) -> int:
        for c in chunks:
            self._declare(c.id, c.size, by, "chunk")
        return sum(c.size for c in chunks)

    def tree(self, tree_id: str, refs: list[Ref], body: Any) -> None:
        for n in decode_tree(tree_id, refs, body):
            if n.kind != "file" or n.data is not None:
                continue
            if n.file:
                self._declare(n.file, n.size, tree_id, "FILE blob")
            elif self._chunks(list(n.chunks or ()), tree_id) != n.size:
                raise BlobCorrupt(tree_id, f"chunks of {os.fsdecode(n.name)!r} do not add up to its size")

    def file(self, file_id: str, refs: list[Ref], body: Any) -> None:
        """Any FILE body (every layer's, legacy Aptos included) through the one codec; an index
        declares its parts' sizes, a leaf its chunks'."""
        fb = chunklist.decode_file(file_id, refs, body)
        if fb.chunks is not None:
            total = self._chunks(fb.chunks, file_id)
        else:
            for part in fb.parts or []:
                self._declare(part.id, part.size, file_id, "FILE blob")
            total = fb.size
        self._observe(file_id, total, "FILE blob")

    def chunk(self, chunk_id: str, refs: list[Ref], body: Any) -> None:
        self._observe(chunk_id, len(body), "chunk")

    def validators(self) -> dict[BlobType, Validator]:
        return {BlobType.TREE: self.tree, BlobType.FILE: self.file, BlobType.CHUNK: self.chunk}


def validate_snapshot_entry(key: str, value: bytes, refs: tuple[Ref, ...]) -> None:
    snapshots.decode(key, value, refs)


def check_validators() -> tuple[dict[BlobType, Validator], Mapping[str, EntryValidator]]:
    """(validators, entry_validators) for one check() run."""
    return FilesVerifier().validators(), {snapshots.NAMESPACE: validate_snapshot_entry}
