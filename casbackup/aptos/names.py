"""Names, metadata lines and handles: validated before anything touches storage.

The Aptos tool passes names and handles through environment variables and records handles in
manifests; a handle is therefore untrusted input that must never reach a path or a key
unchecked (APTOS.md, "Handles are never validated").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

NS_BACKUPS = "aptos.backups"                # backup handle -> {name, created}
NS_FILES = "aptos.files"                    # "<backup_handle>/<file_name>" -> data file
NS_METADATA = "aptos.metadata"              # metadata file name -> live metadata file
NS_METADATA_BACKUP = "aptos.metadata_backup"  # metadata file name -> tombstone (no refs)

METADATA_DIR = "metadata"
METADATA_BACKUP_DIR = "metadata_backup"
RESERVED = frozenset({METADATA_DIR, METADATA_BACKUP_DIR})

# \Z, not $: `$` also matches before a trailing newline, and callers elsewhere use .match().
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{2,126}\Z")
MAX_METADATA_BYTES = 64 * 1024 * 1024


def check_name(kind: str, text: str | None) -> str:
    """The tool's ShellSafeName rule; a clear UsageError otherwise."""
    if text is None or text == "":
        raise UsageError(f"{kind} is not set")
    if not NAME_RE.fullmatch(text):
        raise UsageError(f"invalid {kind} {text!r}: a name must match ^[a-zA-Z0-9][a-zA-Z0-9._-]{{2,126}}$")
    return text


def check_backup_handle(text: str | None) -> str:
    name = check_name("backup handle", text)
    if name in RESERVED:
        raise UsageError(f"invalid backup handle {name!r}: the name is reserved for metadata")
    return name


def check_lines(data: bytes, name: str = "metadata") -> int:
    """The tool's TextLine rule for a whole metadata file: UTF-8 lines, each ending in \\n, no \\r.

    Returns the number of lines. Empty input is refused: the tool never saves zero lines, so it
    means the writer died before sending anything.
    """
    if not data:
        raise UsageError(f"{name}: no metadata lines were received")
    if len(data) > MAX_METADATA_BYTES:
        raise UsageError(f"{name}: {len(data)} bytes of metadata is over the limit of {MAX_METADATA_BYTES}")
    if not data.endswith(b"\n"):
        raise UsageError(f"{name}: the last line does not end with a newline (truncated input?)")
    if b"\r" in data:
        raise UsageError(f"{name}: a metadata line contains a carriage return")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{name}: metadata is not valid UTF-8 (byte {exc.start})") from None
    return data.count(b"\n")


@dataclass(frozen=True)
class Handle:
    """A parsed file handle: a data file, a live metadata file or a replaced one."""

    kind: str  # "data" | "metadata" | "metadata_backup"
    backup: str  # backup handle, or the directory name for metadata
    name: str

    @property
    def key(self) -> str:
        return f"{self.backup}/{self.name}" if self.kind == "data" else self.name

    def __str__(self) -> str:
        return f"{self.backup}/{self.name}"


def parse_handle(text: str | None) -> Handle:
    """Exactly two safe name components: no absolute path, no '..', nothing else."""
    if text is None or text == "":
        raise UsageError("FILE_HANDLE is not set")
    if text.startswith("/") or "\\" in text or "\x00" in text:
        raise UsageError(f"invalid file handle {text!r}: it must be a relative BACKUP/FILE handle")
    parts = text.split("/")
    if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"invalid file handle {text!r}: it must be exactly BACKUP_HANDLE/FILE_NAME")
    folder, name = parts
    check_name("file handle component", folder)
    check_name("file handle component", name)
    if folder == METADATA_DIR:
        return Handle("metadata", folder, name)
    if folder == METADATA_BACKUP_DIR:
        return Handle("metadata_backup", folder, name)
    return Handle("data", folder, name)


def metadata_handle(name: str) -> str:
    return f"{METADATA_DIR}/{name}"
