"""`copy`: snapshots from one repository into another, deduplicated on the destination.

The source is read through one pinned Reader; the destination is written through one
Transaction, committed once per run. Blobs are copied by payload, so their IDs (and so the
snapshot's value and ID) are the same in both repositories whatever either's compression or,
later, encryption. Every blob a snapshot's root TREE reaches is visited through the refs lists
(TREE parts, FILE blobs, CHUNKs): one already stored on the destination is declared with
`txn.use()` (the commit's rescue rule covers it against a concurrent gc), any other is read
from the source (verified) and uploaded. The walk always descends, even below a TREE the
destination already has: a stored but unreachable TREE may have lost children to gc.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..codec import RAW_TYPES, BlobType, Ref, unpack_structured
from ..errors import BlobCorrupt, UsageError
from ..meter import Meter, as_meter
from ..repository import Reader, Repository
from ..transaction import Transaction
from ..transfer import Pipeline
from .progress import rfc3339
from .snapshots import NAMESPACE, SnapshotFilter, SnapshotInfo, select

Progress = Callable[[str], None] | Meter
COPY_REQUESTS = 8     # CHUNKs checked, read and sent at once (at most twice as many held in memory)


@dataclass
class CopiedSnapshot:
    info: SnapshotInfo
    status: str              # "copied" or "skipped"
    reason: str = ""
    blobs_uploaded: int = 0
    bytes_uploaded: int = 0  # payload bytes sent to the destination

    def to_json(self) -> dict[str, Any]:
        return {"id": self.info.id, "short_id": self.info.id[:8], "status": self.status, "reason": self.reason,
                "time": rfc3339(self.info.time), "host": self.info.host, "paths": self.info.paths,
                "blobs_uploaded": self.blobs_uploaded, "bytes_uploaded": self.bytes_uploaded}


@dataclass
class CopyResult:
    snapshots: list[CopiedSnapshot] = field(default_factory=list)
    blobs_uploaded: int = 0
    blobs_reused: int = 0
    bytes_uploaded: int = 0
    generation: str | None = None  # the destination's new generation, if anything was committed

    @property
    def copied(self) -> int:
        return sum(1 for s in self.snapshots if s.status == "copied")

    @property
    def skipped(self) -> int:
        return sum(1 for s in self.snapshots if s.status == "skipped")

    def to_json(self) -> dict[str, Any]:
        return {"copied": self.copied, "skipped": self.skipped, "blobs_uploaded": self.blobs_uploaded,
                "blobs_reused": self.blobs_reused, "bytes_uploaded": self.bytes_uploaded,
                "generation": self.generation, "snapshots": [s.to_json() for s in self.snapshots]}


class _Copier:
    """Copies the blobs a root reaches, each at most once per run. CHUNKs (most of the bytes)
    are checked, read and sent on a bounded pool of threads, COPY_REQUESTS at a time; TREE and
    FILE blobs are handled in the walking thread, which needs their refs to go on."""

    def __init__(self, src: Reader, txn: Transaction, result: CopyResult, say: Meter,
                 pipe: Pipeline[tuple[Ref, bool, int]]) -> None:
        self.src, self.txn, self.result, self.say, self.pipe = src, txn, result, say, pipe
        self.seen: set[str] = set()
        self.item: CopiedSnapshot | None = None

    def _send(self, ref: Ref, payload: bytes | None) -> tuple[Ref, bool, int]:
        """Upload one blob unless the destination has it: (ref, uploaded, payload bytes)."""
        if payload is None:
            if self.txn.is_stored(ref):
                return ref, False, 0
            payload = self.src.read_blob(ref)  # verified against its ID
        res = self.txn.put_blob(BlobType(ref.type), payload)
        if res.ref != ref:
            raise BlobCorrupt(ref.id, f"copied payload stored as {res.ref.id}, not as itself")
        return ref, res.created, len(payload)

    def _account(self, done: tuple[Ref, bool, int]) -> None:
        ref, uploaded, size = done
        if not uploaded:
            self.txn.use([ref])  # already there: the commit's rescue rule covers it
            self.result.blobs_reused += 1
            return
        assert self.item is not None
        self.item.blobs_uploaded += 1
        self.item.bytes_uploaded += size
        self.result.blobs_uploaded += 1
        self.result.bytes_uploaded += size
        self.say.add(nbytes=size)

    def copy_roots(self, roots: list[Ref], item: CopiedSnapshot) -> None:
        self.item = item
        stack = list(roots)
        while stack:
            ref = stack.pop()
            if ref.id in self.seen:
                continue
            self.seen.add(ref.id)
            if ref.type in RAW_TYPES:
                while self.pipe.full():
                    self._account(self.pipe.take())
                self.pipe.submit(self._send, ref, None)
                continue
            present = self.txn.is_stored(ref)
            payload = self.src.read_blob(ref)  # a TREE or FILE: its refs are walked even when present
            refs, _ = unpack_structured(payload, ref.id)
            stack.extend(refs)
            self.txn.use(refs)
            self._account(self._send(ref, payload) if not present else (ref, False, 0))
        while self.pipe:
            self._account(self.pipe.take())


def copy_snapshots(src_repo: Repository, dst_repo: Repository, specs: list[str], flt: SnapshotFilter | None,
                   progress: Progress | None = None) -> CopyResult:
    """Copy the chosen snapshots (default: all) from src_repo into dst_repo in one commit; a
    snapshot whose ID the destination already has is skipped, as is one marked damaged."""
    if src_repo.store.id_key != dst_repo.store.id_key:
        raise UsageError(
            "the two repositories name blobs with different ID keys (every encrypted repository has its own, spec "
            "§13.3), so blobs cannot be copied by ID; make the destination with 'casbackup -r DEST init "
            "--copy-id-key-from SOURCE' (both then share one ID key), or copy between two unencrypted repositories")
    say = as_meter(progress)
    result = CopyResult()
    with src_repo.reader("copy") as src:
        chosen = select(src, specs, flt)
        txn = dst_repo.transaction("copy")
        pipe: Pipeline[tuple[Ref, bool, int]] = Pipeline(COPY_REQUESTS, max_items=2 * COPY_REQUESTS,
                                                         name="casbackup-copy")
        try:
            have = {e.key for e in txn.base.list(NAMESPACE)}
            copier = _Copier(src, txn, result, say, pipe)
            say.phase("copying snapshots", total=sum(1 for i in chosen if i.id not in have and not i.damaged),
                      unit="snapshots")
            for info in chosen:
                item = CopiedSnapshot(info, "skipped")
                result.snapshots.append(item)
                if info.id in have:
                    item.reason = "already in the destination"
                    continue
                if info.damaged:
                    item.reason = "marked damaged in the source by 'repair blobs'"
                    continue
                entry = src.entry(NAMESPACE, info.id)
                if entry is None:  # listed a moment ago in the same pinned generation
                    raise UsageError(f"snapshot {info.id[:8]} vanished from the source")
                copier.copy_roots(list(entry.refs), item)  # the root TREE (and anything else kept)
                txn.put(NAMESPACE, info.id, src.value(entry), refs=list(entry.refs), if_absent=True)
                item.status = "copied"
                say.add(files=1)
                have.add(info.id)
            if result.copied:
                result.generation = txn.commit().id
            else:
                txn.abort()
        except BaseException:
            pipe.close()  # no upload goes on behind the abort
            txn.abort()
            raise
        finally:
            pipe.close()
    return result
