"""Where a backup's input comes from besides its PATH arguments: restic's `--files-from`,
`--files-from-verbatim` and `--files-from-raw` lists, and `--stdin-from-command`.

The lists follow restic 0.17 (cmd_backup.go): `--files-from` lines are trimmed, empty lines and
lines starting with `#` are skipped and the rest are Go `filepath.Glob` patterns (a pattern that
matches nothing is a warning); `--files-from-verbatim` takes every non-empty line as a path;
`--files-from-raw` takes NUL-terminated names (a missing final NUL or an empty name is an error).
Lines end at `\\n` (a `\\r` before it is dropped, as Go's line scanner does); names may be any bytes.
"""
from __future__ import annotations

import os
import posixpath
import subprocess
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from ..errors import CasbackupError, UsageError
from .patterns import component_regex

GLOB_META = "*?[\\"  # Go's filepath hasMeta on Unix


class SourceCommandFailed(CasbackupError):
    """The --stdin-from-command command exited non-zero: the backup commits nothing."""


@dataclass
class FileList:
    """Paths collected from list files, and the warnings restic would print about them."""

    paths: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _read_bytes(name: str, stdin: BinaryIO | None, option: str) -> bytes:
    if name == "-":
        if stdin is None:
            raise UsageError(f"{option} -: standard input is already used")
        return stdin.read()
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {option} file {name}: {exc.strerror or exc}") from None


def _lines(data: bytes) -> list[str]:
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as restic's textfile.Read drops
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [os.fsdecode(line[:-1] if line.endswith(b"\r") else line) for line in lines]


def files_from(name: str, out: FileList, stdin: BinaryIO | None = None) -> None:
    """--files-from: patterns, one a line; `#` comments and empty lines skipped."""
    for line in _lines(_read_bytes(name, stdin, "--files-from")):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        matches = glob_paths(line)
        if not matches:
            out.warnings.append(f"pattern {line!r} does not match any files, skipping")
        out.paths.extend(matches)


def files_from_verbatim(name: str, out: FileList, stdin: BinaryIO | None = None) -> None:
    """--files-from-verbatim: every non-empty line is a path, taken literally."""
    out.paths.extend(line for line in _lines(_read_bytes(name, stdin, "--files-from-verbatim")) if line)


def files_from_raw(name: str, out: FileList, stdin: BinaryIO | None = None) -> None:
    """--files-from-raw: NUL-terminated names (find -print0, git ls-files -z)."""
    data = _read_bytes(name, stdin, "--files-from-raw")
    if not data:
        return
    if not data.endswith(b"\x00"):
        raise UsageError(f"--files-from-raw {name}: trailing zero byte missing")
    names = data[:-1].split(b"\x00")
    if any(not n for n in names):
        raise UsageError(f"--files-from-raw {name}: empty filename in listing")
    out.paths.extend(os.fsdecode(n) for n in names)


def keep_existing(paths: list[str], out: FileList) -> list[str]:
    """restic's filterExisting: listed paths that do not exist are skipped with a warning."""
    kept = []
    for p in paths:
        if os.path.lexists(p):
            kept.append(p)
        else:
            out.warnings.append(f"{p} does not exist, skipping")
    return kept


def _has_meta(path: str) -> bool:
    return any(c in path for c in GLOB_META)


def glob_paths(pattern: str) -> list[str]:
    """Go's filepath.Glob: each component a filepath.Match glob (`*` also matches names starting
    with a dot, `[^a]` negates, `\\` escapes); no `**`; sorted per directory; a pattern without
    meta characters is itself if it exists. A malformed pattern is a usage error."""
    for part in pattern.split("/"):
        if _has_meta(part):
            component_regex(part)
    if not _has_meta(pattern):
        return [pattern] if os.path.lexists(pattern) else []
    directory, name = posixpath.split(pattern)
    directory = directory or "."
    if directory == pattern:
        raise UsageError(f"invalid pattern {pattern!r}")
    dirs = glob_paths(directory) if _has_meta(directory) else [directory]
    out: list[str] = []
    for d in dirs:
        out.extend(_glob_in(d, name))
    return out


def _glob_in(directory: str, name: str) -> list[str]:
    """Go's glob(): the entries of `directory` that `name` matches, in byte order."""
    if not os.path.isdir(directory):
        return []
    try:
        names = sorted(os.listdir(os.fsencode(directory)))
    except OSError:
        return []  # as Go's Glob: an unreadable directory matches nothing
    rx = component_regex(name)
    hits = [os.fsdecode(n) for n in names]
    return [n if directory == "." else posixpath.join(directory, n) for n in hits if rx.fullmatch(n)]


class CommandSource:
    """`--stdin-from-command`: the command runs with its standard output piped into the backup;
    its exit status is checked once that output ends, before anything is committed."""

    def __init__(self, argv: list[str]) -> None:
        if not argv:
            raise UsageError("--stdin-from-command needs a command: casbackup backup --stdin-from-command -- CMD ARG...")
        self.argv = argv
        try:
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        except OSError as exc:
            raise UsageError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        assert self.proc.stdout is not None
        self.stream: IO[bytes] = self.proc.stdout

    def finish(self) -> None:
        """Wait for the command (its output has ended); a non-zero exit fails the backup."""
        code = self.proc.wait()
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise SourceCommandFailed(f"the --stdin-from-command command {self.argv[0]!r} {how}; nothing committed")

    def close(self) -> None:
        """End the command if the backup stopped before its output did."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stream.close()
