"""Where a repository password comes from, with restic's names and order (README "Encryption").

--password-file F / CASBACKUP_PASSWORD_FILE, or --password-command CMD / CASBACKUP_PASSWORD_COMMAND
(not both), else CASBACKUP_PASSWORD, else a prompt when standard input is a terminal.
"""
from __future__ import annotations

import getpass
import os
import shlex
import subprocess
import sys
from pathlib import Path

from ..errors import PasswordMissing, UsageError

PASSWORD_HELP = ("give it with CASBACKUP_PASSWORD, --password-file F (CASBACKUP_PASSWORD_FILE) or --password-command "
                 "CMD (CASBACKUP_PASSWORD_COMMAND), or type it on a terminal")


def _trimmed(raw: bytes, source: str) -> bytes:
    password = raw.strip()
    if not password:
        raise UsageError(f"the password from {source} is empty; an empty password is not allowed")
    return password


def read_password_file(path: str, what: str = "--password-file") -> bytes:
    try:
        return _trimmed(Path(path).read_bytes(), f"{what} {path}")
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def run_password_command(command: str, what: str = "--password-command") -> bytes:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"{what} {command!r} cannot be parsed: {exc}") from None
    if not argv:
        raise UsageError(f"{what} is empty")
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{what} {argv[0]!r} could not run: {exc}") from None
    if proc.returncode != 0:
        raise UsageError(f"{what} {argv[0]!r} exited with status {proc.returncode}; no password read")
    return _trimmed(proc.stdout, f"{what} {argv[0]!r}")


def prompt(label: str, confirm: bool = False) -> bytes | None:
    """Ask on the terminal (the prompt goes to standard error); None without a terminal."""
    if not sys.stdin.isatty():
        return None
    try:
        first = getpass.getpass(f"{label}: ", stream=sys.stderr)
        if confirm and getpass.getpass(f"{label} again: ", stream=sys.stderr) != first:
            raise UsageError("the two passwords differ; nothing was changed")
    except EOFError:
        return None
    return _trimmed(first.encode("utf-8"), "the terminal")


class PasswordSource:
    """The password of one command, read at most once, and only if the repository needs one."""

    def __init__(self, password_file: str | None, password_command: str | None, env: str = "CASBACKUP_PASSWORD",
                 fallback: "PasswordSource | None" = None) -> None:
        if password_file and password_command:
            raise UsageError("--password-file and --password-command (or their CASBACKUP_ variables) are mutually "
                             "exclusive: give one")
        self.password_file = password_file
        self.password_command = password_command
        self.env = env
        self.fallback = fallback  # the source repository of copy: else the destination's password
        self._cached: bytes | None = None

    def given(self, label: str = "enter password for repository", confirm: bool = False) -> bytes | None:
        if self._cached is None:
            self._cached = self._read(label, confirm)
        return self._cached

    def _read(self, label: str, confirm: bool) -> bytes | None:
        flag = "--from-password" if self.fallback is not None else "--password"
        if self.password_file:
            return read_password_file(self.password_file, f"{flag}-file")
        if self.password_command:
            return run_password_command(self.password_command, f"{flag}-command")
        env = os.environ.get(self.env)
        if env:
            return env.encode("utf-8")
        if self.fallback is not None:
            return self.fallback.given(label, confirm)
        return prompt(label, confirm)

    def required(self, label: str, confirm: bool = False) -> bytes:
        password = self.given(label, confirm)
        if password is None:
            raise PasswordMissing(f"{label.removeprefix('enter ')} is needed: {PASSWORD_HELP}")
        return password


def new_password(new_password_file: str | None) -> bytes:
    """The new password of `key add` / `key passwd`: --new-password-file, else two prompts."""
    if new_password_file:
        return read_password_file(new_password_file, "--new-password-file")
    password = prompt("enter new password", confirm=True)
    if password is None:
        raise PasswordMissing("a new password is needed: give it with --new-password-file F, or type it on a terminal")
    return password
