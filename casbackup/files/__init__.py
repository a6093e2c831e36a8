"""File backups on top of the core: chunking, TREEs, snapshots, backup, restore (spec/files.md).

The public API is what `__all__` names. A snapshot is an entry in namespace `NAMESPACE` ("snapshots") of a
generation; functions that only read take a pinned `casbackup.Reader`, functions that commit take
the `casbackup.Repository`:

- write: `run_backup(repo, BackupOptions)`, `forget_snapshots(repo, ...)`, `tag_snapshots(repo, ...)`
- read: `list_snapshots(reader)`, `resolve(reader, "latest" | ID | prefix)`, `restore_snapshot`
  (or `run_restore(repo, ...)`, which pins for you), `diff_trees`, `search_snapshots`, and
  `TreeReader` for paths, listings and file content
- summarise: `repository_stats(repo)`; verify: `check_validators()` gives the TREE, FILE and
  snapshot-entry checks to pass to `casbackup.check_repository`
"""
from __future__ import annotations

from .backup import BackupOptions, Summary, run_backup
from .diff import diff_trees
from .find import Finder, search_snapshots, snapshots_to_search
from .forget import ForgetResult, Policy, apply_policy, forget_snapshots
from .reader import TreeReader
from .restore import Interrupted, RestoreOptions, RestoreSummary, restore_snapshot, run_restore
from .snapshots import NAMESPACE, SnapshotFilter, SnapshotInfo, latest_per_series, list_snapshots, resolve
from .stats import RepositoryStats, repository_stats
from .tagging import tag_snapshots
from .tree import Node
from .verify import check_validators

__all__ = [
    "NAMESPACE", "SnapshotInfo", "SnapshotFilter", "list_snapshots", "resolve", "latest_per_series",
    "BackupOptions", "Summary", "run_backup",
    "RestoreOptions", "RestoreSummary", "Interrupted", "restore_snapshot", "run_restore",
    "Policy", "ForgetResult", "apply_policy", "forget_snapshots",
    "tag_snapshots",
    "diff_trees",
    "Finder", "snapshots_to_search", "search_snapshots",
    "TreeReader", "Node",
    "RepositoryStats", "repository_stats",
    "check_validators",
]
