"""File snapshots on top of the core: chunking, trees, backup, restore (spec/files.md)."""
from __future__ import annotations

from .backup import BackupOptions, Summary, run_backup
from .restore import RestoreOptions, RestoreSummary, restore_snapshot, run_restore
from .snapshots import SnapshotInfo, list_snapshots, resolve

__all__ = ["BackupOptions", "Summary", "run_backup", "RestoreOptions", "RestoreSummary", "restore_snapshot",
           "run_restore", "SnapshotInfo", "list_snapshots", "resolve"]
