"""The long-lived local helper behind the thin Aptos client (`casbackup/aptos/thin_client.py`).

Why: an adapter call is a new process per file, and a fresh interpreter spends ~150 ms importing
casbackup before doing ~5 ms of work. The helper imports it once; each call is then a fork.

Lifecycle:
- Started on demand by a thin client that found no helper (`python -m casbackup.aptos.helper
  --socket PATH --tag TAG`), in its own session, stdio on /dev/null. That call itself runs
  through the full CLI, so nothing ever waits for the helper to start.
- One helper per socket: it holds `PATH.lock` (flock) for its whole life; a second one exits at
  once. It listens only once its imports are done (it binds a temporary name, then renames it).
- The socket's directory is private (mode 0700, ours: the client checks) and every connection's
  peer must be our own uid (SO_PEERCRED).
- TAG names the installed code (version and every source file's size and mtime): a client
  installed for other code falls back to the full CLI, and its helper refuses to start.
- It exits after CASBACKUP_APTOS_HELPER_IDLE seconds (default 120) with no call running, on
  SIGTERM, or when its socket path is removed or replaced; the next call starts a new one.
- Each call runs in two forks: a supervisor, which owns the connection, and the command under it.
  The supervisor forwards the client's signals, reports the exit status, and SIGKILLs the
  command if the client goes away (e.g. it was killed); the command dies with its supervisor
  (PR_SET_PDEATHSIG). Killing the helper itself leaves running calls untouched.
- Only the six adapter operations are served; anything else is declined and the client runs it.
- It logs its start and exit to PATH.log; with CASBACKUP_APTOS_HELPER_DEBUG=1 in the environment
  that started it, also one line per call (argv, exit code, wall time, peak RSS).
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, NoReturn

from .. import __version__

ADAPTER_OPS = frozenset({"create-backup", "create-for-write", "open-for-read", "save-metadata-line",
                         "list-metadata-files", "backup-metadata-file"})
MAGIC = b"casbackup-aptos-1"
DEFAULT_IDLE = 120.0
MAX_REQUEST = 16 * 1024 * 1024
GO_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1
PACKAGE = Path(__file__).resolve().parents[1]
CLIENT_SOURCE = Path(__file__).with_name("thin_client.py")


def code_tag() -> str:
    """Names exactly this installed casbackup: a change to any source file gives another tag."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(PACKAGE.rglob("*.py")):
        st = p.stat()
        h.update(f"\0{p.relative_to(PACKAGE)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return f"{__version__}-{h.hexdigest()[:16]}"


def thin_client_script(tag: str) -> str:
    """The thin client's text for this installation: `#!<this python> -IS` and its constants filled."""
    python = sys.executable
    text = CLIENT_SOURCE.read_text()
    for name, value in (("PYTHON", python), ("TAG", tag)):
        text = text.replace(f'\n{name} = ""\n', f"\n{name} = {value!r}\n", 1)
    return f"#!{python} -IS\n{text}"


def install_thin_client(dest: Path) -> str:
    """Write the thin client at `dest` atomically (mode 0755); returns its tag."""
    tag = code_tag()
    text = thin_client_script(tag)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return tag


def is_adapter_call(argv: list[str]) -> bool:
    """`[global options] aptos [--no-pin] <one of the six operations> ...`."""
    from ..cli import _split_global
    at = _split_global(argv)
    rest = argv[at:]
    if rest[:1] != ["aptos"]:
        return False
    rest = rest[1:]
    while rest[:1] == ["--no-pin"]:
        rest = rest[1:]
    return bool(rest) and rest[0] in ADAPTER_OPS


class Request:
    """One decoded call: what the command runs with."""

    def __init__(self, payload: bytes) -> None:
        fields = payload.split(b"\0")
        if len(fields) < 4 or fields[0] != MAGIC:
            raise ValueError("not a casbackup-aptos-1 request")
        self.tag = fields[1].decode()
        self.umask = int(fields[2])
        argc = int(fields[3])
        if argc < 0 or len(fields) < 4 + argc:
            raise ValueError("truncated request")
        self.argv = [os.fsdecode(a) for a in fields[4:4 + argc]]
        self.env: dict[bytes, bytes] = {}
        for item in fields[4 + argc:]:
            k, sep, v = item.partition(b"=")
            if sep:
                self.env[k] = v


def _receive(conn: socket.socket) -> bytes:
    """The request's payload."""
    buf = bytearray()
    size = None
    while size is None or len(buf) < size + 4:
        more = conn.recv(1 << 16 if size is None else min(1 << 20, size + 4 - len(buf)))
        if not more:
            raise ValueError("truncated request")
        buf += more
        if size is None and len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big")
            if size > MAX_REQUEST:
                raise ValueError("request too large")
    return bytes(buf[4:size + 4])


def _receive_go(conn: socket.socket) -> list[int]:
    """The client's go: b"G" and its fds 0-2 and cwd; [] if it gave up instead."""
    data, anc, flags, _ = conn.recvmsg(1, socket.CMSG_SPACE(4 * struct.calcsize("i")))
    fds: list[int] = []
    for level, kind, blob in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(blob) // 4}i", blob[:len(blob) - len(blob) % 4]))
    if data != b"G" or flags & socket.MSG_CTRUNC or len(fds) != 4:
        for fd in fds:
            os.close(fd)
        return []
    return fds


def _stdio() -> None:
    """Python's sys.stdin/stdout/stderr over the call's fds 0-2 (as a new interpreter makes them)."""
    enc = getattr(sys.__stdout__, "encoding", None) or "utf-8"
    errors = getattr(sys.__stdout__, "errors", None) or "strict"

    def text(fd: int, mode: str, err: str, line: bool) -> IO[str]:
        return open(fd, mode, buffering=1 if line else -1, encoding=enc, errors=err, closefd=False)  # noqa: SIM115

    sys.stdin = text(0, "r", errors, False)
    sys.stdout = text(1, "w", errors, os.isatty(1))
    sys.stderr = text(2, "w", "backslashreplace", True)


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(70)  # the supervisor is already gone


def run_command(req: Request, fds: list[int], parent: int, client: int) -> NoReturn:
    """In the command's fork: become the process the tool would have started, run, exit."""
    code = 70
    try:
        _die_with_parent(parent)
        from .parent import act_for
        act_for(client)  # a writer's death is seen through the client's ancestry, as if we were it
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.fchdir(fds[3])
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.umask(req.umask)
        os.environb.clear()
        os.environb.update(req.env)
        time.tzset()
        _stdio()
        sys.argv = ["casbackup", *req.argv]
        from ..cli import main
        try:
            main(req.argv)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        threading_shutdown = getattr(threading, "_shutdown", None)
        if threading_shutdown is not None:
            threading_shutdown()  # join non-daemon threads, as interpreter exit does
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                code = code or 120  # what a new interpreter exits with when its final flush fails
    except BaseException as exc:  # noqa: BLE001 - the fork must never return into the helper's loop
        code = 70
        with contextlib.suppress(BaseException):
            os.write(2, f"casbackup: error: internal error in the adapter helper: {type(exc).__name__}: {exc} "
                        "(please report it; CASBACKUP_APTOS_HELPER=0 runs calls without it)\n".encode())
    finally:
        os._exit(code)


def supervise(conn: socket.socket, tag: str, log: Callable[[str], None] | None) -> NoReturn:
    """In the supervisor's fork: take the call, run it under us, report how it ended."""
    fds: list[int] = []
    try:
        ucred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        client, uid, _ = struct.unpack("3i", ucred)
        if uid != os.getuid():
            os._exit(0)
        req = Request(_receive(conn))
        if req.tag != tag or not is_adapter_call(req.argv):
            conn.sendall(b"F")
            os._exit(0)
        conn.sendall(b"K")
        conn.settimeout(GO_TIMEOUT)
        fds = _receive_go(conn)
        if not fds:
            os._exit(0)  # the client gave up waiting and runs the call itself
        conn.settimeout(None)
        me = os.getpid()
        child = os.fork()
        if child == 0:
            conn.close()
            run_command(req, fds, me, client)
        for fd in fds:
            os.close(fd)
        fds = []
        started = time.monotonic()
        code, rss_kb = _wait(conn, child)
        if log is not None:  # before the client hears of it: its exit must find the line written
            log(f"served {' '.join(req.argv)}: exit {'killed (the client went away)' if code is None else code}, "
                f"{time.monotonic() - started:.3f} s, peak RSS {rss_kb} KB")
        if code is not None:
            conn.sendall(b"X" + code.to_bytes(4, "big", signed=True))
    except BaseException:  # noqa: BLE001 - a broken call must end only its own supervisor
        pass
    os._exit(0)


def _wait(conn: socket.socket, child: int) -> tuple[int | None, int]:
    """Relay signals to the command until it ends: (its exit code, None if we killed it because the client
    went away; its peak RSS in KB)."""
    pidfd = os.pidfd_open(child)
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    pending = b""  # a b"S" + signal pair can arrive split across two reads
    while True:
        for fd, _ in poller.poll():
            if fd == pidfd:
                _, status, usage = os.wait4(child, 0)
                return os.waitstatus_to_exitcode(status), usage.ru_maxrss
            data = conn.recv(64)
            if not data:  # the client is gone: so is its command
                os.kill(child, signal.SIGKILL)
                _, _, usage = os.wait4(child, 0)
                return None, usage.ru_maxrss
            pending += data
            while len(pending) >= 2:
                kind, sig, pending = pending[:1], pending[1], pending[2:]
                if kind == b"S":
                    with contextlib.suppress(OSError, ValueError):
                        os.kill(child, sig)


def preload() -> None:
    """Import what an adapter call needs, once, before any fork."""
    import ctypes  # the CLI's malloc tuning loads it on every call

    from .. import cli
    cli.cli._load("aptos")  # type: ignore[attr-defined]
    del ctypes


class Helper:
    def __init__(self, socket_path: str, tag: str, idle: float) -> None:
        self.path, self.tag, self.idle = socket_path, tag, idle
        self.children: set[int] = set()
        self.inode: int | None = None
        self.stopping = False
        self.lock_fd = -1
        self.debug = os.environ.get("CASBACKUP_APTOS_HELPER_DEBUG", "") not in ("", "0")

    def log(self, message: str) -> None:
        try:
            with open(self.path + ".log", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()} {message}\n")
        except OSError:
            pass

    def ours(self) -> bool:
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False

    def listen(self) -> socket.socket:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        dir_fd = os.open(os.path.dirname(tmp) or ".", os.O_PATH | os.O_DIRECTORY)
        try:
            # a long path (over 108 bytes) cannot be a socket address: bind it through the directory
            sock.bind(tmp if len(os.fsencode(tmp)) < 100 else f"/proc/self/fd/{dir_fd}/{os.path.basename(tmp)}")
        finally:
            os.umask(old)
            os.close(dir_fd)
        sock.listen(128)
        os.replace(tmp, self.path)
        self.inode = os.stat(self.path).st_ino
        return sock

    def reap(self) -> None:
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)

    def serve(self, sock: socket.socket) -> str:
        last = time.monotonic()
        while not self.stopping:
            ready, _, _ = select.select([sock], [], [], 1.0)
            self.reap()
            if ready:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                last = time.monotonic()
                pid = os.fork()
                if pid == 0:
                    sock.close()
                    os.close(self.lock_fd)  # the next helper must not wait for this call to end
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    supervise(conn, self.tag, self.log if self.debug else None)
                conn.close()
                self.children.add(pid)
                continue
            if self.children:
                last = time.monotonic()
            elif time.monotonic() - last > self.idle:
                return "idle"
            if not self.ours():
                return "socket removed or replaced"
        return "SIGTERM"

    def run(self) -> int:
        self.lock_fd = os.open(self.path + ".lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another helper serves this socket
        preload()
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        try:
            sock = self.listen()
        except OSError as exc:
            self.log(f"cannot listen on {self.path}: {exc}")
            return 1
        self.log(f"listening on {self.path} (casbackup {self.tag}, idle exit after {self.idle:g} s)")
        try:
            why = self.serve(sock)
        finally:
            if self.ours():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            sock.close()
        self.log(f"exiting: {why}")
        return 0

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True


def _idle_from_env() -> float:
    try:
        return max(0.0, float(os.environ.get("CASBACKUP_APTOS_HELPER_IDLE", DEFAULT_IDLE)))
    except ValueError:
        return DEFAULT_IDLE


def main(argv: list[str] | None = None) -> int:
    os.closerange(3, 65536)  # nothing of the spawning call's may stay open in a long-lived process
    ap = argparse.ArgumentParser(prog="python -m casbackup.aptos.helper")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--idle", type=float, default=None)
    args = ap.parse_args(argv)
    helper = Helper(args.socket, args.tag, _idle_from_env() if args.idle is None else args.idle)
    tag = code_tag()
    if args.tag != tag:
        helper.log(f"not starting: the client was installed for casbackup {args.tag}, this is {tag}; "
                   "reinstall it with `casbackup aptos install-thin-client`")
        return 0
    return helper.run()


if __name__ == "__main__":
    sys.exit(main())
