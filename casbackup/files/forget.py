"""`forget`: remove snapshots from the live set, by ID or by a keep policy (restic's semantics).

Forgetting is one commit that deletes snapshot entries; no blob is touched. Space comes back
through gc, which never deletes what a pinned reader still uses.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Sequence

from ..errors import UsageError
from ..records import Generation
from ..repository import Reader, Repository
from .snapshots import NAMESPACE, SnapshotInfo, list_snapshots, resolve, series


@dataclass
class Policy:
    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    def empty(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly)


@dataclass
class ForgetResult:
    """What a forget kept and removed; `generation` is the commit (None for a dry run)."""

    keep: list[SnapshotInfo]
    remove: list[SnapshotInfo]
    dry_run: bool = False
    generation: Generation | None = field(default=None)

    def to_json(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "removed": [s.id for s in self.remove], "kept": [s.id for s in self.keep],
                "generation": self.generation.seq if self.generation else None}


def _week(t: float) -> str:
    year, week, _ = datetime.fromtimestamp(t, timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


def _buckets() -> list[tuple[str, Callable[[float], str]]]:
    return [
        ("daily", lambda t: time.strftime("%Y-%m-%d", time.gmtime(t))),
        ("weekly", _week),
        ("monthly", lambda t: time.strftime("%Y-%m", time.gmtime(t))),
    ]


def apply_policy(snapshots: list[SnapshotInfo], policy: Policy) -> tuple[list[SnapshotInfo], list[SnapshotInfo]]:
    """(keep, remove). Newest first within each (host, paths) group: keep the N newest, and the
    newest snapshot of each of the last N days / ISO weeks / months that have snapshots."""
    keep_ids: set[str] = set()
    for group in series(snapshots):
        group.sort(key=lambda s: (s.time, s.id), reverse=True)
        keep_ids.update(s.id for s in group[:policy.last])
        for name, bucket in _buckets():
            n = getattr(policy, name)
            seen: set[str] = set()
            for s in group:
                if len(seen) >= n:
                    break
                b = bucket(s.time)
                if b not in seen:
                    seen.add(b)
                    keep_ids.add(s.id)
    keep = [s for s in snapshots if s.id in keep_ids]
    remove = [s for s in snapshots if s.id not in keep_ids]
    return keep, remove


def check_request(specs: Sequence[str], policy: Policy) -> None:
    """Snapshot IDs or a policy, exactly one of them (a UsageError before anything is opened)."""
    if specs and not policy.empty():
        raise UsageError("give snapshot IDs or a --keep-* policy, not both")
    if not specs and policy.empty():
        raise UsageError("nothing to forget: give snapshot IDs or a --keep-* policy")


def select(reader: Reader, specs: Sequence[str], policy: Policy,
           tags: Sequence[str] = ()) -> tuple[list[SnapshotInfo], list[SnapshotInfo]]:
    """(keep, remove) in `reader`'s generation: the snapshots that IDs, prefixes or 'latest' name
    (keep is then empty), or what `policy` removes among the snapshots with any of `tags`."""
    if specs:
        chosen = {s.id: s for s in (resolve(reader, spec) for spec in specs)}
        return [], list(chosen.values())
    every = [s for s in list_snapshots(reader) if not tags or set(tags) & set(s.tags)]
    return apply_policy(every, policy)


def forget_snapshots(repo: Repository, specs: Sequence[str] = (), policy: Policy | None = None,
                     tags: Sequence[str] = (), dry_run: bool = False) -> ForgetResult:
    """Select as `select` does, in the generation the commit builds on, and delete the removed
    entries in one commit. A dry run only reads, under a pinned reader."""
    policy = policy or Policy()
    check_request(specs, policy)
    if dry_run:
        with repo.reader("forget --dry-run") as reader:
            keep, remove = select(reader, specs, policy, tags)
        return ForgetResult(keep, remove, dry_run=True)
    with repo.transaction("forget") as txn:
        keep, remove = select(txn.base, specs, policy, tags)
        for s in remove:
            txn.delete(NAMESPACE, s.id)
    return ForgetResult(keep, remove, generation=txn.result)
