"""Rollback detection (spec/FORMAT.md §13.8): the highest root this machine has seen.

An encrypted repository's root is authentic, but a store can still serve an *older* authentic
root, silently undoing backups. Each process that reads a root remembers, per repository, the
highest generation sequence number it has seen, in a small file under the user's cache
directory, and refuses a lower one. This protects a machine that has seen the newer root; a
fresh machine, or one whose cache was wiped, has nothing to compare with.
"""
from __future__ import annotations

import hashlib
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


def _location_mark(where: str) -> Path:
    return state_dir() / "locations" / f"{hashlib.sha256(where.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.json"


def remember_encrypted(where: str, repo_id: str) -> None:
    """This location holds an encrypted repository: an unencrypted one found there later is refused
    (a store that swapped in a forged plaintext repository: a downgrade)."""
    path = _location_mark(where)
    try:
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".loc-")
        with os.fdopen(fd, "w") as f:
            json.dump({"repository": where, "repo_id": repo_id}, f)
        os.replace(tmp, path)
    except OSError:
        pass  # best effort, like the watermark


def refuse_downgrade(where: str) -> None:
    """RollbackDetected if this machine saw an encrypted repository at `where`."""
    path = _location_mark(where)
    if path.exists():
        raise RollbackDetected(
            f"the repository at {where} is unencrypted, but this machine has seen an encrypted repository there "
            f"(recorded in {path}): the store may have replaced it with a forgery. Nothing was read or written. "
            "If you replaced it yourself, delete that file")


def forget_location(where: str) -> None:
    """`init` at a location: whatever was there before is gone on purpose."""
    try:
        _location_mark(where).unlink()
    except OSError:
        pass


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
