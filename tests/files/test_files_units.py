"""Chunker, keep policy and snapshot-ID resolution."""
from __future__ import annotations

import io
import random

import pytest

from casbackup.errors import NotFound, UsageError
from casbackup.files.chunker import Chunker
from casbackup.files.forget import Policy, apply_policy
from casbackup.files.snapshots import SnapshotInfo, resolve
from helpers_files import make_repo


def test_chunker_is_independent_of_read_segmentation() -> None:
    data = random.Random(3).randbytes(5 * 1024 * 1024)
    c = Chunker(16 * 1024, 64 * 1024, 256 * 1024)
    whole = list(c.split(io.BytesIO(data)))
    c.segment = 300 * 1024 + 7  # force many carries across read boundaries
    pieces = list(c.split(io.BytesIO(data)))
    assert pieces == whole and b"".join(pieces) == data
    assert all(len(p) <= 256 * 1024 for p in pieces) and all(len(p) >= 16 * 1024 for p in pieces[:-1])
    assert 40 < len(pieces) < 160  # ~80 at a 64 KiB average


def test_chunker_cut_points_survive_an_insertion() -> None:
    data = random.Random(4).randbytes(2 * 1024 * 1024)
    c = Chunker(16 * 1024, 64 * 1024, 256 * 1024)
    a = set(c.split(io.BytesIO(data)))
    b = set(c.split(io.BytesIO(data[:1000] + b"inserted" + data[1000:])))
    assert len(a & b) >= len(a) - 3  # only the chunks around the edit differ


def test_empty_stream_has_no_chunks() -> None:
    assert list(Chunker(64, 256, 1024).split(io.BytesIO(b""))) == []


def snap(i: int, t: float, host: str = "h") -> SnapshotInfo:
    return SnapshotInfo(f"{i:064x}", t, host, "u", ["/data"], [], "00" * 32)


def test_keep_policy() -> None:
    day = 86400.0
    base = 1_700_000_000.0  # a Tuesday
    snaps = [snap(i, base + i * day / 2) for i in range(40)]  # two per day for 20 days
    keep, remove = apply_policy(snaps, Policy(last=3))
    assert [s.id for s in keep] == [s.id for s in snaps[-3:]] and len(remove) == 37
    keep, _ = apply_policy(snaps, Policy(daily=5))
    assert len(keep) == 5 and all(k in snaps[-10:] for k in keep)
    keep, _ = apply_policy(snaps, Policy(weekly=2, monthly=1))
    assert 2 <= len(keep) <= 3
    other = [snap(100 + i, base + i, host="other") for i in range(3)]
    keep, remove = apply_policy(snaps + other, Policy(last=1))
    assert {s.host for s in keep} == {"h", "other"} and len(keep) == 2


def test_resolve_prefix_latest_and_errors() -> None:
    repo = make_repo()
    with repo.reader() as s:
        with pytest.raises(NotFound):
            resolve(s, "latest")
        with pytest.raises(UsageError):
            resolve(s, "xyz")


def test_progress_line_has_files_bytes_rate_and_eta_and_is_silent_when_disabled() -> None:
    import time

    from casbackup.files.progress import Progress
    out = io.StringIO()
    p = Progress("restore", True, total_bytes=10_000, stream=out, interval=0)
    p.add(files=1, nbytes=1000)
    time.sleep(0.01)
    p.add(files=1, nbytes=1000)
    p.done()
    text = out.getvalue()
    assert "restore [0:00] 20.0% 2 files" in text and "/s" in text
    assert "ETA" not in text  # none before 2 s (tests/files/test_progress.py checks it once due)
    quiet = io.StringIO()
    q = Progress("backup", False, stream=quiet, interval=0)
    q.add(files=5, nbytes=5)
    q.done()
    assert quiet.getvalue() == ""
