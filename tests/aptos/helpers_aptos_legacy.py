"""The control: the tool's LocalFs storage and its metadata cache, as they behave today.

Mirrors storage/backup/backup-cli/src/storage/local_fs/mod.rs (create_new then write, list the
folder, rename to metadata_backup/) and metadata/cache.rs (download errors are logged and
skipped). The `pause` hooks make the seed races happen at a chosen instant.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from helpers_aptos import load_lines


class LegacyLocalFs:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def create_backup(self, name: str) -> str:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return name

    def create_for_write(self, backup_handle: str, name: str, data: bytes) -> str:
        path = self.root / backup_handle / name
        with open(path, "xb") as f:  # create_new(true)
            f.write(data)
        return f"{backup_handle}/{name}"

    def open_for_read(self, handle: str) -> bytes:
        return (self.root / handle).read_bytes()

    def save_metadata_lines(self, name: str, lines: list[bytes],
                            pause: Callable[[int], None] | None = None) -> str:
        d = self.root / "metadata"
        d.mkdir(exist_ok=True)
        try:
            fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # visible from here on
        except FileExistsError:
            return f"metadata/{name}"  # "File already exists, Skip"
        try:
            for i, line in enumerate(lines):
                if pause is not None:
                    pause(i)  # the instant another process may look
                os.write(fd, line)
        finally:
            os.close(fd)
        return f"metadata/{name}"

    def list_metadata_files(self) -> list[str]:
        d = self.root / "metadata"
        return [f"metadata/{n}" for n in sorted(os.listdir(d))] if d.exists() else []

    def backup_metadata_file(self, handle: str) -> None:
        name = handle.split("/")[-1]
        (self.root / "metadata_backup").mkdir(exist_ok=True)
        os.rename(self.root / "metadata" / name, self.root / "metadata_backup" / name)


def legacy_sync_and_load(storage: Any, warnings: list[str],
                         between: Callable[[list[str]], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """cache.rs: list, then download each file; a failed download is a warning, not an error."""
    handles = storage.list_metadata_files()
    if between is not None:
        between(handles)
    out = {}
    for h in handles:
        try:
            data = storage.open_for_read(h)
        except OSError as exc:
            warnings.append(f"Ignoring metadata file download error -- can be compactor removing files: {h}: {exc}")
            continue
        out[h] = load_lines(data)
    return out
