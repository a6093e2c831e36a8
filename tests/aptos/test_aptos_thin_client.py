"""The thin adapter client and its helper: same results as the full CLI, and never a single point
of failure (a dead, stale, hung or unsafe helper only makes calls slower).

Every call goes through the shipped config exactly as the tool runs it, with CASBACKUP_BIN set
to an installed thin client (`casbackup aptos install-thin-client`).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from helpers_aptos import Adapter, AdapterError, helper_pids, tool_env, wait_for_helper, write_config

from casbackup.backends import LocalBackend
from casbackup.repository import Repository

BACKUP = "transaction_0-.beef"


@dataclass
class Thin:
    client: Path
    helper_dir: Path
    adapter: Adapter
    full: Adapter  # the same config through the full CLI

    @property
    def log(self) -> Path:
        logs = list(self.helper_dir.glob("*.sock.log"))
        return logs[0] if logs else self.helper_dir / "missing.log"

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def socket(self) -> Path | None:
        socks = [p for p in self.helper_dir.glob("aptos-*.sock")]
        return socks[0] if socks else None

    def helper_pids(self) -> list[int]:
        return helper_pids(self.helper_dir)

    def wait_listening(self, count: int = 1, timeout: float = 30) -> int:
        """The pid of the count-th helper once it accepts connections."""
        deadline = time.monotonic() + timeout
        pid = wait_for_helper(self.helper_dir, count, timeout)
        while time.monotonic() < deadline:
            sock = self.socket()
            if sock is not None and _accepts(sock):
                return pid
            time.sleep(0.05)
        raise AssertionError(f"the helper does not accept; log:\n{self.log_text()}")

    def served(self, op: str) -> int:
        return len(re.findall(rf"served -q aptos {op}: exit 0", self.log_text()))

    def stop(self) -> None:
        for pid in self.helper_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _accepts(sock: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    d = os.open(sock.parent, os.O_PATH | os.O_DIRECTORY)  # a long path goes through /proc/self/fd, as the client's
    try:
        s.connect(f"/proc/self/fd/{d}/{sock.name}")
        return True
    except OSError:
        return False
    finally:
        s.close()
        os.close(d)


def install(dest: Path, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "casbackup", "aptos", "install-thin-client", str(dest)], env=env,
                   check=True, capture_output=True)


@pytest.fixture
def thin(tmp_path: Path) -> Iterator[Thin]:
    repo = tmp_path / "repo"
    Repository.init(LocalBackend(repo, create=True)).close()
    config = write_config(tmp_path / "casbackup.yaml", str(repo))
    client = tmp_path / "bin" / "casbackup-aptos"
    client.parent.mkdir()
    helper_dir = tmp_path / "h"
    install(client, tool_env())
    env = tool_env({"CASBACKUP_BIN": str(client), "CASBACKUP_APTOS_HELPER_DIR": str(helper_dir),
                    "CASBACKUP_APTOS_HELPER_DEBUG": "1", "CASBACKUP_APTOS_HELPER_IDLE": "60"})
    t = Thin(client, helper_dir, Adapter(config, env), Adapter(config))
    yield t
    t.stop()


def started(t: Thin) -> int:
    """Make the first call (run by the full CLI, starting a helper), then wait for the helper."""
    t.adapter.create_backup(BACKUP)
    return t.wait_listening()


def test_installed_client_starts_with_isolated_interpreter(thin: Thin) -> None:
    first = thin.client.read_text().splitlines()[0]
    assert first == f"#!{sys.executable} -IS"
    assert os.access(thin.client, os.X_OK)


def test_every_adapter_operation_is_served_by_the_helper_with_the_cli_results(thin: Thin) -> None:
    started(thin)
    a = thin.adapter
    data = os.urandom(300_000) + b"\0" * 100_000
    bh = a.create_backup(BACKUP)
    handle = a.create_for_write(bh, "0-9.chunk", data)
    assert a.open_for_read(handle) == data
    assert thin.full.open_for_read(handle) == data
    meta = a.save_metadata_lines("transaction.0-9.meta", [b'{"Transaction":{"first_version":0}}\n'])
    assert a.list_metadata_files() == thin.full.list_metadata_files() == [meta]
    a.backup_metadata_file("transaction.0-9.meta")
    for op in ("create-backup", "create-for-write", "open-for-read", "save-metadata-line", "list-metadata-files",
               "backup-metadata-file"):
        assert thin.served(op) >= 1, (op, thin.log_text())
    # The same failure, exit code and message as the full CLI.
    errors = []
    for adapter in (a, thin.full):
        with pytest.raises(AdapterError) as e:
            adapter.open_for_read(f"{bh}/missing.chunk")
        errors.append((e.value.code, e.value.stderr))
    assert errors[0] == errors[1]
    assert errors[0][0] != 0 and "casbackup: error:" in errors[0][1]
    assert "exit %d" % errors[0][0] in thin.log_text()


def test_concurrent_reads_through_the_helper(thin: Thin) -> None:
    started(thin)
    bh = thin.adapter.create_backup(BACKUP)
    files = {thin.adapter.create_for_write(bh, f"{i}.chunk", os.urandom(5000 + i)): i for i in range(8)}
    with ThreadPoolExecutor(8) as pool:
        got = dict(zip(files, pool.map(thin.adapter.open_for_read, list(files))))
    for h, data in got.items():
        assert data == thin.full.open_for_read(h)
    assert thin.served("open-for-read") >= 8


def _client_cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _pending_write(t: Thin, name: str) -> tuple[object, str]:
    bh = t.adapter.create_backup(BACKUP)
    w = t.adapter.start_write("create_for_write", {"BACKUP_HANDLE": bh, "FILE_NAME": name})
    w.send(b"x" * 100_000)
    return w, bh


def test_a_killed_client_kills_its_command_and_publishes_nothing(thin: Thin) -> None:
    started(thin)
    w, bh = _pending_write(thin, "killed.chunk")
    # Served by the helper: the tool's process is still the thin client, not a full CLI.
    assert "-m" not in _client_cmdline(w.proc.pid)  # type: ignore[attr-defined]
    w.kill()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while "killed (the client went away)" not in thin.log_text():
        assert time.monotonic() < deadline, thin.log_text()
        time.sleep(0.05)
    with pytest.raises(AdapterError):
        thin.full.open_for_read(f"{bh}/killed.chunk")


def test_sigterm_reaches_the_command_and_the_client_dies_of_it(thin: Thin) -> None:
    started(thin)
    w, bh = _pending_write(thin, "term.chunk")
    w.proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    assert w.proc.wait(20) == -signal.SIGTERM  # type: ignore[attr-defined]
    assert "exit -15" in thin.log_text()
    with pytest.raises(AdapterError):
        thin.full.open_for_read(f"{bh}/term.chunk")


def test_killing_the_helper_loses_no_call(thin: Thin) -> None:
    helper = started(thin)
    w, bh = _pending_write(thin, "survives.chunk")
    os.kill(helper, signal.SIGKILL)  # the running call is its own process: it finishes
    w.send(b"y" * 1000)  # type: ignore[attr-defined]
    w.finish()  # type: ignore[attr-defined]
    assert thin.full.open_for_read(f"{bh}/survives.chunk") == b"x" * 100_000 + b"y" * 1000
    # The socket is stale now: the next call runs through the full CLI and starts a new helper.
    assert thin.adapter.open_for_read(f"{bh}/survives.chunk") == b"x" * 100_000 + b"y" * 1000
    thin.wait_listening(count=2)
    before = thin.served("open-for-read")
    assert thin.adapter.open_for_read(f"{bh}/survives.chunk") == b"x" * 100_000 + b"y" * 1000
    assert thin.served("open-for-read") == before + 1


def test_a_hung_helper_only_delays_calls(thin: Thin) -> None:
    helper = started(thin)
    os.kill(helper, signal.SIGSTOP)  # accepts nothing: connections wait in the backlog
    try:
        t0 = time.monotonic()
        assert thin.adapter.create_backup(BACKUP).startswith(BACKUP)
        assert time.monotonic() - t0 < 60
    finally:
        os.kill(helper, signal.SIGCONT)
    # The call that gave up was never run a second time by the woken helper.
    time.sleep(1.5)
    assert thin.served("create-backup") == 0


def test_idle_helper_exits_and_removes_its_socket(thin: Thin) -> None:
    thin.adapter.base_env["CASBACKUP_APTOS_HELPER_IDLE"] = "1"
    pid = started(thin)
    deadline = time.monotonic() + 30
    while "exiting: idle" not in thin.log_text():
        assert time.monotonic() < deadline, thin.log_text()
        time.sleep(0.1)
    assert thin.socket() is None
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    bh = thin.adapter.create_backup(BACKUP)  # and the next call starts a new one
    assert bh.startswith(BACKUP)
    thin.wait_listening(count=2)


def test_unsafe_helper_dir_is_never_used(thin: Thin) -> None:
    thin.helper_dir.mkdir(mode=0o755)
    os.chmod(thin.helper_dir, 0o755)  # readable by others: someone else could have put a socket here
    for _ in range(3):
        assert thin.adapter.create_backup(BACKUP).startswith(BACKUP)
    time.sleep(0.5)
    assert list(thin.helper_dir.iterdir()) == []


def test_client_for_other_code_falls_back_and_starts_no_helper(thin: Thin) -> None:
    text = thin.client.read_text()
    thin.client.write_text(re.sub(r"\nTAG = '[^']*'\n", "\nTAG = '0.0.0-0000000000000000'\n", text))
    for _ in range(2):
        assert thin.adapter.create_backup(BACKUP).startswith(BACKUP)
    deadline = time.monotonic() + 20
    while "not starting" not in thin.log_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert thin.helper_pids() == [] and thin.socket() is None


def test_other_commands_are_declined_and_run_by_the_full_cli(thin: Thin) -> None:
    started(thin)
    env = dict(thin.adapter.base_env, CASBACKUP_REPO=str(thin.adapter.env_vars["CASBACKUP_REPO"]))
    out = subprocess.run([str(thin.client), "aptos", "status", "--json"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert '"problems"' in out.stdout
    assert "served aptos status" not in thin.log_text()


def test_disabled_helper(thin: Thin) -> None:
    thin.adapter.base_env["CASBACKUP_APTOS_HELPER"] = "0"
    for _ in range(2):
        assert thin.adapter.create_backup(BACKUP).startswith(BACKUP)
    time.sleep(0.5)
    assert not thin.helper_dir.exists()


def _imported(cmd: list[str], env: dict[str, str]) -> set[str]:
    err = subprocess.run(cmd, env=env, capture_output=True, text=True).stderr
    return {line.rsplit("|", 1)[1].strip() for line in err.splitlines() if line.startswith("import time:")
            and "|" in line and not line.rstrip().endswith("package")}


def test_the_client_imports_only_built_in_modules(thin: Thin) -> None:
    """Its cost is Python's bare start-up: nothing of casbackup, no site-packages, no module read from a
    file (only modules built into the interpreter or frozen in it)."""
    env = dict(thin.adapter.base_env, CASBACKUP_APTOS_HELPER="0")
    bare = _imported([sys.executable, "-IS", "-X", "importtime", "-c", "pass"], env)
    # With the helper off the client execs the full CLI (without -X importtime): stderr lists only
    # what the client imported itself.
    client = _imported([sys.executable, "-IS", "-X", "importtime", str(thin.client), "--version"], env)
    assert "_socket" in client
    extra = sorted(client - bare)
    probe = "import _imp, sys; print([m for m in sys.argv[1:] if m not in sys.builtin_module_names " \
            "and not _imp.is_frozen(m)])"
    loaded_from_files = subprocess.run([sys.executable, "-IS", "-c", probe, *extra], capture_output=True,
                                       text=True, check=True).stdout.strip()
    assert loaded_from_files in ("[]", "['_socket']"), (extra, loaded_from_files)  # a C extension in some builds


def test_a_socket_path_longer_than_a_socket_address_still_works(thin: Thin) -> None:
    deep = thin.helper_dir.parent / ("d" * 60) / ("e" * 60)
    deep.parent.mkdir()
    thin.helper_dir = deep
    thin.adapter.base_env["CASBACKUP_APTOS_HELPER_DIR"] = str(deep)
    started(thin)
    assert len(str(thin.socket())) > 108
    bh = thin.adapter.create_backup(BACKUP)
    assert thin.served("create-backup") == 1 and bh.startswith(BACKUP)


@pytest.mark.parametrize("args,message", [
    (["{tmp}/missing/casbackup-aptos"], "is not an existing folder"),
    (["{tmp}/c", "--python", "{tmp}/not-python"], "cannot run"),
    (["{tmp}/c", "--python", "/bin/false"], "could not install the client"),
])
def test_install_errors_are_one_line_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "not-python").write_text("")
    argv = [a.format(tmp=tmp_path) for a in args]
    done = subprocess.run([sys.executable, "-m", "casbackup", "aptos", "install-thin-client", *argv],
                          env=tool_env(), capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("casbackup: error: ") and message in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-python"]
