"""The command backend (`cmd:CONFIG.yaml`): each storage operation is a shell command.

Parameters reach the commands only through environment variables (never interpolated into
the command text), every command runs under `bash -c 'set -o nounset -o errexit -o pipefail; ...'`
with a timeout, and any non-zero exit is an error, except the documented "missing" and
"exists" exit codes. Shell tools (rclone, aws-cli, ...) cannot do conditional writes, so this
backend declares none: the core then refuses to write unless --unsafe-single-writer is given.
See spec/backends.md, "Command backend".
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from ..errors import BackendError, EtagMismatch, KeyMissing, OutcomeUnknown, UsageError
from .base import Capabilities, ObjectInfo, content_etag, validate_key

PRELUDE = "set -o nounset -o errexit -o pipefail; "
REQUIRED = ("read", "create", "replace", "list", "delete", "stat")
OPTIONAL = ("read_range", "now")
FORMATS = ("lines", "rclone-lsjson")
EXISTS_EXIT_CODE = 17  # `create` exits with this when the key already exists (EEXIST)
DEFAULT_TIMEOUT = 300.0
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class CommandConfig:
    commands: dict[str, str]
    env: dict[str, str | None] = field(default_factory=dict)  # None: declared, taken from the environment
    timeout: float = DEFAULT_TIMEOUT
    missing_exit_codes: tuple[int, ...] = (3, 4)
    format: str = "lines"
    config_dir: str = "."

    @classmethod
    def load(cls, path: str | os.PathLike[str], options: Mapping[str, str] | None = None) -> "CommandConfig":
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text())
        except FileNotFoundError:
            raise UsageError(f"command backend config {str(p)!r} does not exist") from None
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot read command backend config {str(p)!r}: {exc}") from None
        return cls.from_dict(raw, options, str(p.resolve().parent), str(p))

    @classmethod
    def from_dict(cls, raw: Any, options: Mapping[str, str] | None = None, config_dir: str = ".",
                  name: str = "config") -> "CommandConfig":
        if not isinstance(raw, dict):
            raise UsageError(f"{name}: expected a mapping at the top level")
        unknown = set(raw) - {"commands", "env", "timeout", "missing_exit_codes", "format", "description"}
        if unknown:
            raise UsageError(f"{name}: unknown setting(s) {', '.join(sorted(unknown))}")
        commands = raw.get("commands")
        if not isinstance(commands, dict) or not all(isinstance(v, str) for v in commands.values()):
            raise UsageError(f"{name}: 'commands' must map operation names to shell command strings")
        missing = [op for op in REQUIRED if op not in commands]
        extra = set(commands) - set(REQUIRED) - set(OPTIONAL)
        if missing or extra:
            raise UsageError(f"{name}: commands missing {missing or '-'}; unknown {sorted(extra) or '-'} "
                             f"(required: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})")
        env = raw.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and _ENV_NAME.fullmatch(k) for k in env):
            raise UsageError(f"{name}: 'env' must map UPPER_CASE names to values")
        env = {k: None if v is None else str(v) for k, v in env.items()}
        for k, v in (options or {}).items():
            if k not in env:
                raise UsageError(f"option {k!r} is not a variable declared under 'env' in {name} "
                                 f"(declared: {', '.join(sorted(env)) or 'none'})")
            env[k] = v
        fmt = raw.get("format", "lines")
        if fmt not in FORMATS:
            raise UsageError(f"{name}: format must be one of {', '.join(FORMATS)}")
        timeout = float(raw.get("timeout", DEFAULT_TIMEOUT))
        if not 0 < timeout <= 86400:
            raise UsageError(f"{name}: timeout out of range")
        codes = raw.get("missing_exit_codes", [3, 4])
        if not isinstance(codes, list) or not all(isinstance(c, int) and 0 < c < 256 for c in codes) \
                or EXISTS_EXIT_CODE in codes:
            raise UsageError(f"{name}: missing_exit_codes must be a list of exit codes other than 0 and {EXISTS_EXIT_CODE}")
        return cls(dict(commands), env, timeout, tuple(codes), fmt, config_dir)


class CommandBackend:
    """Storage through shell commands; single-writer only, by declaration."""

    def __init__(self, config: CommandConfig, description: str = "cmd") -> None:
        self.config = config
        self.description = description
        self.location = description  # "cmd:<config>"
        self.capabilities = Capabilities(conditional_create=False, conditional_update=False)

    @classmethod
    def from_config(cls, path: str, options: Mapping[str, str] | None = None) -> "CommandBackend":
        if not path:
            raise UsageError("cmd: needs a config file, e.g. cmd:tools/rclone/casbackup-rclone.yaml")
        return cls(CommandConfig.load(path, options), f"cmd:{path}")

    def __repr__(self) -> str:
        return f"CommandBackend({self.description!r})"

    # ---- running commands --------------------------------------------------------------

    def _run(self, op: str, params: Mapping[str, str], stdin: bytes | None = None,
             ok_codes: tuple[int, ...] = (0,)) -> tuple[int, bytes]:
        """Run one operation's command; returns (exit code, stdout) for codes in ok_codes."""
        env = dict(os.environ)
        env.update({k: v for k, v in self.config.env.items() if v is not None})
        env["CASBACKUP_CONFIG_DIR"] = self.config.config_dir
        env.update(params)
        try:
            proc = subprocess.Popen(["bash", "-c", PRELUDE + self.config.commands[op]], env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
        except OSError as exc:
            raise BackendError(f"{self.description}: cannot run bash for {op}: {exc}") from None
        try:
            out, err = proc.communicate(stdin if stdin is not None else b"", timeout=self.config.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            what = f"{op} {params.get('CASBACKUP_KEY') or params.get('CASBACKUP_PREFIX', '')}".strip()
            if op in ("create", "replace"):
                raise OutcomeUnknown(f"{self.description}: {what} timed out after {self.config.timeout:g}s; "
                                     "it may or may not have been applied") from None
            raise BackendError(f"{self.description}: {what} timed out after {self.config.timeout:g}s") from None
        if proc.returncode in ok_codes:
            return proc.returncode, out
        tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
        what = f"{op} {params.get('CASBACKUP_KEY') or params.get('CASBACKUP_PREFIX', '')}".strip()
        raise BackendError(f"{self.description}: {what} failed with exit code {proc.returncode}"
                           + (f": {' | '.join(tail)}" if tail else ""))

    def _keyed(self, op: str, key: str, stdin: bytes | None = None, extra: Mapping[str, str] | None = None,
               ok_codes: tuple[int, ...] = (0,)) -> tuple[int, bytes]:
        validate_key(key)
        params = {"CASBACKUP_KEY": key, "CASBACKUP_TMP": f".tmp/{secrets.token_hex(12)}", **(extra or {})}
        code, out = self._run(op, params, stdin, ok_codes + self.config.missing_exit_codes)
        if code in self.config.missing_exit_codes and code not in ok_codes:
            raise KeyMissing(f"no such key: {key}")
        return code, out

    # ---- the contract ------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self._keyed("read", key)[1]

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise UsageError("negative range")
        if "read_range" not in self.config.commands:
            return self.get(key)[start:start + length]
        if length == 0:
            self.stat(key)
            return b""
        data = self._keyed("read_range", key, extra={"CASBACKUP_OFFSET": str(start), "CASBACKUP_LENGTH": str(length)})[1]
        if len(data) > length:
            raise BackendError(f"{self.description}: read_range returned {len(data)} bytes for {length} requested")
        return data

    def create(self, key: str, data: bytes) -> bool:
        """Create unless present. NOT atomic against other writers: the check and the write are two steps."""
        code, _ = self._keyed("create", key, stdin=bytes(data), ok_codes=(0, EXISTS_EXIT_CODE))
        return code == 0

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, content_etag(data)

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        """Read, compare, write: correct for one writer only (the capabilities say so)."""
        try:
            current: str | None = content_etag(self.get(key))
        except KeyMissing:
            current = None
        if current != expected_etag:
            raise EtagMismatch(f"{key} changed (expected {expected_etag}, found {current})")
        if expected_etag is None:
            if not self.create(key, data):
                raise EtagMismatch(f"{key} was created concurrently")
        else:
            self._keyed("replace", key, stdin=bytes(data))
        return content_etag(data)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        _, out = self._run("list", {"CASBACKUP_PREFIX": prefix, "CASBACKUP_DIR": directory})
        items = []
        for info in self._parse_listing(out, directory):
            if info.key.startswith(prefix) and _valid_key(info.key):
                items.append(info)
        yield from sorted(items, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        self._keyed("delete", key, ok_codes=(0,) + self.config.missing_exit_codes)

    def stat(self, key: str) -> ObjectInfo:
        _, out = self._keyed("stat", key)
        return self._parse_stat(key, out)

    def now(self) -> float:
        if "now" not in self.config.commands:
            return time.time()  # documented: the local clock stands in for the storage's
        _, out = self._run("now", {})
        try:
            return float(out.decode().strip())
        except ValueError:
            raise BackendError(f"{self.description}: 'now' printed {out[:80]!r}, expected epoch seconds") from None

    def close(self) -> None:
        pass

    # ---- output parsing ----------------------------------------------------------------

    def _parse_listing(self, out: bytes, directory: str) -> Iterator[ObjectInfo]:
        if self.config.format == "rclone-lsjson":
            for obj in self._json(out, "list", list):
                if not isinstance(obj, dict) or obj.get("IsDir"):
                    continue
                rel = str(obj.get("Path", ""))
                key = f"{directory}/{rel}" if directory else rel
                yield ObjectInfo(key, _int(obj.get("Size"), self.description), _time(obj.get("ModTime"), self.description))
            return
        for line in out.decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise BackendError(f"{self.description}: list printed {line[:120]!r}; expected SIZE<TAB>MTIME<TAB>KEY")
            yield ObjectInfo(parts[2], _int(parts[0], self.description), _time(parts[1], self.description))

    def _parse_stat(self, key: str, out: bytes) -> ObjectInfo:
        if self.config.format == "rclone-lsjson":
            obj = self._json(out, "stat", dict)
            if obj.get("IsDir"):
                raise KeyMissing(f"no such key: {key} (a directory)")
            return ObjectInfo(key, _int(obj.get("Size"), self.description), _time(obj.get("ModTime"), self.description))
        parts = out.decode("utf-8", "replace").strip().split("\t")
        if len(parts) != 2:
            raise BackendError(f"{self.description}: stat printed {out[:120]!r}; expected SIZE<TAB>MTIME")
        return ObjectInfo(key, _int(parts[0], self.description), _time(parts[1], self.description))

    def _json(self, out: bytes, op: str, kind: type) -> Any:
        try:
            doc = json.loads(out)
        except ValueError:
            raise BackendError(f"{self.description}: {op} printed invalid JSON: {out[:120]!r}") from None
        if not isinstance(doc, kind):
            raise BackendError(f"{self.description}: {op} printed JSON of the wrong shape")
        return doc


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _valid_key(key: str) -> bool:
    try:
        validate_key(key)
        return True
    except UsageError:
        return False  # temp files (.tmp/...) and foreign names are not keys


def _int(value: Any, where: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BackendError(f"{where}: bad size {value!r} in command output") from None
    if n < 0:
        raise BackendError(f"{where}: negative size {value!r} in command output")
    return n


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def _time(value: Any, where: str) -> float:
    """Epoch seconds, or an ISO 8601 / RFC 3339 time (rclone prints nanoseconds: cut to micro)."""
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(_FRACTION.sub(r"\1", text, count=1).replace("Z", "+00:00"))
    except ValueError:
        raise BackendError(f"{where}: bad time {value!r} in command output") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()
