"""Copy-on-write B+tree of metadata entries, stored as PAGE blobs (spec/FORMAT.md §6).

A commit rewrites only the pages on the paths to changed keys, so a generation shares every
other page with its parent: one new entry among 10^6 writes a handful of small pages.
"""
from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple

from .codec import BlobType, Ref, pack_structured
from .errors import BlobCorrupt
from .store import BlobStore
from .transfer import DEFAULT_REQUESTS, Pipeline

LEAF_TARGET_BYTES = 16 * 1024
MAX_FANOUT = 128
INLINE_VALUE_MAX = 8 * 1024
# Refs one entry may carry: one entry is never split across pages, so this bounds a leaf PAGE
# (~70 bytes per ref) far below the structured limit (codec.MAX_STRUCTURED_PAYLOAD).
MAX_ENTRY_REFS = 4096
VALUE_REF_TYPES = (BlobType.VALUE, BlobType.FILE)


class Entry(NamedTuple):
    namespace: str
    key: str
    value: bytes | None  # inline value, or None when the value lives in a VALUE blob
    value_ref: Ref | None
    refs: tuple[Ref, ...]  # blobs this entry keeps alive (e.g. a snapshot's tree)

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.namespace, self.key)

    def all_refs(self) -> list[Ref]:
        return list(self.refs) + ([self.value_ref] if self.value_ref else [])


@dataclass(frozen=True, slots=True)
class Op:
    """A put (entry set) or delete (entry None) of one key."""

    namespace: str
    key: str
    entry: Entry | None


def _entry_to_wire(e: Entry) -> list[Any]:
    return [e.namespace, e.key, e.value, e.value_ref.to_bytes() if e.value_ref else None, [r.to_bytes() for r in e.refs]]


_new_entry = Entry.__new__


def _entry_from_wire(raw: Any, name: str) -> Entry:
    # Hot path of every listing (10^6 entries per generation): exact type checks, no helpers.
    if type(raw) is not list or len(raw) != 5:
        raise BlobCorrupt(name, "malformed entry")
    ns, key, value, vref, refs = raw
    if type(ns) is not str or type(key) is not str or type(refs) is not list:
        raise BlobCorrupt(name, "malformed entry fields")
    if value is None:
        if vref is None:
            raise BlobCorrupt(name, "an entry needs exactly one of an inline value or a value blob")
        vref = Ref.from_bytes(vref, name)
        if vref.type not in VALUE_REF_TYPES:
            raise BlobCorrupt(name, f"an entry's value blob must be a VALUE or FILE, not {vref.type.name}")
    elif vref is not None or type(value) is not bytes:
        raise BlobCorrupt(name, "an entry needs exactly one of an inline value or a value blob")
    return _new_entry(Entry, ns, key, value, vref, tuple([Ref.from_bytes(r, name) for r in refs]) if refs else ())


class Page(NamedTuple):
    level: int  # 0: leaf of entries; n>0: children of level n-1
    entries: list[Entry]
    children: list[tuple[tuple[str, str], Ref]]  # (first key, page)


class _PageWriter:
    """The new pages of one apply, written on DEFAULT_REQUESTS threads: each is a create (an
    fsync, or a PUT), and a commit that rewrites 4 * 10^4 leaves (gc's repack or prune at 10^7
    blobs) would otherwise wait for them one at a time. IDs are computed in the caller's thread,
    so a parent names its children at once; `finish` returns only once every page is stored."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.written: list[Ref] = []
        self._pipe: Pipeline[object] | None = None

    def put(self, refs: list[Ref], body: Any) -> Ref:
        blob = self.store.encode(BlobType.PAGE, pack_structured(refs, body, BlobType.PAGE))
        if self._pipe is None:
            self._pipe = Pipeline(DEFAULT_REQUESTS, max_items=2 * DEFAULT_REQUESTS, name="casbackup-pages")
        while self._pipe.full():
            self._pipe.take()
        self._pipe.submit(self.store.put_encoded, blob)
        ref = Ref(BlobType.PAGE, blob.id)
        self.written.append(ref)
        return ref

    def finish(self) -> None:
        if self._pipe is not None:
            while self._pipe:
                self._pipe.take()
            self._pipe.close(cancel=False)

    def abort(self) -> None:
        if self._pipe is not None:
            self._pipe.close(cancel=True)


class BTree:
    def __init__(self, store: BlobStore) -> None:
        self.store = store

    # ---- reading -----------------------------------------------------------------------

    def load(self, ref: Ref, generation: str | None = None, cache: bool = True) -> Page:
        refs, body = self.store.get_structured(ref, generation, cache=cache)
        name = ref.id
        if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], int) and isinstance(body[1], list)):
            raise BlobCorrupt(name, "malformed page", generation)
        level, items = body
        try:
            if level == 0:
                entries: list[Entry] = []
                append = entries.append
                for raw in items:
                    # inline fast path for the common entry: inline value, no refs
                    if type(raw) is list and len(raw) == 5:
                        ns, key, value, vref, erefs = raw
                        if (type(value) is bytes and vref is None and type(erefs) is list and not erefs
                                and type(ns) is str and type(key) is str):
                            append(_new_entry(Entry, ns, key, value, None, ()))
                            continue
                    append(_entry_from_wire(raw, name))
                keys = [(e[0], e[1]) for e in entries]
                children: list[tuple[tuple[str, str], Ref]] = []
            elif 0 < level < 64:
                entries = []
                children = []
                for raw in items:
                    if not (isinstance(raw, list) and len(raw) == 3 and isinstance(raw[0], str) and isinstance(raw[1], str)):
                        raise BlobCorrupt(name, "malformed child")
                    child = Ref.from_bytes(raw[2], name)
                    if child.type != BlobType.PAGE:
                        raise BlobCorrupt(name, "page child is not a page")
                    children.append(((raw[0], raw[1]), child))
                keys = [c[0] for c in children]
            else:
                raise BlobCorrupt(name, f"page level {level} out of range")
        except BlobCorrupt as exc:
            raise BlobCorrupt(name, exc.reason, generation) from None
        if not all(map(operator.lt, keys, keys[1:])):
            raise BlobCorrupt(name, "page keys are not strictly sorted", generation)
        return Page(level, entries, children)

    def get(self, root: Ref | None, namespace: str, key: str, generation: str | None = None) -> Entry | None:
        target = (namespace, key)
        ref = root
        while ref is not None:
            page = self.load(ref, generation)
            if page.level == 0:
                for e in page.entries:
                    if e.sort_key == target:
                        return e
                return None
            i = bisect_right([c[0] for c in page.children], target) - 1
            if i < 0:
                return None
            ref = page.children[i][1]
        return None

    def get_many(self, root: Ref | None, keys: Iterable[tuple[str, str]],
                 generation: str | None = None) -> dict[tuple[str, str], Entry]:
        """The entries of many (namespace, key) pairs, absent ones left out: what `get` returns
        for each, from one ordered descent that loads each page on the paths to them once (a
        merge-join of the sorted keys against the tree), not one descent per key. A commit
        locating 10^4-10^5 blobs decodes each leaf it needs once instead of once per blob
        (FORMAT.md §12.5). Pages load and verify as in `get`: BlobMissing / BlobCorrupt name the
        page and `generation`."""
        wanted = sorted(set(keys))
        found: dict[tuple[str, str], Entry] = {}
        if root is None or not wanted:
            return found
        # Depth first in key order: (page, slice of `wanted` below it).
        stack: list[tuple[Ref, int, int]] = [(root, 0, len(wanted))]
        while stack:
            ref, lo, hi = stack.pop()
            page = self.load(ref, generation)
            if page.level == 0:
                _join_leaf(page.entries, wanted, lo, hi, found)
            else:
                stack.extend(reversed(_split_by_child(page.children, wanted, lo, hi)))
        return found

    def iterate(self, root: Ref | None, start: tuple[str, str] = ("", ""), generation: str | None = None) -> Iterator[Entry]:
        """Entries with sort key >= start, in order."""
        if root is None:
            return
        yield from self._iterate(root, start, generation)

    def iterate_namespace(self, root: Ref | None, namespace: str, generation: str | None = None) -> Iterator[Entry]:
        """One namespace's entries, in key order."""
        for e in self.iterate(root, (namespace, ""), generation):
            if e.namespace != namespace:
                return
            yield e

    def _iterate(self, ref: Ref, start: tuple[str, str], generation: str | None) -> Iterator[Entry]:
        # One generator for the whole walk (not one per level per entry): depth first over
        # pages with an explicit stack of [page, next child]. Only the leftmost path needs
        # `start`: every later page holds keys above it.
        stack: list[list[Any]] = []
        page: Page | None = self.load(ref, generation)
        first = True
        while page is not None:
            if page.level == 0:
                if first:
                    first = False
                    for e in page.entries:
                        if (e[0], e[1]) >= start:
                            yield e
                else:
                    yield from page.entries
            else:
                i = max(bisect_right([c[0] for c in page.children], start) - 1, 0) if first else 0
                stack.append([page, i])
            page = None
            while stack:
                top = stack[-1]
                parent, i = top
                if i < len(parent.children):
                    top[1] = i + 1
                    # leaves of a scan are used once: keep them out of the decode cache
                    page = self.load(parent.children[i][1], generation, cache=parent.level > 1)
                    break
                stack.pop()

    def scan_namespace(self, root: Ref | None, namespace: str, generation: str | None,
                       seen_pages: set[str]) -> Iterator[Entry]:
        """One namespace's entries, skipping every page in `seen_pages` (and adding the ones it
        reads): scanning several generations that share pages costs each page once (gc's scan
        of `_blobs`, FORMAT.md §12.7.7). Order is by key within each page, not across them."""
        if root is None or root.id in seen_pages:
            return
        stack = [root]
        lo, hi = (namespace, ""), (namespace + "\x00", "")
        while stack:
            ref = stack.pop()
            if ref.id in seen_pages:
                continue
            seen_pages.add(ref.id)
            page = self.load(ref, generation, cache=False)
            if page.level == 0:
                yield from (e for e in page.entries if e.namespace == namespace)
                continue
            keys = [c[0] for c in page.children]
            first = max(bisect_right(keys, lo) - 1, 0)
            for i in range(first, len(keys)):
                if keys[i] >= hi:
                    break
                stack.append(page.children[i][1])

    # ---- writing -----------------------------------------------------------------------

    def apply(self, root: Ref | None, ops: list[Op]) -> tuple[Ref | None, int, list[Ref]]:
        """Apply sorted, unique-key ops; returns (new root, change in entry count, pages written)."""
        ops = sorted(ops, key=lambda o: (o.namespace, o.key))
        written = _PageWriter(self.store)
        delta = [0]
        try:
            if root is None:
                level = 0
                nodes = self._write_leaves([o.entry for o in ops if o.entry is not None], written)
                delta[0] = sum(1 for o in ops if o.entry is not None)
            else:
                level, nodes = self._apply(root, ops, written, delta)
            while len(nodes) > 1:
                level += 1
                nodes = self._write_internal(level, nodes, written)
            written.finish()
        except BaseException:
            written.abort()  # pages already stored are unreferenced: gc's to collect
            raise
        if not nodes:
            return None, delta[0], written.written
        top = nodes[0][1]
        # Collapse a root with a single child so the tree never grows needlessly tall.
        while True:
            page = self.load(top)
            if page.level > 0 and len(page.children) == 1:
                top = page.children[0][1]
            else:
                break
        return top, delta[0], written.written

    def _apply(self, ref: Ref, ops: list[Op], written: _PageWriter, delta: list[int]) -> tuple[int, list[tuple[tuple[str, str], Ref]]]:
        page = self.load(ref)
        if page.level == 0:
            merged: dict[tuple[str, str], Entry] = {e.sort_key: e for e in page.entries}
            for op in ops:
                k = (op.namespace, op.key)
                existed = k in merged
                if op.entry is None:
                    if existed:
                        del merged[k]
                        delta[0] -= 1
                else:
                    merged[k] = op.entry
                    if not existed:
                        delta[0] += 1
            entries = [merged[k] for k in sorted(merged)]
            if entries == page.entries:
                return 0, [(entries[0].sort_key, ref)] if entries else []
            return 0, self._write_leaves(entries, written)
        keys = [c[0] for c in page.children]
        groups: dict[int, list[Op]] = {}
        for op in ops:
            i = max(bisect_right(keys, (op.namespace, op.key)) - 1, 0)
            groups.setdefault(i, []).append(op)
        new_children: list[tuple[tuple[str, str], Ref]] = []
        for i, (first, child) in enumerate(page.children):
            if i in groups:
                _, replaced = self._apply(child, groups[i], written, delta)
                new_children.extend(replaced)
            else:
                new_children.append((first, child))
        if new_children == page.children:
            return page.level, [(keys[0], ref)]
        return page.level, self._write_internal(page.level, new_children, written)

    def _write_leaves(self, entries: list[Entry], written: _PageWriter) -> list[tuple[tuple[str, str], Ref]]:
        if not entries:
            return []
        sizes = [len(e.namespace) + len(e.key) + len(e.value or b"") + 34 * (len(e.refs) + 1) + 8 for e in entries]
        total = sum(sizes)
        pieces = max(1, -(-total // LEAF_TARGET_BYTES))
        target = total / pieces
        out: list[tuple[tuple[str, str], Ref]] = []
        start, acc = 0, 0
        for i, size in enumerate(sizes):
            acc += size
            if acc >= target and len(out) < pieces - 1:
                out.append(self._write_leaf(entries[start : i + 1], written))
                start, acc = i + 1, 0
        if start < len(entries):
            out.append(self._write_leaf(entries[start:], written))
        return out

    def _write_leaf(self, entries: list[Entry], written: _PageWriter) -> tuple[tuple[str, str], Ref]:
        refs = [r for e in entries for r in e.all_refs()]
        return entries[0].sort_key, written.put(refs, [0, [_entry_to_wire(e) for e in entries]])

    def _write_internal(self, level: int, children: list[tuple[tuple[str, str], Ref]], written: _PageWriter) -> list[tuple[tuple[str, str], Ref]]:
        if not children:
            return []
        pieces = max(1, -(-len(children) // MAX_FANOUT))
        size = -(-len(children) // pieces)
        out = []
        for i in range(0, len(children), size):
            group = children[i : i + size]
            body = [level, [[k[0], k[1], c.to_bytes()] for k, c in group]]
            out.append((group[0][0], written.put([c for _, c in group], body)))
        return out


def _join_leaf(entries: list[Entry], wanted: list[tuple[str, str]], lo: int, hi: int,
               found: dict[tuple[str, str], Entry]) -> None:
    """Add the entries of a leaf whose keys are in wanted[lo:hi] (both sorted)."""
    if hi - lo <= 2:  # a key or two: a scan as in `get`, without building the key list
        for k in wanted[lo:hi]:
            for e in entries:
                if (e[0], e[1]) == k:
                    found[k] = e
                    break
        return
    keys = [(e[0], e[1]) for e in entries]
    n = len(keys)
    at = 0
    for k in wanted[lo:hi]:
        at = bisect_left(keys, k, at, n)
        if at == n:
            return
        if keys[at] == k:
            found[k] = entries[at]


def _split_by_child(children: list[tuple[tuple[str, str], Ref]], wanted: list[tuple[str, str]], lo: int,
                    hi: int) -> list[tuple[Ref, int, int]]:
    """wanted[lo:hi] cut into the runs each child covers, in order: child c holds the keys from
    its first key up to the next child's. Keys below the first child are in no page (absent)."""
    if not children:
        return []
    firsts = [c[0] for c in children]
    out: list[tuple[Ref, int, int]] = []
    i = lo
    if wanted[i] < firsts[0]:
        i = bisect_left(wanted, firsts[0], i, hi)
    while i < hi:
        c = bisect_right(firsts, wanted[i]) - 1
        end = bisect_left(wanted, firsts[c + 1], i, hi) if c + 1 < len(firsts) else hi
        out.append((children[c][1], i, end))
        i = end
    return out
