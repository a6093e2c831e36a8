"""Drive adapter commands exactly as the Aptos tool's CommandAdapter does.

- each call: `bash -c "set -o nounset -o errexit -o pipefail; <command>"`;
- environment: the tool's own environment, then the config's env_vars, then the call's
  BACKUP_NAME / BACKUP_HANDLE / FILE_NAME / FILE_HANDLE;
- writes: stdout is read to EOF (the handle) before anything is written to stdin;
- a non-zero exit is an error.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = PROJECT_ROOT / "tools" / "aptos" / "casbackup.yaml"
STRICT = "set -o nounset -o errexit -o pipefail; "


class AdapterError(RuntimeError):
    def __init__(self, op: str, code: int, stderr: str) -> None:
        self.op, self.code, self.stderr = op, code, stderr
        super().__init__(f"{op} exited {code}: {stderr.strip()}")


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the tool itself runs with: this checkout's casbackup, no stray repo."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CASBACKUP_BIN"] = f"{sys.executable} -m casbackup"
    env.pop("CASBACKUP_REPO", None)
    env.update(extra or {})
    return env


def helper_pids(helper_dir: Path) -> list[int]:
    """The adapter helpers (casbackup.aptos.helper) that started listening under `helper_dir`, oldest
    first, from their logs' "pid N listening on" lines."""
    logs = "".join(p.read_text() for p in sorted(Path(helper_dir).glob("*.sock.log")))
    return [int(m) for m in re.findall(r"pid (\d+) listening on ", logs)]


def wait_for_helper(helper_dir: Path, count: int = 1, timeout: float = 30) -> int:
    """The pid of the count-th helper under `helper_dir`, once it has started listening."""
    deadline = time.monotonic() + timeout
    while len(pids := helper_pids(helper_dir)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"no adapter helper started listening under {helper_dir}")
        time.sleep(0.05)
    return pids[count - 1]


def write_config(dest: Path, repo: str, extra_env_vars: dict[str, str] | None = None) -> Path:
    """The shipped config with only its repository (and optional env_vars) changed, as a user would."""
    cfg = yaml.safe_load(SHIPPED_CONFIG.read_text())
    for item in cfg["env_vars"]:
        if item["key"] == "CASBACKUP_REPO":
            item["value"] = repo
    for k, v in (extra_env_vars or {}).items():
        cfg["env_vars"] = [e for e in cfg["env_vars"] if e["key"] != k] + [{"key": k, "value": v}]
    dest.write_text(yaml.safe_dump(cfg))
    return dest


class PendingWrite:
    """A write whose handle has been read; the test decides when each piece of stdin goes in."""

    def __init__(self, op: str, proc: subprocess.Popen[bytes], handle: str, err: Any) -> None:
        self.op, self.proc, self.handle, self._err = op, proc, handle, err

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def finish(self, timeout: float = 120) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait(timeout)
        _check(self.op, code, self._err)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._err.close()


def _check(op: str, code: int, err: Any) -> None:
    err.seek(0)
    text = err.read().decode("utf-8", "replace")
    err.close()
    if code != 0:
        raise AdapterError(op, code, text)


class Adapter:
    """The tool's six storage operations through a command-adapter config."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        cfg = yaml.safe_load(Path(config).read_text())
        self.commands: dict[str, str] = cfg["commands"]
        self.env_vars = {str(e["key"]): str(e["value"]) for e in cfg.get("env_vars") or []}
        self.base_env = env if env is not None else tool_env()

    def _popen(self, op: str, call_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Any]:
        env = dict(self.base_env)
        env.update(self.env_vars)
        env.update(call_env)
        err = tempfile.TemporaryFile()
        proc = subprocess.Popen(["bash", "-c", STRICT + self.commands[op]], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=env)
        return proc, err

    def run(self, op: str, call_env: dict[str, str], timeout: float = 120) -> bytes:
        proc, err = self._popen(op, call_env)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        out = proc.stdout.read()
        code = proc.wait(timeout)
        _check(op, code, err)
        return out

    def start_write(self, op: str, call_env: dict[str, str]) -> PendingWrite:
        proc, err = self._popen(op, call_env)
        assert proc.stdout is not None
        out = proc.stdout.read()  # to EOF, before writing stdin: the tool's order
        if proc.poll() is not None and proc.returncode != 0:
            _check(op, proc.returncode, err)
        handle = out.decode().strip()
        if not handle:
            proc.kill()
            proc.wait()
            _check(op, proc.returncode or 1, err)
        return PendingWrite(op, proc, handle, err)

    # ---- the BackupStorage trait -------------------------------------------------------

    def create_backup(self, name: str) -> str:
        return self.run("create_backup", {"BACKUP_NAME": name}).decode().strip()

    def create_for_write(self, backup_handle: str, name: str, data: bytes) -> str:
        w = self.start_write("create_for_write", {"BACKUP_HANDLE": backup_handle, "FILE_NAME": name})
        try:
            w.send(data)
        except BrokenPipeError:
            pass
        w.finish()
        return w.handle

    def open_for_read(self, handle: str) -> bytes:
        return self.run("open_for_read", {"FILE_HANDLE": handle})

    def save_metadata_lines(self, name: str, lines: list[bytes]) -> str:
        w = self.start_write("save_metadata_line", {"FILE_NAME": name})
        w.send(b"".join(lines))
        w.finish()
        return w.handle

    def list_metadata_files(self) -> list[str]:
        return [h for h in self.run("list_metadata_files", {}).decode().split("\n") if h]

    def backup_metadata_file(self, handle: str) -> None:
        self.run("backup_metadata_file", {"FILE_NAME": handle.split("/")[-1]})


def load_lines(data: bytes) -> list[dict[str, Any]]:
    """The tool's LoadMetadataLines: read_to_string, then one JSON value per line."""
    return [json.loads(line) for line in data.decode().splitlines()]


def sync_raw(storage: Any) -> dict[str, bytes]:
    """List once, read every listed file; any failure raises (what casbackup users get)."""
    return {h: storage.open_for_read(h) for h in storage.list_metadata_files()}


def sync_and_load_strict(storage: Any) -> dict[str, list[dict[str, Any]]]:
    return {h: load_lines(data) for h, data in sync_raw(storage).items()}


class LibraryStorage:
    """The same operations in-process through casbackup.aptos (fast set-up of big fixtures)."""

    def __init__(self, repo: Any) -> None:
        from casbackup.aptos.storage import AptosStorage

        self.store = AptosStorage(repo)

    def create_backup(self, name: str) -> str:
        return self.store.create_backup(name)

    def create_for_write(self, backup_handle: str, name: str, data: bytes) -> str:
        import io

        handle = self.store.prepare_write(backup_handle, name)
        self.store.write_file(handle, io.BytesIO(data))
        return str(handle)

    def open_for_read(self, handle: str) -> bytes:
        return self.store.read_all(handle)

    def save_metadata_lines(self, name: str, lines: list[bytes]) -> str:
        handle = self.store.prepare_metadata(name)
        self.store.save_metadata(name, b"".join(lines))
        return handle

    def list_metadata_files(self) -> list[str]:
        return self.store.list_metadata(None)[0]

    def backup_metadata_file(self, handle: str) -> None:
        self.store.backup_metadata_file(handle.split("/")[-1])
