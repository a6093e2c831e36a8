"""The thin Aptos adapter client: `casbackup ...` for one adapter call, in ~10 ms instead of ~150.

`casbackup aptos install-thin-client PATH` writes this file as an executable whose first line is
`#!<python> -IS` (no site-packages, no environment-driven imports) with PYTHON and TAG filled in.
It imports nothing but built-in modules. It hands the call (argv, environment, umask, working
directory and stdin/stdout/stderr as file descriptors) to the long-lived helper of
`casbackup.aptos.helper`, which runs it in a fresh fork of an interpreter that has casbackup
already imported, and then exits the way that command exited.

It never depends on the helper: with no helper listening it starts one in the background and runs
this call itself through the full CLI (`PYTHON -m casbackup ...`); so does any failure before the
helper has accepted the call, an unsafe helper directory, or CASBACKUP_APTOS_HELPER=0. Once the
helper has accepted the call the command has started, and is never run twice.

Protocol (one Unix stream connection per call; version "casbackup-aptos-1"):
  client -> helper: u32 big-endian length, then NUL-separated fields: magic, TAG, umask, argc,
                    argv..., environment "K=V"...
  helper -> client: b"K" accepted, or b"F" declined (the client runs the call itself).
  client -> helper: b"G" go (only after K), with SCM_RIGHTS fds 0, 1, 2 and the cwd; then
                    b"S" + one byte per signal to forward.
  helper -> client: b"X" + i32 big-endian: the exit code, or minus the signal that ended it.
The client closing the connection at any time makes the helper SIGKILL the command.
"""
import os
import sys

import _signal
import _socket

# Filled in by `casbackup aptos install-thin-client` (empty here: the module itself only falls back).
PYTHON = ""
TAG = ""

MAGIC = b"casbackup-aptos-1"
ACCEPT_TIMEOUT = 5.0  # seconds a busy or hung helper has to accept before the call runs here
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")


def helper_dir():
    """The helper's private directory, or None if it is not safe to use: it must be ours, mode 0700."""
    d = os.environ.get("CASBACKUP_APTOS_HELPER_DIR")
    if not d:
        run = os.environ.get("XDG_RUNTIME_DIR", "")
        d = os.path.join(run, "casbackup") if run.startswith("/") else "/tmp/casbackup-%d" % os.getuid()
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(d)
    except OSError:
        return None
    if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return d


def socket_address(path):
    """`path`, or the same file through /proc/self/fd when it is longer than a Unix socket address
    may be (108 bytes); the directory's descriptor is left open for the life of this process."""
    if len(os.fsencode(path)) < 100:
        return path
    d, name = os.path.split(path)
    return "/proc/self/fd/%d/%s" % (os.open(d, os.O_PATH | os.O_DIRECTORY), name)


def start_helper(socket_path):
    """Start the helper in its own session, detached from this call's stdio; never wait for it."""
    devnull = "/dev/null"
    try:
        os.posix_spawn(PYTHON, [PYTHON, "-m", "casbackup.aptos.helper", "--socket", socket_path, "--tag", TAG],
                       os.environ, setsid=True,
                       file_actions=[(os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
                                     (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
                                     (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0)])
    except OSError:
        pass


def request(argv):
    umask = os.umask(0)
    os.umask(umask)
    fields = [MAGIC, TAG.encode(), b"%d" % umask, b"%d" % len(argv)]
    fields += [os.fsencode(a) for a in argv]
    fields += [k + b"=" + v for k, v in os.environb.items()]
    payload = b"\0".join(fields)
    return len(payload).to_bytes(4, "big") + payload


def hand_over(sock, argv):
    """Send the call; True once the helper accepted it and has our descriptors, False to run it here.

    The descriptors go only with b"G", after the helper answered: descriptors queued on a connection
    nobody accepts (a stopped helper) would keep our stdout open, and the tool would wait forever."""
    try:
        cwd_fd = os.open(".", os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        sock.settimeout(ACCEPT_TIMEOUT)
        sock.sendall(request(argv))
        if sock.recv(1) != b"K":
            return False
        sock.settimeout(None)
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2, cwd_fd))
        sock.sendmsg([b"G"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        return True
    except OSError:
        return False
    finally:
        os.close(cwd_fd)


def release_stdio():
    """Stop holding stdin and stdout: the tool waits for stdout's EOF, which the command now owns."""
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)


def forward_signals(sock):
    def forward(signum, frame):
        try:
            sock.sendall(b"S" + bytes([signum]))
        except OSError:
            pass
    for name in FORWARDED:
        sig = getattr(_signal, name)
        if _signal.getsignal(sig) != _signal.SIG_IGN:
            _signal.signal(sig, forward)


def wait_for_exit(sock):
    """The command's exit code (negative: the signal that ended it), or None if the helper vanished."""
    got = b""
    while len(got) < 5:
        try:
            data = sock.recv(5 - len(got))
        except OSError:
            return None
        if not data:
            return None
        got += data
    if got[:1] != b"X":
        return None
    return int.from_bytes(got[1:5], "big", signed=True)


def exit_like(code):
    if code is None:
        os.write(2, b"casbackup: error: the adapter helper ended before the command finished (the command was "
                    b"killed); retry the call\n")
        os._exit(70)
    if code < 0:
        sig = -code
        _signal.signal(sig, _signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(code)


def run_here(argv):
    """Run the call through the full CLI, in this process."""
    python = PYTHON or sys.executable
    try:
        os.execv(python, [python, "-m", "casbackup", *argv])
    except OSError as exc:
        os.write(2, ("casbackup: error: cannot run %s: %s (reinstall the thin client with `casbackup aptos "
                     "install-thin-client`)\n" % (python, exc.strerror)).encode("utf-8", "backslashreplace"))
        os._exit(127)


def main():
    argv = sys.argv[1:]
    if not (PYTHON and TAG) or os.environ.get("CASBACKUP_APTOS_HELPER", "1") == "0":
        run_here(argv)
    d = helper_dir()
    if d is None:
        run_here(argv)
    socket_path = "%s/aptos-%s.sock" % (d, TAG)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(socket_address(socket_path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        start_helper(socket_path)
        run_here(argv)
    except OSError:
        sock.close()
        run_here(argv)
    if not hand_over(sock, argv):
        sock.close()
        run_here(argv)
    release_stdio()
    forward_signals(sock)
    exit_like(wait_for_exit(sock))


if __name__ == "__main__":
    main()
