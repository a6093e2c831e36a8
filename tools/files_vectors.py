#!/usr/bin/env python3
"""Write spec/vectors/files/tree.json: the blobs of a small file snapshot, byte for byte, and
spec/vectors/files/fidelity.json: TREEs with the optional xattrs and hard-link fields (§3.2).

tests/files/test_files_vectors.py rebuilds them with the library and compares, so the spec text,
the vectors and the code cannot drift apart. The snapshot backs up /home/alice, so its root TREE
mirrors that path (spec/files.md §6): root -> home -> alice -> the backed-up content. The JSON
follows spec/vectors/README.md. Run from the project root: python tools/files_vectors.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from casbackup.codec import BlobType, blob_id, pack_structured  # noqa: E402
from casbackup.files.snapshots import SnapshotInfo, new_id  # noqa: E402
from casbackup.files.tree import Chunk, Node, file_body, tree_body  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "spec" / "vectors" / "files" / "tree.json"
FIDELITY_OUT = OUT.with_name("fidelity.json")
# a POSIX access ACL in the kernel's xattr form: version 2, then (tag, perm, id) entries
# USER_OBJ rw-, USER 1001 r--, GROUP_OBJ r--, MASK r--, OTHER ---
ACL = bytes.fromhex("02000000" "01000600ffffffff" "02000400e9030000" "04000400ffffffff"
                    "10000400ffffffff" "20000000ffffffff")


def build() -> dict[str, Any]:
    blobs: list[dict[str, Any]] = []

    def add(kind: BlobType, payload: bytes, name: str) -> str:
        i = blob_id(kind, payload)
        blobs.append({"name": name, "type": int(kind), "id": i, "payload_hex": payload.hex()})
        return i

    def add_tree(nodes: list[Node], name: str) -> str:
        refs, body = tree_body(nodes)
        return add(BlobType.TREE, pack_structured(refs, body), name)

    c1 = add(BlobType.CHUNK, b"A" * 40, "chunk 1 of big.dat")
    c2 = add(BlobType.CHUNK, b"B" * 24, "chunk 2 of big.dat")
    chunks = [Chunk(c1, 40), Chunk(c2, 24)]
    refs, body = file_body(chunks)
    file_id = add(BlobType.FILE, pack_structured(refs, body), "FILE blob: ordered chunk list of huge.dat")
    sub = [Node(b"note.txt", "file", mode=0o600, mtime_ns=1_700_000_000_123_456_789, uid=1000, gid=1000, size=5,
                ino=11, ctime_ns=1_700_000_000_123_456_789, data=b"hello")]
    sub_id = add_tree(sub, "TREE of /home/alice/sub: one inline file")
    specials = [
        Node(b"dev-null", "chardev", mode=0o666, mtime_ns=1_700_000_006_000_000_000, rdev=(1 << 8) | 3),
        Node(b"pipe", "fifo", mode=0o4640, mtime_ns=1_700_000_007_000_000_000, uid=1000, gid=100),
        Node(b"sock", "socket", mode=0o755, mtime_ns=1_700_000_008_000_000_000, uid=1000, gid=100),
    ]
    specials_id = add_tree(specials, "TREE of special files: chardev (rdev 1:3), fifo (setuid), socket")
    content = [
        Node(b"big.dat", "file", mode=0o644, mtime_ns=1_700_000_001_000_000_000, uid=0, gid=0, size=64, ino=12,
             ctime_ns=1_700_000_001_000_000_000, chunks=chunks),
        Node(b"huge.dat", "file", mode=0o644, mtime_ns=1_700_000_002_000_000_000, uid=0, gid=0, size=64, ino=13,
             ctime_ns=1_700_000_002_000_000_000, file=file_id),
        Node(b"link", "symlink", mode=0o777, mtime_ns=1_700_000_003_000_000_000, target=b"sub/note.txt"),
        Node(b"specials", "dir", mode=0o755, mtime_ns=1_700_000_004_500_000_000, tree=specials_id),
        Node(b"sub", "dir", mode=0o755, mtime_ns=1_700_000_004_000_000_000, tree=sub_id),
    ]
    alice_id = add_tree(content, "TREE of /home/alice, the backed-up content: chunked file, FILE-blob file, "
                                 "symlink, two dirs")
    home_id = add_tree([Node(b"alice", "dir", mode=0o750, mtime_ns=1_700_000_004_900_000_000, uid=1000, gid=1000,
                             tree=alice_id)], "TREE of /home: the entry alice (metadata of /home/alice)")
    root_id = add_tree([Node(b"home", "dir", mode=0o755, mtime_ns=1_699_000_000_000_000_000, tree=home_id)],
                       "root TREE: the entry home (metadata of /home), mirroring the backed-up path")
    info = SnapshotInfo("", 1_700_000_005.5, "host1", "alice", ["/home/alice"], ["daily"], root_id, None,
                        {"files_new": 3, "total_bytes": 133})
    value = info.value()
    return {
        "description": "A file snapshot of /home/alice: every blob's type, ID and canonical payload, and the "
                       "snapshot entry. Blob IDs are BLAKE3-256(domain || type byte || payload) as in "
                       "spec/FORMAT.md; the conventions are in spec/vectors/README.md.",
        "blobs": blobs,
        "snapshot_entry": {"namespace": "snapshots", "key": new_id(value), "value_hex": value.hex(),
                           "refs": [{"type": int(BlobType.TREE), "id": root_id}]},
    }


def build_fidelity() -> dict[str, Any]:
    """One directory: a file with xattrs (an ACL among them), two names of one hard-linked file,
    a hard-linked FIFO; and the decoded fields every reader must see."""
    t = 1_700_000_010_000_000_000
    xattrs = [(b"security.selinux", b"unconfined_u:object_r:user_home_t:s0\x00"),
              (b"system.posix_acl_access", ACL), (b"user.comment", b"hello \xff bytes")]
    a = Node(b"a.txt", "file", mode=0o644, mtime_ns=t, uid=1000, gid=1000, size=2, ino=77, ctime_ns=t,
             data=b"hi", links=2, dev=2049)
    b = Node(b"b.txt", "file", mode=0o644, mtime_ns=t, uid=1000, gid=1000, size=2, ino=77, ctime_ns=t,
             data=b"hi", links=2, dev=2049)
    doc = Node(b"doc", "file", mode=0o4750, mtime_ns=t, uid=0, gid=0, size=3, ino=78, ctime_ns=t, data=b"abc",
               xattrs=xattrs)
    fifo = Node(b"pipe", "fifo", mode=0o600, mtime_ns=t, uid=1000, gid=1000, links=3, dev=2049, ino=79)
    acl_dir = Node(b"shared", "dir", mode=0o2775, mtime_ns=t, tree="00" * 32,
                   xattrs=[(b"system.posix_acl_default", ACL)])
    empty_refs, empty_body = tree_body([])
    empty = pack_structured(empty_refs, empty_body)
    acl_dir.tree = blob_id(BlobType.TREE, empty)
    refs, body = tree_body([a, b, doc, fifo, acl_dir])
    payload = pack_structured(refs, body)
    return {
        "description": "TREE entries with the optional fields of spec/files.md §3.2: `xattrs` ([name, value] "
                       "pairs of bin, ascending by name; POSIX ACLs are the system.posix_acl_* xattrs) and "
                       "hard-link identity (`links` > 1 with `dev` and `ino`). a.txt and b.txt are one inode "
                       "(restore links b.txt to a.txt); `expect` lists each entry's decoded fields.",
        "blobs": [{"name": "empty TREE of shared/", "type": int(BlobType.TREE), "id": acl_dir.tree,
                   "payload_hex": empty.hex()},
                  {"name": "TREE with xattrs and hard links", "type": int(BlobType.TREE),
                   "id": blob_id(BlobType.TREE, payload), "payload_hex": payload.hex()}],
        "expect": [{"name": n.name.hex(), "type": n.kind, "links": n.links, "dev": n.dev,
                    "ino": n.ino if n.links > 1 else None,
                    "xattrs": [[k.hex(), v.hex()] for k, v in n.xattrs or ()]} for n in (a, b, doc, fifo, acl_dir)],
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT}")
    FIDELITY_OUT.write_text(json.dumps(build_fidelity(), indent=2) + "\n")
    print(f"wrote {FIDELITY_OUT}")
