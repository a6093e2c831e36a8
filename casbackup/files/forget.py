"""`forget`: remove snapshots from the live set, by ID or by a keep policy (restic's semantics).

Forgetting is one commit that deletes snapshot entries; no blob is touched. Space comes back
through gc, which never deletes what a pinned reader still uses.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Sequence

from ..errors import UsageError
from ..records import Generation
from ..repository import Reader, Repository
from .snapshots import NAMESPACE, SnapshotFilter, SnapshotInfo, list_snapshots, resolve

UNLIMITED = -1  # restic's 'unlimited': every bucket of that kind
GROUP_KEYS = ("host", "paths", "tags")
DEFAULT_GROUP_BY = ("host", "paths")
_WITHIN = re.compile(r"(\d+)([ymdh])")


@dataclass(frozen=True)
class Within:
    """restic's keep-within duration (1y5m7d2h), counted back from the newest snapshot of a group."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> "Within":
        parts = _WITHIN.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise UsageError(f"invalid duration {text!r}: write it like restic's 1y5m7d2h (years, months, days, hours)")
        units = {"y": 0, "m": 0, "d": 0, "h": 0}
        for n, u in parts:
            units[u] += int(n)
        return cls(units["y"], units["m"], units["d"], units["h"], text)

    def cutoff(self, newest: float) -> float:
        """newest minus the duration, as Go's AddDate on the local wall clock (a day past the
        month's end rolls over), as restic counts it."""
        t = datetime.fromtimestamp(newest)
        months = t.year * 12 + (t.month - 1) - self.years * 12 - self.months
        year, month = divmod(months, 12)
        base = datetime(year, month + 1, 1, t.hour, t.minute, t.second, t.microsecond)
        shifted = base + timedelta(days=t.day - 1) - timedelta(days=self.days, hours=self.hours)
        return shifted.timestamp()


@dataclass
class Policy:
    """Counts are >= 0 or UNLIMITED; `within*` are Within durations or None; keep_tags are taglists ("a,b" needs both)."""

    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    hourly: int = 0
    yearly: int = 0
    within: Within | None = None
    within_hourly: Within | None = None
    within_daily: Within | None = None
    within_weekly: Within | None = None
    within_monthly: Within | None = None
    within_yearly: Within | None = None
    keep_tags: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        withins = (self.within, self.within_hourly, self.within_daily, self.within_weekly, self.within_monthly,
                   self.within_yearly)
        return not (any(counts) or any(w is not None for w in withins) or self.keep_tags)


@dataclass
class ForgetResult:
    """What a forget kept and removed; `generation` is the commit (None for a dry run);
    `reasons` maps each kept snapshot's ID to the rules that keep it (restic's Reasons)."""

    keep: list[SnapshotInfo]
    remove: list[SnapshotInfo]
    dry_run: bool = False
    generation: Generation | None = field(default=None)
    reasons: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "removed": [s.id for s in self.remove], "kept": [s.id for s in self.keep],
                "reasons": {s.id: self.reasons.get(s.id, []) for s in self.keep},
                "generation": self.generation.seq if self.generation else None}


def _week(t: float) -> str:
    year, week, _ = datetime.fromtimestamp(t).isocalendar()
    return f"{year}-W{week:02d}"


def _fmt(pattern: str) -> Callable[[float], str]:
    return lambda t: time.strftime(pattern, time.localtime(t))


# (name, bucket of a time): restic's hourly/daily/weekly/monthly/yearly, in local time (the
# TZ environment variable sets it, as for restic): a "day" is the user's day, not UTC's.
BUCKETS: list[tuple[str, Callable[[float], str]]] = [
    ("hourly", _fmt("%Y-%m-%d %H")),
    ("daily", _fmt("%Y-%m-%d")),
    ("weekly", _week),
    ("monthly", _fmt("%Y-%m")),
    ("yearly", _fmt("%Y")),
]


def parse_group_by(text: str) -> tuple[str, ...]:
    """'host,paths,tags' (any subset; '' = one group) as restic's --group-by."""
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in keys if k not in GROUP_KEYS]
    if bad:
        raise UsageError(f"invalid --group-by {text!r}: use a comma list of host, paths, tags")
    return keys


def group(snapshots: list[SnapshotInfo], group_by: Sequence[str] = DEFAULT_GROUP_BY) -> list[list[SnapshotInfo]]:
    """Snapshots with equal group_by fields form one group; each keeps the given order."""
    groups: dict[tuple[object, ...], list[SnapshotInfo]] = {}
    for s in snapshots:
        key = tuple(s.host if k == "host" else tuple(sorted(s.paths if k == "paths" else s.tags)) for k in group_by)
        groups.setdefault(key, []).append(s)
    return list(groups.values())


def _has_taglist(s: SnapshotInfo, taglist: str) -> bool:
    want = {t for t in taglist.split(",") if t}
    return bool(want) and want <= set(s.tags)


def _reasons_in_group(snaps: list[SnapshotInfo], policy: Policy) -> dict[str, list[str]]:
    """restic's ApplyPolicy on one group, newest first: each rule that keeps a snapshot."""
    snaps = sorted(snaps, key=lambda s: (s.time, s.id), reverse=True)
    reasons: dict[str, list[str]] = {}
    newest = snaps[0].time if snaps else 0.0
    left = {name: getattr(policy, name) for name, _ in BUCKETS}
    last_val: dict[str, str] = {}
    last_within: dict[str, str] = {}
    for nr, s in enumerate(snaps):
        why: list[str] = []
        if policy.last == UNLIMITED or nr < policy.last:
            why.append("last")
        why += [f"tag {t}" for t in policy.keep_tags if _has_taglist(s, t)]
        if policy.within is not None and s.time > policy.within.cutoff(newest):
            why.append(f"within {policy.within.text}")
        oldest = nr == len(snaps) - 1
        for name, bucket in BUCKETS:
            val = bucket(s.time)
            if left[name]:
                # restic 0.17: a count not used up by the oldest snapshot keeps it too
                if val != last_val.get(name):
                    why.append(f"{name} {val}")
                elif oldest:
                    why.append(f"oldest {name} {val}")
                if val != last_val.get(name) or oldest:
                    last_val[name] = val
                    left[name] -= left[name] > 0
            w: Within | None = getattr(policy, f"within_{name}")
            if w is not None and s.time > w.cutoff(newest) and (val != last_within.get(name) or oldest):
                why.append(f"{'' if val != last_within.get(name) else 'oldest '}{name} within {w.text}")
                last_within[name] = val
        if why:
            reasons[s.id] = why
    return reasons


def plan(snapshots: list[SnapshotInfo], policy: Policy, group_by: Sequence[str] = DEFAULT_GROUP_BY
         ) -> tuple[list[SnapshotInfo], list[SnapshotInfo], dict[str, list[str]]]:
    """(keep, remove, reasons), each list in the given order; the policy applies per group."""
    reasons: dict[str, list[str]] = {}
    for g in group(snapshots, group_by):
        reasons.update(_reasons_in_group(g, policy))
    return [s for s in snapshots if s.id in reasons], [s for s in snapshots if s.id not in reasons], reasons


def apply_policy(snapshots: list[SnapshotInfo], policy: Policy,
                 group_by: Sequence[str] = DEFAULT_GROUP_BY) -> tuple[list[SnapshotInfo], list[SnapshotInfo]]:
    """(keep, remove): `plan` without the reasons."""
    keep, remove, _ = plan(snapshots, policy, group_by)
    return keep, remove


def check_request(specs: Sequence[str], policy: Policy) -> None:
    """Snapshot IDs or a policy, exactly one of them (a UsageError before anything is opened)."""
    if specs and not policy.empty():
        raise UsageError("give snapshot IDs or a --keep-* policy, not both")
    if not specs and policy.empty():
        raise UsageError("nothing to forget: give snapshot IDs or a --keep-* policy")


def _as_filter(tags: Sequence[str] | SnapshotFilter | None) -> SnapshotFilter | None:
    if isinstance(tags, SnapshotFilter):
        return None if tags.empty() else tags
    # the old form: any of these tags
    return SnapshotFilter(tags=list(tags)) if tags else None


def select(reader: Reader, specs: Sequence[str], policy: Policy, tags: Sequence[str] | SnapshotFilter = (),
           group_by: Sequence[str] = DEFAULT_GROUP_BY
           ) -> tuple[list[SnapshotInfo], list[SnapshotInfo], dict[str, list[str]]]:
    """(keep, remove, reasons) in `reader`'s generation: the snapshots that IDs, prefixes or
    'latest' name (keep is then empty), or what `policy` removes among the snapshots the filter
    (--host/--path/--tag; a plain tag list means any of them) selects."""
    if specs:
        chosen = {s.id: s for s in (resolve(reader, spec) for spec in specs)}
        return [], list(chosen.values()), {}
    flt = _as_filter(tags)
    every = [s for s in list_snapshots(reader) if flt is None or flt.matches(s)]
    return plan(every, policy, group_by)


def forget_snapshots(repo: Repository, specs: Sequence[str] = (), policy: Policy | None = None,
                     tags: Sequence[str] | SnapshotFilter = (), dry_run: bool = False,
                     group_by: Sequence[str] = DEFAULT_GROUP_BY) -> ForgetResult:
    """Select as `select` does, in the generation the commit builds on, and delete the removed
    entries in one commit. A dry run only reads, under a pinned reader."""
    policy = policy or Policy()
    check_request(specs, policy)
    if dry_run:
        with repo.reader("forget --dry-run") as reader:
            keep, remove, reasons = select(reader, specs, policy, tags, group_by)
        return ForgetResult(keep, remove, dry_run=True, reasons=reasons)
    with repo.transaction("forget") as txn:
        keep, remove, reasons = select(txn.base, specs, policy, tags, group_by)
        for s in remove:
            txn.delete(NAMESPACE, s.id)
    return ForgetResult(keep, remove, generation=txn.result, reasons=reasons)
