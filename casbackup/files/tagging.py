"""`tag`: change a snapshot's tags in one transaction (spec/files.md §6.1).

A snapshot ID is the hash of its value, tags included, so a tag change makes a new entry with a
new ID and deletes the old one in the same commit (as restic does). The new value records the
first ID the snapshot ever had in `original`; `parent` fields elsewhere keep naming the ID that
was used, and readers map it through `original`. The old entry must still be there at commit
time, so a concurrent forget or tag of the same snapshot is a conflict, never a resurrection.
"""
from __future__ import annotations

import dataclasses
from ..codec import BlobType, Ref
from ..errors import UsageError
from ..repository import Repository
from .snapshots import NAMESPACE, SnapshotFilter, SnapshotInfo, new_id, select


def new_tags(old: list[str], add: list[str], remove: list[str], set_: list[str] | None) -> list[str]:
    tags = set(set_) if set_ is not None else set(old)
    return sorted((tags | set(add)) - set(remove))


def tag_snapshots(repo: Repository, specs: list[str], flt: SnapshotFilter | None, add: list[str],
                  remove: list[str], set_: list[str] | None) -> list[tuple[SnapshotInfo, SnapshotInfo]]:
    """Returns (old, new) for each snapshot whose tags changed; commits nothing when none did.
    No specs: every snapshot the filter selects (all without one), as restic's `tag`; a snapshot
    marked damaged is then left as it is, while naming one is an error."""
    for t in [*add, *remove, *(set_ or [])]:
        if not t or "," in t:
            raise UsageError(f"invalid tag {t!r}: a tag is a non-empty word without ','")
    txn = repo.transaction("tag")
    try:
        changed = []
        for info in select(txn.base, specs, flt):
            if info.damaged and not specs:
                continue
            if info.damaged:
                raise UsageError(f"snapshot {info.id[:8]} is marked damaged by 'repair blobs'; its tags are not "
                                 "changed (forget it, or back up again)")
            tags = new_tags(info.tags, add, remove, set_)
            if tags == sorted(set(info.tags)):
                continue
            new = dataclasses.replace(info, tags=tags, original=info.original or info.id, damaged=False)
            value = new.value()
            new.id = new_id(value)
            txn.delete(NAMESPACE, info.id)
            txn.expect_present.add((NAMESPACE, info.id))
            txn.put(NAMESPACE, new.id, value, refs=[Ref(BlobType.TREE, new.tree)], if_absent=True)
            changed.append((info, new))
        if changed:
            txn.commit()
        else:
            txn.abort()
        return changed
    except BaseException:
        txn.abort()
        raise

