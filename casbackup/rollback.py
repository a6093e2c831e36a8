"""Rollback detection (spec/FORMAT.md §13.8): the highest root this machine has seen.

An encrypted repository's root is authentic, but a store can still serve an *older* authentic
root, silently undoing backups. Each process that reads a root remembers, per repository, the
highest generation sequence number it has seen, in a small file under the user's cache
directory, and refuses a lower one. This protects a machine that has seen the newer root; a
fresh machine, or one whose cache was wiped, has nothing to compare with.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import RollbackDetected


def state_dir() -> Path:
    """$CASBACKUP_CACHE_DIR, else $XDG_CACHE_HOME/casbackup, else ~/.cache/casbackup."""
    explicit = os.environ.get("CASBACKUP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "casbackup"


class Watermark:
    """The highest (seq, generation) seen for one repository, kept in `state_dir()/repos/<repo_id>.json`."""

    def __init__(self, repo_id: str, where: str) -> None:
        self.repo_id = repo_id
        self.where = where
        self.path = state_dir() / "repos" / f"{repo_id}.json"
        self._seen = self._load()

    def _load(self) -> int:
        try:
            doc = json.loads(self.path.read_text())
            return int(doc["seq"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1  # none yet (or unreadable: it is rewritten with the next root seen)

    def observe(self, seq: int, generation: str) -> None:
        """Refuse a root below the highest seen; remember a higher one."""
        if seq < self._seen:
            self._seen = max(self._seen, self._load())
            raise RollbackDetected(
                f"the repository at {self.where} serves generation {seq}, but this machine has already seen generation "
                f"{self._seen} (recorded in {self.path}): the store rolled it back, or serves an old copy. Nothing was "
                "read or written. If the rollback is intended (a restored storage snapshot), delete that file")
        if seq > self._seen:
            self._seen = seq
            self._store(seq, generation)

    def _store(self, seq: int, generation: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            current = self._load()
            if current >= seq:
                return
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".wm-")
            with os.fdopen(fd, "w") as f:
                json.dump({"seq": seq, "generation": generation, "repository": self.where}, f)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only or full cache directory: detection is best effort, never a reason to fail a backup

    def reset(self) -> None:
        """Forget the watermark (repair root reinstalls an older generation on purpose)."""
        try:
            self.path.unlink()
        except OSError:
            pass
        self._seen = -1
