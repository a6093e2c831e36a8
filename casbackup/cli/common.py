"""Helpers every command group shares: opening the repository, durations, output."""
from __future__ import annotations

import json
import re
import sys
from typing import Any, NoReturn

import click

from ..backends import open_backend
from ..errors import UsageError
from ..repository import Repository

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'0s', '30s', '15m', '24h', '7d', '2w' -> seconds."""
    m = _DURATION.match(text.strip())
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


def die(message: str, code: int) -> NoReturn:
    click.echo(f"casbackup: error: {message}", err=True)
    sys.exit(code)


def emit_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


class Context:
    def __init__(self, repo: str | None, options: tuple[str, ...], unsafe_single_writer: bool, quiet: bool) -> None:
        self.url = repo
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

    def init(self, **settings: Any) -> Repository:
        backend = open_backend(self._url(), self.options, create=True)
        self._repo = Repository.init(backend, unsafe_single_writer=self.unsafe_single_writer, **settings)
        return self._repo

    def open(self, write: bool = False) -> Repository:
        backend = open_backend(self._url(), self.options)
        self._repo = Repository.open(backend, write=write, unsafe_single_writer=self.unsafe_single_writer)
        return self._repo

    def progress(self, json_mode: bool = False) -> Any:
        """A status-line printer for a terminal; silent on a pipe, with --json or -q."""
        if self.quiet or json_mode or not sys.stderr.isatty():
            return lambda _msg: None
        return lambda msg: click.echo(f"casbackup: {msg}", err=True)

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
