"""Shared helpers for the files-layer tests: small-chunk repositories and tree comparison."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from casbackup.backends import LocalBackend, MemoryBackend
from casbackup.files.backup import BackupOptions, run_backup
from casbackup.files.restore import RestoreOptions, run_restore
from casbackup.repository import Repository

SMALL_CHUNKS = {"chunk_min": 16 * 1024, "chunk_avg": 64 * 1024, "chunk_max": 256 * 1024}


def make_repo(path: Path | None = None, **settings: int) -> Repository:
    backend = LocalBackend(path, create=True) if path is not None else MemoryBackend()
    return Repository.init(backend, **(settings or SMALL_CHUNKS))


def backup(repo: Repository, *paths: os.PathLike[str] | str, **kw: object):
    return run_backup(repo, BackupOptions(paths=[str(p) for p in paths], **kw))  # type: ignore[arg-type]


def restore(repo: Repository, target: Path, spec: str = "latest", **kw: object):
    return run_restore(repo, spec, RestoreOptions(target=str(target), **kw))  # type: ignore[arg-type]


def restored(target: Path, src: Path) -> Path:
    """Where SRC (backed up by absolute path) lands under TARGET."""
    return target / str(src.absolute()).lstrip("/")


def snapshot_of(tree: Path) -> dict[str, tuple]:
    """Everything restore promises to preserve, keyed by relative path (bytes-safe)."""
    out: dict[str, tuple] = {}
    base = os.fsencode(tree)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, base)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                with open(p, "rb") as f:
                    import hashlib
                    digest = hashlib.sha256(f.read()).hexdigest()
                out[rel] = ("f", stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size, digest)
    return out
