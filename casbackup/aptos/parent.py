"""Did the process feeding our stdin die? An end of input then means a truncated stream.

The adapter protocol has no end-of-data marker: a writer that crashes closes our stdin just as
one that finished does. The tool runs us as `bash -c` (which execs us, or forks us), so its
death shows as our parent or grandparent exiting. The kernel marks a task PF_EXITING before it
closes its files, so this check is not racy on Linux; elsewhere only reparenting is seen.

A command run by the adapter helper (casbackup.aptos.helper) is not the tool's child: it acts for
the thin client the tool started, so "our" process is that client, not this one.
"""
from __future__ import annotations

import os

PF_EXITING = 0x4
_acting_for: int | None = None


def act_for(pid: int) -> None:
    """This process runs a call on behalf of process `pid` (the thin client): watch its ancestry."""
    global _acting_for
    _acting_for = pid


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, flags) of a process from /proc, or None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[1]), int(fields[6])
    except (IndexError, ValueError):
        return None


def _our_parent() -> int | None:
    if _acting_for is None:
        return os.getppid()
    st = _stat(_acting_for)
    return None if st is None or st[0] in ("Z", "X") or st[2] & PF_EXITING else st[1]


def ancestry() -> tuple[int, int | None]:
    """Our parent and grandparent pids, recorded when the command starts."""
    ppid = _our_parent() or 0
    st = _stat(ppid)
    return ppid, (st[1] if st else None)


def writer_gone(start: tuple[int, int | None]) -> str | None:
    """Why the writer looks dead (a reason to refuse publishing), or None if it looks alive."""
    ppid, gppid = start
    now = _our_parent()
    if now is None:
        return f"the adapter client {_acting_for} this call runs for exited"
    if now != ppid:
        return f"our parent process {ppid} exited"
    for pid, expect_parent in ((ppid, gppid), (gppid, None)):
        if pid is None or pid <= 1:
            continue
        st = _stat(pid)
        if st is None:
            continue
        state, parent, flags = st
        if state in ("Z", "X") or flags & PF_EXITING:
            return f"process {pid} that feeds our input is exiting"
        if expect_parent is not None and parent != expect_parent:
            return f"process {pid} lost its parent {expect_parent}"
    return None
