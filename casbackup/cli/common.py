"""Helpers every command group shares: opening the repository, durations, output."""
from __future__ import annotations

import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .. import init as init_repository
from .. import open as open_repository
from ..errors import PasswordMissing, UsageError
from ..repository import Repository
from .passwords import PASSWORD_HELP, PasswordSource

if TYPE_CHECKING:  # imported on use: the Aptos adapter (a process per file) must not load the files layer
    from ..files.progress import Display, Progress

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'0s', '30s', '15m', '24h', '7d', '2w' -> seconds."""
    m = _DURATION.fullmatch(text)  # the whole text: "24h\n" or "24h junk" is not a duration
    if not m:
        raise UsageError(f"invalid duration {text!r}: write it like 30s, 15m, 24h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


class DurationType(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()


def check_text(value: str, what: str) -> str:
    """Names, keys, tags and URLs are text: bytes that are not UTF-8 reach Python as lone
    surrogates (PEP 383), which nothing downstream can encode. File paths are not checked here."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise UsageError(f"{what} {shown!r} is not valid UTF-8 text") from None
    return value


class TextType(click.ParamType):
    """A click STRING that refuses undecodable (non-UTF-8) bytes with a usage error (exit 2)."""

    name = "TEXT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_text(str(value), "argument" if param is None else f"{param.human_readable_name}")
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


TEXT = TextType()


def utc_time(t: float) -> str:
    """A Unix time as the RFC 3339 UTC text every command prints."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def die(message: str, code: int) -> NoReturn:
    message = message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # no lone surrogates
    click.echo(f"casbackup: error: {message}", err=True)
    sys.exit(code)


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


def emit_summary(doc: dict[str, Any]) -> None:
    """The last line of a long command's --json output, after its status lines (restic's JSON
    lines): the command's result keys plus "message_type": "summary", on one line."""
    click.echo(json.dumps({"message_type": "summary", **doc}, sort_keys=True, default=str))


UNENCRYPTED_WARNING = ("warning: the repository at {where} is NOT encrypted (made with --insecure-no-encryption): "
                       "anyone who can read its storage can read every backup, and can change them undetected")


def warn(message: str) -> None:
    click.echo(f"casbackup: {message.removeprefix('casbackup: ')}", err=True)


def kv_options(items: tuple[str, ...], flag: str = "--from-option") -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"invalid {flag} {item!r}: write it as KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def from_password_options(f: Any) -> Any:
    """restic's --from-password-file / --from-password-command, for a second (source) repository."""
    f = click.option("--from-password-command", default=None, metavar="CMD", type=TEXT,
                     envvar="CASBACKUP_FROM_PASSWORD_COMMAND",
                     help="Read the source repository's password from CMD's output [env CASBACKUP_FROM_PASSWORD_COMMAND].")(f)
    return click.option("--from-password-file", default=None, metavar="FILE", type=TEXT,
                        envvar="CASBACKUP_FROM_PASSWORD_FILE",
                        help="Read the source repository's password from FILE; otherwise CASBACKUP_FROM_PASSWORD, "
                             "else the destination's password [env CASBACKUP_FROM_PASSWORD_FILE].")(f)


def open_source(ctx: "Context", url: str, options: dict[str, str], password_file: str | None,
                password_command: str | None) -> Repository:
    """The other repository of copy or init --copy-id-key-from, opened read-only."""
    source = PasswordSource(password_file, password_command, env="CASBACKUP_FROM_PASSWORD", fallback=ctx.password)
    return open_repository(url, False, options, False,
                           password=lambda: source.required("enter password for source repository"), warn=warn)


NO_PIN_WARNING = ("warning: --no-pin: reading without a pin, so a gc running now could remove what this "
                  "reads (that fails loudly, never silently)")


class Context:
    def __init__(self, repo: str | None, options: tuple[str, ...], unsafe_single_writer: bool, quiet: bool,
                 no_pin: bool = False, verbosity: int = 0, password_file: str | None = None,
                 password_command: str | None = None) -> None:
        self.url = repo
        self.password = PasswordSource(password_file, password_command)
        self.verbosity = 0 if quiet else verbosity
        self.no_pin = no_pin
        self._warned_no_pin = False
        self._warned_plaintext = False
        self.options = {}
        for item in options:
            if "=" not in item:
                raise UsageError(f"invalid --option {item!r}: write it as KEY=VALUE")
            k, v = item.split("=", 1)
            self.options[k.strip()] = v
        self.unsafe_single_writer = unsafe_single_writer
        self.quiet = quiet
        self._repo: Repository | None = None

    def _url(self) -> str:
        if not self.url:
            raise UsageError("no repository given: use -r/--repo REPO or set CASBACKUP_REPO")
        return self.url

    def init(self, insecure_no_encryption: bool = False, id_key: bytes | None = None, **settings: Any) -> Repository:
        url = self._url()
        password = None
        if insecure_no_encryption:
            warn(UNENCRYPTED_WARNING.format(where=url))
        else:
            password = self.password.given("enter password for new repository", confirm=True)
            if password is None:
                raise PasswordMissing(f"init needs a password for the new repository's key: {PASSWORD_HELP}; or pass "
                                      "--insecure-no-encryption to store everything unencrypted")
        self._repo = init_repository(url, self.options, self.unsafe_single_writer, password=password, id_key=id_key,
                                     **settings)
        return self._repo

    def open(self, write: bool = False) -> Repository:
        if write and self.no_pin:
            raise UsageError("--no-pin (CASBACKUP_NO_PIN) is for reading only: a command that writes pins the "
                             "generation it builds on; run it without --no-pin")
        url = self._url()
        self._repo = open_repository(url, write, self.options, self.unsafe_single_writer,
                                     password=lambda: self.password.required("enter password for repository"), warn=warn)
        if not self._repo.encrypted and not self._warned_plaintext:
            self._warned_plaintext = True
            warn(UNENCRYPTED_WARNING.format(where=url))
        if self.no_pin:
            self._repo.pin_reads = False
            if not self._warned_no_pin:
                self._warned_no_pin = True
                click.echo(f"casbackup: {NO_PIN_WARNING}", err=True)
        return self._repo

    def display(self, json_mode: bool = False, verbosity: int = 0) -> Display:
        """What a long command shows: a status line when standard error is a terminal, JSON-lines
        status messages with --json, note lines at -v/-vv (`verbosity`: a command's own -v); -q: none."""
        from ..files.progress import Display
        if self.quiet:
            return Display()
        return Display(terminal=not json_mode and sys.stderr.isatty(), json=json_mode,
                       verbosity=max(self.verbosity, verbosity))

    def progress(self, json_mode: bool = False, json_lines: bool = False, label: str = "casbackup") -> Progress:
        """The progress of a command that reports phases (check, gc, copy, repair): callable with a
        phase name; use it as a context manager so the status line is cleared before the output.
        With --json, status messages only where the command ends with a summary line (`json_lines`)."""
        from ..files.progress import Display, Progress
        display = self.display(json_mode) if json_lines or not json_mode else Display()
        return Progress(label, display, unit="blobs")

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
