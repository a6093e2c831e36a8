"""TREE and FILE blob bodies (spec/files.md §3-§4): encode, and decode as hostile input.

Every blob a TREE or FILE names is also in its refs list, so GC and check see it without
knowing this format. Decoding validates names and types, and that each named blob is in refs.
A directory too big for one structured payload is an index TREE of TREE parts (§3.1); a long
chunk list is a FILE blob, split by the core codec (casbackup/chunklist.py). Decoding here
validates one blob on its own; reading the parts of an index lives in files/reader.py.
"""
from __future__ import annotations

import stat as statmod
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import chunklist
from ..chunklist import Piece
from ..codec import ID_LEN, BlobType, Ref
from ..errors import BlobCorrupt, UsageError

TREE_VERSION = 1
# Files with more chunks than this keep their chunk list in a FILE blob, so one huge file
# does not make its directory's TREE blob huge (and a rename does not copy the list).
INLINE_CHUNKS = 32
# Small files keep their bytes inside their directory's TREE blob. On local disk every blob
# costs a file plus two fsyncs (~2.3 ms measured here), and on S3 a PUT: 50,000 small files as
# separate blobs would take minutes. Inlined, an unchanged directory still dedups as one TREE.
INLINE_DATA_MAX = 16 * 1024
INLINE_TREE_BUDGET = 4 * 1024 * 1024  # inline bytes per directory; later small files get chunks
# A TREE payload must stay under codec.MAX_STRUCTURED_PAYLOAD (4 MiB), which readers enforce.
# A directory whose entries (by an upper-bound estimate) pass this is stored as an index TREE
# of parts of at most this much each; one entry is at most ~90 KiB, so a part never overflows.
TREE_PART_BUDGET = 3 * 1024 * 1024
# An index lists at most this many parts (~70 payload bytes each: ~2.3 MiB). At >= ~10,000
# entries per part that is hundreds of millions of entries in one directory.
MAX_TREE_PARTS = 32768
SPECIALS = ("fifo", "socket", "chardev", "blockdev")  # stored as entries (metadata only)
DEVICES = ("chardev", "blockdev")                     # these also carry `rdev`
KINDS = ("file", "dir", "symlink", *SPECIALS)
SPECIAL_IFMT = {"fifo": statmod.S_IFIFO, "socket": statmod.S_IFSOCK, "chardev": statmod.S_IFCHR,
                "blockdev": statmod.S_IFBLK}
# Deeper trees are refused on restore and cut (with an error) on backup: the walks recurse, and
# a hostile snapshot must get a clear error, not a crash. Real paths end at PATH_MAX anyway.
MAX_DEPTH = 512
MAX_NAME = 4096
MAX_TARGET = 65536
INLINE_CHUNK_MAX = 2**40 - 1  # what a TREE entry's own chunk list may claim for one chunk
# Extended attributes per entry (names plus values): what Linux allows on one inode on ext4 is
# about a block, so this keeps every real case while bounding a TREE entry (spec/files.md §3.2).
MAX_XATTR_BYTES = 64 * 1024
MAX_XATTR_NAME = 255
MAX_LINKS = 2**32


def check_name(name: Any, where: str) -> bytes:
    """A tree entry name is one path component: never empty, '.', '..', or containing '/' or NUL."""
    if not isinstance(name, bytes) or not name or len(name) > MAX_NAME:
        raise BlobCorrupt(where, f"bad entry name {name!r}")
    if name in (b".", b"..") or b"/" in name or b"\x00" in name:
        raise BlobCorrupt(where, f"refusing entry name {name!r}: it is not a single plain path component")
    return name


# One item of a chunk list: the core FILE codec's piece (id, size; .ref is the CHUNK ref).
Chunk = Piece


@dataclass(slots=True)
class Node:
    """One directory entry. For files, `chunks` or `file` (a FILE blob) holds the content."""

    name: bytes
    kind: str
    mode: int = 0
    mtime_ns: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    ino: int = 0
    ctime_ns: int = 0
    chunks: list[Chunk] | None = None
    file: str | None = None       # FILE blob id (large files)
    tree: str | None = None       # TREE blob id (directories)
    target: bytes | None = None   # symlink target, stored verbatim and never followed
    data: bytes | None = None     # inline content of a small file
    rdev: int = 0                 # device number of a chardev/blockdev entry
    xattrs: list[tuple[bytes, bytes]] | None = None  # extended attributes (and ACLs), sorted by name
    links: int = 0                # st_nlink of a hard-linked non-directory (> 1), else 0
    dev: int = 0                  # st_dev of that inode: (dev, ino) identifies it within a snapshot
    # the TREE blob (or TREE part) this entry was decoded from, to name it in errors; not stored
    where: str | None = field(default=None, compare=False, repr=False)

    def refs(self) -> list[Ref]:
        if self.kind == "dir" and self.tree:
            return [Ref(BlobType.TREE, self.tree)]
        if self.kind == "file":
            if self.data is not None:
                return []
            if self.file:
                return [Ref(BlobType.FILE, self.file)]
            return [c.ref for c in self.chunks or ()]
        return []

    def body(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.kind, "mode": self.mode, "mtime_ns": self.mtime_ns,
                             "uid": self.uid, "gid": self.gid}
        if self.kind == "file":
            d.update(size=self.size, ino=self.ino, ctime_ns=self.ctime_ns)
            if self.data is not None:
                d["data"] = self.data
            elif self.file:
                d["file"] = bytes.fromhex(self.file)
            else:
                d["chunks"] = [[bytes.fromhex(c.id), c.size] for c in self.chunks or ()]
        elif self.kind == "dir":
            d["tree"] = bytes.fromhex(self.tree or "")
        elif self.kind == "symlink":
            d["target"] = self.target or b""
        elif self.kind in DEVICES:
            d["rdev"] = self.rdev
        if self.xattrs:
            d["xattrs"] = [[k, v] for k, v in self.xattrs]
        if self.links > 1 and self.kind != "dir":
            d.update(links=self.links, dev=self.dev, ino=self.ino)
        return d

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


def tree_body(nodes: list[Node]) -> tuple[list[Ref], dict[str, Any]]:
    """(refs, body) for a TREE blob; entries sorted by name bytes."""
    nodes = sorted(nodes, key=lambda n: n.name)
    refs: list[Ref] = []
    for n in nodes:
        refs.extend(n.refs())
    return refs, {"v": TREE_VERSION, "entries": [n.body() for n in nodes]}


def index_tree_body(parts: list[str]) -> tuple[list[Ref], dict[str, Any]]:
    """(refs, body) of an index TREE: the directory's entries are those of `parts`, in order."""
    return [Ref(BlobType.TREE, p) for p in parts], {"v": TREE_VERSION, "parts": [bytes.fromhex(p) for p in parts]}


def entry_cost(n: Node) -> int:
    """An upper bound on what one entry adds to a TREE payload (body plus refs), without
    encoding it: fixed fields take < 200 bytes, a chunk item 45 plus its 33-byte ref."""
    return (200 + len(n.name) + len(n.data or b"") + len(n.target or b"") + 78 * len(n.chunks or ())
            + (70 if n.file or n.tree else 0) + sum(8 + len(k) + len(v) for k, v in n.xattrs or ()))


def split_tree(nodes: list[Node], budget: int | None = None) -> list[list[Node]]:
    """Sorted entries cut into consecutive groups, each estimated at most `budget` payload bytes
    (default TREE_PART_BUDGET)."""
    budget = TREE_PART_BUDGET if budget is None else budget
    nodes = sorted(nodes, key=lambda n: n.name)
    groups: list[list[Node]] = [[]]
    used = 0
    for n in nodes:
        cost = entry_cost(n)
        if groups[-1] and used + cost > budget:
            groups.append([])
            used = 0
        groups[-1].append(n)
        used += cost
    return groups


PutStructured = Callable[[BlobType, list[Ref], Any], Any]   # returns something with .ref


def write_tree(put_structured: PutStructured, nodes: list[Node]) -> Ref:
    """Store a directory: one TREE if it fits, else its TREE parts and then an index TREE."""
    groups = split_tree(nodes)
    if len(groups) == 1:
        refs, body = tree_body(groups[0])
        return put_structured(BlobType.TREE, refs, body).ref  # type: ignore[no-any-return]
    if len(groups) > MAX_TREE_PARTS:
        raise UsageError(f"a directory of {len(nodes)} entries is too large to store")
    parts = [put_structured(BlobType.TREE, *tree_body(g)).ref.id for g in groups]
    refs, body = index_tree_body(parts)
    return put_structured(BlobType.TREE, refs, body).ref  # type: ignore[no-any-return]


def file_body(chunks: list[Chunk]) -> tuple[list[Ref], dict[str, Any]]:
    """(refs, body) of a leaf FILE blob; writers use chunklist.write_file, which splits long lists."""
    return chunklist.leaf_body(chunks)


# ---- decoding (hostile input) -----------------------------------------------------------

def _int(d: dict[str, Any], key: str, where: str, default: int | None = None, lo: int = -(2**63), hi: int = 2**64) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v < hi:
        raise BlobCorrupt(where, f"entry field {key!r} is not a valid integer")
    return v


def _id(raw: Any, where: str) -> str:
    if not isinstance(raw, bytes) or len(raw) != ID_LEN:
        raise BlobCorrupt(where, "malformed blob id in entry")
    return raw.hex()


@dataclass(slots=True)
class TreeBody:
    """One validated TREE blob: a plain TREE (`entries`) or an index of TREE parts (`parts`)."""

    entries: list[Node] | None
    parts: list[str] | None


def decode_tree_body(tree_id: str, refs: list[Ref], body: Any) -> TreeBody:
    """Validate one TREE blob of either form on its own (its parts are not read here)."""
    if not isinstance(body, dict) or body.get("v") != TREE_VERSION or ("entries" in body) == ("parts" in body):
        raise BlobCorrupt(tree_id, "not a version-1 file tree")
    if "parts" in body:
        return TreeBody(None, _parts(body["parts"], set(refs), tree_id))
    return TreeBody(_entries(tree_id, refs, body.get("entries")), None)


def decode_tree(tree_id: str, refs: list[Ref], body: Any) -> list[Node]:
    """Validate one TREE blob of either form; returns its own entries (names unique and sorted).
    An index TREE has none of its own: use decode_tree_body, or TreeReader.nodes to flatten it."""
    tb = decode_tree_body(tree_id, refs, body)
    return tb.entries if tb.entries is not None else []


def _parts(raw: Any, refs: set[Ref], tree_id: str) -> list[str]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_TREE_PARTS:
        raise BlobCorrupt(tree_id, "TREE parts list is not a non-empty array of at most "
                                   f"{MAX_TREE_PARTS} blob ids")
    parts = [_id(p, tree_id) for p in raw]
    for p in parts:
        if Ref(BlobType.TREE, p) not in refs:
            raise BlobCorrupt(tree_id, f"TREE part {p} is not among the tree's refs")
    if len(set(parts)) != len(parts):
        raise BlobCorrupt(tree_id, "a TREE part is listed twice")
    return parts


def _entries(tree_id: str, refs: list[Ref], raw: Any) -> list[Node]:
    if not isinstance(raw, list):
        raise BlobCorrupt(tree_id, "not a version-1 file tree")
    refset = set(refs)
    nodes: list[Node] = []
    prev: bytes | None = None
    for e in raw:
        if not isinstance(e, dict):
            raise BlobCorrupt(tree_id, "tree entry is not a map")
        name = check_name(e.get("name"), tree_id)
        if prev is not None and name <= prev:
            raise BlobCorrupt(tree_id, f"entry {name!r} is duplicated or out of order")
        prev = name
        kind = e.get("type")
        if kind not in KINDS:
            raise BlobCorrupt(tree_id, f"entry {name!r} has unknown type {kind!r}")
        n = Node(name, kind, mode=_int(e, "mode", tree_id, 0, 0, 0o10000), mtime_ns=_int(e, "mtime_ns", tree_id, 0),
                 uid=_int(e, "uid", tree_id, 0, 0, 2**32), gid=_int(e, "gid", tree_id, 0, 0, 2**32), where=tree_id)
        if kind == "file":
            n.size = _int(e, "size", tree_id, 0, 0, 2**62)
            n.ino = _int(e, "ino", tree_id, 0, 0)
            n.ctime_ns = _int(e, "ctime_ns", tree_id, 0)
            if "data" in e:
                if not isinstance(e["data"], bytes) or len(e["data"]) != n.size or n.size > INLINE_DATA_MAX:
                    raise BlobCorrupt(tree_id, f"inline data of {name!r} is malformed")
                n.data = e["data"]
            elif "file" in e:
                n.file = _id(e["file"], tree_id)
                if Ref(BlobType.FILE, n.file) not in refset:
                    raise BlobCorrupt(tree_id, f"FILE blob {n.file} of {name!r} is not among the tree's refs")
            else:
                n.chunks = chunklist.decode_chunks(e.get("chunks", []), refset, tree_id, INLINE_CHUNK_MAX)
        elif kind == "dir":
            n.tree = _id(e.get("tree"), tree_id)
            if Ref(BlobType.TREE, n.tree) not in refset:
                raise BlobCorrupt(tree_id, f"subtree {n.tree} of {name!r} is not among the tree's refs")
        elif kind in SPECIALS:
            if kind in DEVICES:
                n.rdev = _int(e, "rdev", tree_id, None, 0, 2**64)
        else:
            t = e.get("target")
            if not isinstance(t, bytes) or not t or len(t) > MAX_TARGET or b"\x00" in t:
                raise BlobCorrupt(tree_id, f"symlink {name!r} has a bad target")
            n.target = t
        _fidelity_fields(n, e, tree_id)
        nodes.append(n)
    return nodes


def _fidelity_fields(n: Node, e: dict[str, Any], tree_id: str) -> None:
    """The optional `xattrs` and hard-link fields (spec/files.md §3.2), validated as hostile."""
    if "xattrs" in e:
        n.xattrs = decode_xattrs(e["xattrs"], n.name, tree_id)
    if "links" in e and n.kind != "dir":
        n.links = _int(e, "links", tree_id, 0, 0, MAX_LINKS)
        if n.links > 1:
            n.dev = _int(e, "dev", tree_id, None, 0, 2**64)
            n.ino = _int(e, "ino", tree_id, None, 0, 2**64)


def decode_xattrs(raw: Any, name: bytes, tree_id: str) -> list[tuple[bytes, bytes]]:
    """An entry's `xattrs`: [name, value] pairs of bin, names strictly ascending, bounded."""
    if not isinstance(raw, list):
        raise BlobCorrupt(tree_id, f"xattrs of {name!r} is not an array")
    out: list[tuple[bytes, bytes]] = []
    total = 0
    for item in raw:
        if (not isinstance(item, list) or len(item) != 2 or not all(isinstance(x, bytes) for x in item)
                or not 0 < len(item[0]) <= MAX_XATTR_NAME or b"\x00" in item[0]):
            raise BlobCorrupt(tree_id, f"xattrs of {name!r}: an item is not [name, value] (bin, bin)")
        if out and item[0] <= out[-1][0]:
            raise BlobCorrupt(tree_id, f"xattrs of {name!r}: {item[0]!r} is duplicated or out of order")
        total += len(item[0]) + len(item[1])
        if total > MAX_XATTR_BYTES:
            raise BlobCorrupt(tree_id, f"xattrs of {name!r} exceed {MAX_XATTR_BYTES} bytes")
        out.append((item[0], item[1]))
    return out


def decode_file(file_id: str, refs: list[Ref], body: Any) -> list[Chunk]:
    """Validate one FILE blob of either form (chunklist, spec/FORMAT.md §6.4); returns a leaf's
    chunks, or [] for an index (its parts are read by chunklist.iter_chunks)."""
    fb = chunklist.decode_file(file_id, refs, body)
    return fb.chunks if fb.chunks is not None else []


def mode_kind(st_mode: int) -> str | None:
    if statmod.S_ISREG(st_mode):
        return "file"
    if statmod.S_ISDIR(st_mode):
        return "dir"
    if statmod.S_ISLNK(st_mode):
        return "symlink"
    for kind, ifmt in SPECIAL_IFMT.items():
        if statmod.S_IFMT(st_mode) == ifmt:
            return kind
    return None
