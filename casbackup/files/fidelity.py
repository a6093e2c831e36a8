"""What a file is beyond its bytes and stat fields: extended attributes (POSIX ACLs are the
xattrs `system.posix_acl_access` / `system.posix_acl_default`) and hard-link identity.

Backup captures both into a Node (spec/files.md §3.2); restore applies xattrs after owner and
mode and before times, and links later occurrences of one (dev, ino) to the first restored path.
Kept apart from backup.py and restore.py so the rules live in one place. Xattrs are read and
written without following symlinks; a file system without xattr support (ENOTSUP) is not an
error, on either side.
"""
from __future__ import annotations

import errno
import os
import stat as statmod
from dataclasses import dataclass
from typing import Callable

from .tree import MAX_XATTR_BYTES, Node

# No xattrs here, or none of this kind: not an error, the entry simply has none.
UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA)
# Not allowed for this process (trusted.* and security.* need root): counted, never fatal.
REFUSED = (errno.EPERM, errno.EACCES, *UNSUPPORTED, errno.EINVAL, errno.E2BIG)

Report = Callable[[str, str], None]   # (path, message): Summary.error


def capture(node: Node, path: str, st: os.stat_result, report: Report) -> None:
    """Fill in the node's xattrs and, for a non-directory with more than one link, its
    (dev, ino) identity and link count. Problems are reported (counted as errors), not raised."""
    if not statmod.S_ISDIR(st.st_mode) and st.st_nlink > 1:
        node.links, node.dev, node.ino = st.st_nlink, st.st_dev, st.st_ino
    node.xattrs = read_xattrs(path, report) or None


def read_xattrs(path: str, report: Report) -> list[tuple[bytes, bytes]]:
    """All xattrs of `path` (never following a symlink), sorted by name. Past MAX_XATTR_BYTES
    the rest are skipped with one reported error naming them."""
    try:
        names = sorted(os.fsencode(n) for n in os.listxattr(path, follow_symlinks=False))
    except OSError as exc:
        if exc.errno not in UNSUPPORTED:
            report(path, f"extended attributes not read: {exc.strerror or exc}")
        return []
    out: list[tuple[bytes, bytes]] = []
    skipped: list[str] = []
    total = 0
    for name in names:
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in UNSUPPORTED:  # ENODATA: removed since the listing
                report(path, f"extended attribute {os.fsdecode(name)} not read: {exc.strerror or exc}")
            continue
        if total + len(name) + len(value) > MAX_XATTR_BYTES:
            skipped.append(os.fsdecode(name))
            continue
        total += len(name) + len(value)
        out.append((name, value))
    if skipped:
        report(path, f"extended attributes skipped (more than {MAX_XATTR_BYTES} bytes per entry): "
                     + ", ".join(skipped))
    return out


def apply_xattrs(target: int | bytes, xattrs: list[tuple[bytes, bytes]] | None) -> int:
    """Set the xattrs on an open fd or on a path (not following a final symlink); returns how
    many the file system or our privileges refused (e.g. trusted.* when not root)."""
    refused = 0
    for name, value in xattrs or ():
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in REFUSED:
                raise
            refused += 1
    return refused


def path_at(dir_fd: int, name: bytes) -> bytes:
    """A path for `name` inside the open directory `dir_fd`, for calls that take no dir_fd
    (setxattr): /proc/self/fd/N is the directory itself, so no path component can be swapped
    for a symlink under us; the final name is never followed."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


@dataclass(frozen=True, slots=True)
class LinkKey:
    """The identity of a hard-linked inode within a snapshot (and the checks that make a link
    safe to recreate: same kind and size)."""

    dev: int
    ino: int
    kind: str
    size: int


def link_key(node: Node) -> LinkKey | None:
    """Where restore should link rather than recreate: hard-linked non-directories only."""
    if node.links <= 1 or node.is_dir:
        return None
    return LinkKey(node.dev, node.ino, node.kind, node.size)
