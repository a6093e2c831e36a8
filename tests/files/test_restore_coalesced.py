"""Restore reads chunks that are adjacent in a pack with one ranged read (FORMAT.md §12.5), and
still verifies every chunk on its own: a flipped byte inside a run names that chunk (S1/S2)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from casbackup.backends import LocalBackend
from casbackup.errors import BlobCorrupt
from casbackup.files import restore as restore_mod
from casbackup.files.reader import TreeReader
from casbackup.files.snapshots import resolve
from casbackup.repository import Repository
from helpers_common import flip_stored
from helpers_files import backup, make_repo, restore, restored


class CountingBackend(LocalBackend):
    """Counts ranged reads of packs: what a restore costs in GETs on an object store."""

    ranged: list[tuple[str, int, int]]

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self.ranged.append((key, start, length))
        return super().get_range(key, start, length)


def _big_file(src: Path, size: int) -> bytes:
    src.mkdir()
    data = os.urandom(size)
    (src / "big").write_bytes(data)
    return data


def _file_chunks(repo: Repository) -> list[str]:
    return list(_chunk_packs(repo))


def _chunk_packs(repo: Repository) -> dict[str, str]:
    """The file's chunks, in order, and the pack each is in."""
    with repo.reader("test") as snap:
        reader = TreeReader(snap)
        info = resolve(snap, "latest")
        (node,) = [n for _, n in reader.walk(reader.lookup(info.tree, ""), "") if n.name == b"big"]
        chunks = list(reader.chunks(node))
        locs = reader.located(chunks)
        return {c.id: locs[c.id].pack for c in chunks}


def test_a_file_is_read_in_a_few_ranged_reads_not_one_per_chunk(tmp_path: Path) -> None:
    data = _big_file(tmp_path / "src", 3 * 1024 * 1024)
    make_repo(tmp_path / "repo")
    backup(Repository.open(LocalBackend(tmp_path / "repo"), write=True), tmp_path / "src")
    backend = CountingBackend(tmp_path / "repo")
    backend.ranged = []
    repo = Repository.open(backend)
    packs = _chunk_packs(repo)
    assert len(packs) > 20  # 64 KiB average chunks: many per file
    backend.ranged = []
    restore(repo, tmp_path / "out")
    assert (restored(tmp_path / "out", tmp_path / "src") / "big").read_bytes() == data
    # the file's chunks came from a few reads of their packs, not one read per chunk
    data_reads = [r for r in backend.ranged if r[0].rsplit("/", 1)[-1] in set(packs.values())]
    assert 1 <= len(data_reads) <= 2 * len(set(packs.values())), (len(data_reads), len(packs))
    assert sum(length for _, _, length in data_reads) < 2 * len(data)


def test_runs_are_capped_at_run_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restore_mod, "RUN_BYTES", 256 * 1024)
    data = _big_file(tmp_path / "src", 2 * 1024 * 1024)
    repo = make_repo(tmp_path / "repo")
    backup(repo, tmp_path / "src")
    backend = CountingBackend(tmp_path / "repo")
    backend.ranged = []
    restore(Repository.open(backend), tmp_path / "out")
    assert (restored(tmp_path / "out", tmp_path / "src") / "big").read_bytes() == data
    biggest = max(length for key, _, length in backend.ranged if key.startswith("packs/"))
    assert biggest <= 256 * 1024 + 64 * 1024  # payload cap plus envelope overhead of a few chunks


def test_a_flipped_byte_inside_a_run_names_that_chunk(tmp_path: Path) -> None:
    _big_file(tmp_path / "src", 2 * 1024 * 1024)
    repo = make_repo(tmp_path / "repo")
    backup(repo, tmp_path / "src")
    chunks = _file_chunks(repo)
    victim = chunks[len(chunks) // 2]
    flip_stored(tmp_path / "repo", victim)
    repo = Repository.open(LocalBackend(tmp_path / "repo"))
    with pytest.raises(BlobCorrupt) as exc:
        restore(repo, tmp_path / "out")
    assert victim in str(exc.value) and "big" in str(exc.value)
    assert not (restored(tmp_path / "out", tmp_path / "src") / "big").exists()  # nothing half-written left
    assert not list((tmp_path / "out").rglob(".casbackup-restore-*"))


def test_restore_without_preloaded_locations_gives_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A generation too big to preload is located a window of chunks at a time (one ordered pass
    over the index), and still read in runs."""
    from casbackup import reader as reader_mod
    monkeypatch.setattr(reader_mod, "PRELOAD_LOCATIONS", 0)
    data = _big_file(tmp_path / "src", 1024 * 1024)
    (tmp_path / "src" / "small").write_bytes(b"tiny")
    repo = make_repo(tmp_path / "repo")
    backup(repo, tmp_path / "src")
    backend = CountingBackend(tmp_path / "repo")
    backend.ranged = []
    restore(Repository.open(backend), tmp_path / "out")
    out = restored(tmp_path / "out", tmp_path / "src")
    assert (out / "big").read_bytes() == data and (out / "small").read_bytes() == b"tiny"
    assert len([r for r in backend.ranged if r[2] > 512 * 1024]) >= 1  # chunks read together
