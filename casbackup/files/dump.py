"""`dump`: a file's content, or a directory as a tar or zip stream (restic's `dump`).

Streams only: the output may be a pipe, so tar uses the stream mode and zip writes data
descriptors. Archive member names are relative to the dumped directory's parent (`dump latest
/home/a/docs` gives `docs/...`, like `tar -C /home/a docs`); dumping `/` gives the top-level
names. Names come from validated TREE entries, never `..` or absolute.
"""
from __future__ import annotations

import io
import os
import stat as statmod
import tarfile
import time
import zipfile
from typing import BinaryIO, Iterator

from ..errors import UsageError
from .names import as_bytes, is_text
from .reader import TreeReader
from .tree import SPECIALS, Node

ARCHIVES = ("tar", "zip")
_TAR_SPECIAL = {"fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE, "blockdev": tarfile.BLKTYPE}
_ZIP_EPOCH = time.mktime((1980, 1, 1, 0, 0, 0, 0, 0, -1))


class _ChunkStream(io.RawIOBase):
    """A file's verified chunks as a readable stream (for tarfile's copy loop)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: "bytearray | memoryview") -> int:  # type: ignore[override]
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = nxt
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _members(reader: TreeReader, node: Node, path: str) -> Iterator[tuple[str, str, Node]]:
    """(snapshot path, member name, node), parents first; the root of a whole-snapshot dump is left out."""
    base = path.rstrip("/")
    prefix = base.rsplit("/", 1)[0] if base else ""
    for p, n in reader.walk(node, path):
        if not base and p == path:
            continue
        yield p, p[len(prefix):].lstrip("/"), n


def write_tar(reader: TreeReader, node: Node, path: str, out: BinaryIO) -> int:
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for p, name, n in _members(reader, node, path):
            ti = tarfile.TarInfo(name)
            ti.mode, ti.uid, ti.gid, ti.mtime = n.mode, n.uid, n.gid, n.mtime_ns // 1_000_000_000
            if n.kind == "dir":
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif n.kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = (n.target or b"").decode("utf-8", "surrogateescape")
                tar.addfile(ti)
            elif n.kind in _TAR_SPECIAL:
                ti.type = _TAR_SPECIAL[n.kind]
                ti.devmajor, ti.devminor = os.major(n.rdev), os.minor(n.rdev)
                tar.addfile(ti)
            elif n.kind == "socket":
                continue  # tar has no socket type (GNU tar skips them too)
            else:
                ti.size = n.size
                tar.addfile(ti, io.BufferedReader(_ChunkStream(reader.content(n, p)), 1 << 20))
            count += 1
    return count


class _ZipInfo(zipfile.ZipInfo):
    """A zip member whose name is stored as the snapshot's bytes. zip names are UTF-8 (flag bit
    11) or unflagged legacy bytes; zipfile would refuse a name that is not UTF-8, so such a name
    is written unflagged, byte for byte (Info-ZIP's unzip on Unix extracts those bytes)."""

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        if is_text(self.filename):
            return super()._encodeFilenameFlags()  # type: ignore[misc, no-any-return]
        return as_bytes(self.filename), self.flag_bits & ~0x800


def write_zip(reader: TreeReader, node: Node, path: str, out: BinaryIO) -> int:
    count = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p, name, n in _members(reader, node, path):
            if n.kind in SPECIALS:
                continue  # zip has no special files
            when = time.localtime(max(n.mtime_ns / 1e9, _ZIP_EPOCH))[:6]
            kind = {"dir": statmod.S_IFDIR, "symlink": statmod.S_IFLNK}.get(n.kind, statmod.S_IFREG)
            zi = _ZipInfo(name + ("/" if n.kind == "dir" else ""), date_time=when)
            zi.external_attr = (kind | n.mode) << 16
            zi.compress_type = zipfile.ZIP_STORED if n.kind != "file" else zipfile.ZIP_DEFLATED
            if n.kind == "dir":
                zi.external_attr |= 0x10  # MS-DOS directory flag
                zf.writestr(zi, b"")
            elif n.kind == "symlink":
                zf.writestr(zi, n.target or b"")
            else:
                with zf.open(zi, "w", force_zip64=n.size >= zipfile.ZIP64_LIMIT) as dst:
                    for data in reader.content(n, p):
                        dst.write(data)
            count += 1
    return count


def dump(reader: TreeReader, node: Node, path: str, out: BinaryIO, archive: str | None) -> int:
    """Write `node` to `out`: a file's bytes (no archive asked), else an archive. Returns members written."""
    if node.kind == "file" and archive is None:
        for data in reader.content(node, path):
            out.write(data)
        return 1
    if node.kind == "symlink" and archive is None:
        raise UsageError(f"{path} is a symlink; give --archive tar|zip to dump it as an entry")
    fmt = archive or "tar"
    if fmt not in ARCHIVES:
        raise UsageError(f"unknown archive format {fmt!r}: give tar or zip")
    return (write_tar if fmt == "tar" else write_zip)(reader, node, path, out)
