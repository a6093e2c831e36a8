"""`rewrite`: new snapshots without excluded paths (restic's `rewrite --exclude`).

Exclude patterns have restic's semantics (files/patterns.py) and match a snapshot's paths as
stored (absolute, e.g. /home/me/.aws). Only the directories on the way to a dropped entry get
new TREEs; every other subtree is reused by ID. As with `tag`, the new snapshot records the
first ID it ever had in `original`. Without `forget` the old snapshot stays and the new one gets
the tag `rewrite` (as restic does); with `forget` the old entry is deleted in the same commit,
which must still find it there (a concurrent forget or tag is a conflict, never a resurrection).
A snapshot the patterns leave unchanged gets no new snapshot.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from ..codec import BlobType, Ref, pack_structured
from ..errors import BlobCorrupt, UsageError
from ..repository import Reader, Repository
from .patterns import PatternList
from .reader import TreeReader
from .snapshots import NAMESPACE, SnapshotFilter, SnapshotInfo, new_id, select
from .tree import MAX_DEPTH, Node, PutStructured, write_tree

REWRITE_TAG = "rewrite"
EMPTY = ""  # what _Pruner.tree returns for a root left with no entries


@dataclass
class Rewritten:
    old: SnapshotInfo
    new: SnapshotInfo | None             # None when nothing was excluded
    removed: list[str] = field(default_factory=list)  # paths dropped (a directory counts once)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"old": self.old.id, "new": self.new.id if self.new else None,
                "original": self.new.original if self.new else None, "removed": self.removed, "note": self.note}


@dataclass
class _Ref:
    ref: Ref


def _dry_put(repo: Repository) -> Callable[[BlobType, list[Ref], Any], _Ref]:
    """What a put would return, without storing (for --dry-run)."""
    def put(blob_type: BlobType, refs: list[Ref], body: Any) -> _Ref:
        return _Ref(Ref(blob_type, repo.store.blob_id(blob_type, pack_structured(refs, body, blob_type))))
    return put


# The summary counters that describe what a snapshot holds (not what its backup did), by the
# kind of entry each counts; rewrite takes what it drops off them so `snapshots` and restore's
# progress totals stay true.
_HELD = {"file": "total_files", "dir": "dirs", "symlink": "symlinks"}


class _Pruner:
    """Prunes one snapshot's tree; `dropped` counts what it took out (for the summary)."""

    def __init__(self, reader: TreeReader, excluded: Callable[[str, bool], bool], put: PutStructured) -> None:
        self.reader, self.excluded, self.put = reader, excluded, put
        self.dropped: dict[str, int] = {}

    def _drop(self, node: Node, depth: int) -> None:
        """Count a dropped entry, and everything below it, against the snapshot's summary."""
        if depth > MAX_DEPTH:
            raise BlobCorrupt(node.tree or "", f"directory nesting deeper than {MAX_DEPTH} levels",
                              self.reader.generation)
        key = _HELD.get(node.kind, "specials")
        self.dropped[key] = self.dropped.get(key, 0) + 1
        if node.kind == "file":
            self.dropped["total_bytes"] = self.dropped.get("total_bytes", 0) + node.size
        if node.is_dir and node.tree:
            for child in self.reader.nodes(node.tree):
                self._drop(child, depth + 1)

    def tree(self, tree_id: str, path: str, removed: list[str], depth: int = 0) -> str:
        """The ID of tree_id without its excluded entries (tree_id itself when none are)."""
        if depth > MAX_DEPTH:
            raise BlobCorrupt(tree_id, f"directory nesting deeper than {MAX_DEPTH} levels", self.reader.generation)
        out: list[Node] = []
        changed = False
        for node in self.reader.nodes(tree_id):
            p = f"{path}/{node.name.decode('utf-8', 'surrogateescape')}"
            if self.excluded(p, node.is_dir):
                removed.append(p)
                self._drop(node, depth + 1)
                changed = True
                continue
            if node.is_dir and node.tree:
                sub = self.tree(node.tree, p, removed, depth + 1)
                if sub != node.tree:
                    node = dataclasses.replace(node, tree=sub)
                    changed = True
            out.append(node)
        if not changed:
            return tree_id
        if depth == 0 and not out:
            return EMPTY
        return write_tree(self.put, out).id


def _less(summary: dict[str, Any], dropped: dict[str, int]) -> dict[str, Any]:
    """The summary of a snapshot without what was dropped: the counters of what it holds go down;
    those of what its backup did (new, changed, added, read) stay as they were; the dropped
    amounts are added up under `rewrite` (a rewrite of a rewrite sums both)."""
    out = dict(summary)
    for key, n in dropped.items():
        if isinstance(out.get(key), int):
            out[key] = max(out[key] - n, 0)
    before = summary.get("rewrite")
    totals = {k: v for k, v in before.items() if isinstance(v, int)} if isinstance(before, dict) else {}
    for k, v in dropped.items():
        totals["removed_" + k] = totals.get("removed_" + k, 0) + v
    out["rewrite"] = dict(sorted(totals.items()))
    return out


def excluder(exclude: list[str], iexclude: list[str]) -> Callable[[str, bool], bool]:
    plain, folded = PatternList(exclude), PatternList(iexclude, fold=True)
    if not (plain or folded):
        raise UsageError("nothing to exclude: give --exclude, --iexclude or --exclude-file")
    return lambda path, is_dir: plain.matches(path, is_dir) or folded.matches(path, is_dir)


def plan(snap: Reader, specs: list[str], flt: SnapshotFilter | None, excluded: Callable[[str, bool], bool],
         put: PutStructured, forget: bool) -> list[Rewritten]:
    """Choose the snapshots and build their pruned trees through `put` (stored or only hashed)."""
    reader = TreeReader(snap)
    out: list[Rewritten] = []
    for info in select(snap, specs, flt):  # no IDs: all the filter selects, as in restic
        if info.damaged:
            raise UsageError(f"snapshot {info.id[:8]} is marked damaged by 'repair blobs'; it is not "
                             "rewritten (forget it, or back up again)")
        item = Rewritten(info, None)
        out.append(item)
        pruner = _Pruner(reader, excluded, put)
        root = pruner.tree(info.tree, "", item.removed)
        if root == info.tree:
            item.note = "nothing excluded"
            continue
        if root == EMPTY:  # restic also refuses to make an empty snapshot
            item.note = "every path excluded: the snapshot would be empty; not rewritten (forget it instead)"
            continue
        tags = info.tags if forget else sorted(set(info.tags) | {REWRITE_TAG})
        new = dataclasses.replace(info, tree=root, tags=tags, original=info.original or info.id, damaged=False,
                                  summary=_less(info.summary, pruner.dropped))
        new.id = new_id(new.value())
        item.new = new
    return out


def rewrite_snapshots(repo: Repository, specs: list[str], flt: SnapshotFilter | None, exclude: list[str],
                      iexclude: list[str], forget: bool = False, dry_run: bool = False) -> list[Rewritten]:
    """One Rewritten per chosen snapshot; commits the new ones (and deletes the old with
    `forget`) in one transaction, or nothing when none changed or on a dry run (which only
    reads, so it works on a read-only repository)."""
    excluded = excluder(exclude, iexclude)
    if dry_run:
        with repo.reader("rewrite --dry-run") as snap:
            return plan(snap, specs, flt, excluded, _dry_put(repo), forget)
    txn = repo.transaction("rewrite")
    try:
        out = plan(txn.base, specs, flt, excluded, txn.put_structured, forget)
        for item in out:
            if item.new is None:
                continue
            if txn.base.entry(NAMESPACE, item.new.id) is not None:
                item.note = "already rewritten"
            else:
                txn.put(NAMESPACE, item.new.id, item.new.value(), refs=[item.new.root], if_absent=True)
            if forget:
                txn.delete(NAMESPACE, item.old.id)
                txn.expect_present.add((NAMESPACE, item.old.id))
        if txn.ops:
            txn.commit()
        else:
            txn.abort()
        return out
    except BaseException:
        txn.abort()
        raise
