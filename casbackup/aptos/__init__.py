"""Aptos backup tool compatibility: the command-adapter storage protocol and legacy import.

The Aptos tool's own storage lets readers see half-written metadata files and lets compaction
delete files under a running restore (shared/seeds/). Here every adapter operation maps onto
casbackup's atomic commits, pinned generations and verified blobs instead. spec/aptos.md is
the normative description of the namespaces, values and handles.
"""
from __future__ import annotations

from .errors import AptosInconsistent, ImportIncomplete
from .names import (
    NS_BACKUPS,
    NS_FILES,
    NS_METADATA,
    NS_METADATA_BACKUP,
    check_lines,
    check_name,
    parse_handle,
)
from .storage import AptosStorage

__all__ = ["AptosStorage", "AptosInconsistent", "ImportIncomplete", "NS_BACKUPS", "NS_FILES", "NS_METADATA",
           "NS_METADATA_BACKUP", "check_lines", "check_name", "parse_handle"]
