"""Which snapshots a keep policy keeps (restic's semantics), per host and set of paths."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Callable

from .snapshots import SnapshotInfo


@dataclass
class Policy:
    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    def empty(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly)


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
    groups: dict[tuple[str, tuple[str, ...]], list[SnapshotInfo]] = {}
    for s in snapshots:
        groups.setdefault((s.host, tuple(sorted(s.paths))), []).append(s)
    keep_ids: set[str] = set()
    for group in groups.values():
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
