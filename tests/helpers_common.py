"""Helpers every test folder can import (a unique module name: each folder has a conftest)."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class CliResult:
    code: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")


TEST_PASSWORD = "casbackup-test-password"


def without_plaintext_warning(stderr: str) -> str:
    """Standard error less the warning every command prints on an unencrypted repository."""
    return "".join(line for line in stderr.splitlines(keepends=True) if "is NOT encrypted" not in line)


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("CASBACKUP_REPO", None)
    env.setdefault("CASBACKUP_PROGRESS_FPS", "0")  # no --json status lines: tests parse the summary alone
    # Repositories the CLI makes are encrypted by default: every CLI test runs on one unless it says otherwise.
    env.setdefault("CASBACKUP_PASSWORD", TEST_PASSWORD)
    env.update(extra or {})
    return env


def run_cli(*args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: str | os.PathLike[str] | None = None, timeout: float = 120) -> CliResult:
    """Run `casbackup ARGS` as a real subprocess of this checkout's code."""
    proc = subprocess.run([sys.executable, "-m", "casbackup", *args], input=input, capture_output=True,
                          env=cli_env(env), cwd=cwd, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


def store_orphan(repo: Any, payload: bytes, blob_type: Any = None) -> str:
    """A packed blob that no generation locates, alone in a pack (format v2): an orphan as gc
    names it, the pack member "pack:<id>"."""
    from casbackup.codec import BlobType
    from casbackup.packs import PACKED_TYPES, PackBuilder
    from casbackup.store import pack_member
    blob_type = blob_type or BlobType.CHUNK
    builder = PackBuilder(PACKED_TYPES[blob_type])
    builder.add(repo.store.encode(blob_type, payload))
    repo.store.put_pack(builder)
    return str(pack_member(builder.pack_id))


def head_location(repo: Any, blob_id: str) -> Any:
    """Where the head generation locates a packed blob (its `_blobs` entry), or None."""
    root, _ = repo.read_root()
    return repo.locate(root.generation, blob_id)


def rewrite_stored_blob(repo: Any, blob_id: str, change: Any) -> None:
    """Replace a stored blob's envelope bytes in place, bypassing create-only (a test's damage):
    a loose blob's file, or its range inside the pack the head locates it in (same length)."""
    from casbackup.layout import blob_key, pack_key
    loc = head_location(repo, blob_id)
    if loc is None:
        key = blob_key(blob_id)
        overwrite(repo.backend, key, change(repo.backend.get(key)))
        return
    key = pack_key(loc.pack)
    data = repo.backend.get(key)
    new = change(data[loc.offset:loc.offset + loc.length])
    assert len(new) == loc.length, "a blob inside a pack is damaged in place (same length)"
    overwrite(repo.backend, key, data[:loc.offset] + new + data[loc.offset + loc.length:])


def overwrite(backend: Any, key: str, data: bytes) -> None:
    """Replace a stored object behind the backend's back (local disk or memory)."""
    if hasattr(backend, "raw_put"):
        backend.raw_put(key, data)
        return
    path = Path(backend.root) / key
    path.chmod(0o644)
    path.write_bytes(data)


def blob_stored(repo: Any, blob_id: str) -> bool:
    """Is a blob still stored: a loose blob's object, or a packed blob located by the head in a
    pack that exists."""
    loc = head_location(repo, blob_id)
    if loc is None:
        return bool(repo.store.exists(blob_id))
    return repo.store.stat_pack(loc.pack) is not None


def stored_anywhere(repo_path: Path, blob_id: str) -> bool:
    """Is a blob stored in a local-disk repository at all: as a loose blob, or listed in the TOC of
    any of its packs (format 2), whatever the index says."""
    return blob_id in stored_places(repo_path)


def local_store(repo_path: Path) -> Any:
    """The blob store of a local-disk repository, with its keys if it is encrypted (the CLI's
    repositories are: tests run with CASBACKUP_PASSWORD set)."""
    from casbackup.backends import LocalBackend
    from casbackup.repository import Repository
    return Repository.open(LocalBackend(repo_path)).store


def stored_places(repo_path: Path) -> dict[str, tuple[Path, int, int]]:
    """Every blob of a local-disk repository: its file, and where its envelope is in it (a loose
    blob: the whole file; a packed one: its range in the pack, from the pack's TOC)."""
    from casbackup.packs import split_pack
    suite = local_store(repo_path).suite  # an encrypted repository's TOCs are sealed
    out: dict[str, tuple[Path, int, int]] = {}
    for p in (repo_path / "blobs").rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            out[p.name] = (p, 0, p.stat().st_size)
    for p in (repo_path / "packs").rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            for item, _ in split_pack(p.name, p.read_bytes(), suite)[1]:
                out[item.id] = (p, item.location.offset, item.location.length)
    return out


def flip_stored(repo_path: Path, blob_id: str, at: int = -3) -> None:
    """Flip one byte of a stored blob's envelope (`at` from its start, or from its end if < 0)."""
    path, offset, length = stored_places(repo_path)[blob_id]
    data = bytearray(path.read_bytes())
    data[offset + (at % length)] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))


def lose_stored(repo_path: Path, blob_id: str) -> set[str]:
    """Delete the object holding a blob (its file, or its whole pack); returns every blob lost."""
    places = stored_places(repo_path)
    path = places[blob_id][0]
    lost = {b for b, (p, _, _) in places.items() if p == path}
    path.unlink()
    return lost
