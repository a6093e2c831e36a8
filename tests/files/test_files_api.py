"""The files layer's library functions behind forget, stats, find and snapshots --latest, used
through the public API only (casbackup.files), as a library caller would."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import casbackup
from casbackup import files

SMALL = {"chunk_min": 1024, "chunk_avg": 4096, "chunk_max": 16384}


@pytest.fixture
def repo(tmp_path: Path):
    r = casbackup.init(str(tmp_path / "repo"), **SMALL)
    yield r
    r.close()


def _tree(tmp_path: Path, name: str, content: bytes) -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "a.txt").write_bytes(content)
    return src


def test_forget_dry_run_commits_nothing_and_forget_deletes_in_one_generation(repo, tmp_path):
    src = _tree(tmp_path, "src", b"one")
    first, _ = files.run_backup(repo, files.BackupOptions(paths=[str(src)]))
    (src / "a.txt").write_bytes(b"two")
    second, _ = files.run_backup(repo, files.BackupOptions(paths=[str(src)]))
    head = next(repo.log()).seq

    dry = files.forget_snapshots(repo, policy=files.Policy(last=1), dry_run=True)
    assert (dry.dry_run, dry.generation) == (True, None)
    assert [s.id for s in dry.keep] == [second.id] and [s.id for s in dry.remove] == [first.id]
    assert next(repo.log()).seq == head

    done = files.forget_snapshots(repo, policy=files.Policy(last=1))
    assert done.generation is not None and done.generation.seq == head + 1
    assert done.to_json() == {"dry_run": False, "removed": [first.id], "kept": [second.id],
                              "reasons": {second.id: ["last"]}, "generation": head + 1}
    with repo.reader() as reader:
        assert [s.id for s in files.list_snapshots(reader)] == [second.id]


def test_forget_by_id_and_its_usage_errors(repo, tmp_path):
    info, _ = files.run_backup(repo, files.BackupOptions(paths=[str(_tree(tmp_path, "s", b"x"))]))
    with pytest.raises(casbackup.UsageError, match="not both"):
        files.forget_snapshots(repo, [info.id], files.Policy(last=1))
    with pytest.raises(casbackup.UsageError, match="nothing to forget"):
        files.forget_snapshots(repo)
    result = files.forget_snapshots(repo, [info.id[:8], "latest"])
    assert result.keep == [] and [s.id for s in result.remove] == [info.id]


def test_repository_stats_counts_snapshots_and_stored_blobs(repo, tmp_path):
    empty = files.repository_stats(repo)
    assert (empty.snapshots, empty.logical_size) == (0, 0)
    src = _tree(tmp_path, "s", b"y" * 50_000)
    files.run_backup(repo, files.BackupOptions(paths=[str(src)]))
    files.run_backup(repo, files.BackupOptions(paths=[str(src)], force=True))
    st = files.repository_stats(repo)
    assert st.snapshots == 2 and st.logical_size == 100_000
    assert st.blobs > empty.blobs and st.stored_size > empty.stored_size
    assert st.dedup_ratio == round(st.logical_size / st.stored_size, 3)
    assert st.to_json()["dedup_ratio"] == st.dedup_ratio


def test_latest_per_series_keeps_the_newest_of_each_host_and_path_set(repo, tmp_path):
    a, b = _tree(tmp_path, "a", b"1"), _tree(tmp_path, "b", b"2")
    ids = [files.run_backup(repo, files.BackupOptions(paths=[str(p)], host=h))[0].id
           for p, h in ((a, "h1"), (a, "h1"), (b, "h1"), (a, "h2"))]
    with repo.reader() as reader:
        every = files.list_snapshots(reader)
    assert [s.id for s in files.latest_per_series(every, 1)] == [s.id for s in every if s.id != ids[0]]
    assert len(files.latest_per_series(every, 2)) == 4


def test_find_searches_the_chosen_snapshots_and_a_filter_that_selects_none_is_not_found(repo, tmp_path):
    src = _tree(tmp_path, "s", b"z")
    (src / "b.conf").write_bytes(b"c")
    info, _ = files.run_backup(repo, files.BackupOptions(paths=[str(src)], host="web1"))
    with repo.reader() as reader:
        chosen = files.snapshots_to_search(reader, [], files.SnapshotFilter(hosts=["web1"]))
        hits = list(files.search_snapshots(reader, files.Finder(["*.conf"]), chosen))
        assert [(s.id, [p for p, _ in found]) for s, found in hits] == [(info.id, [f"{src}/b.conf"])]
        assert list(files.search_snapshots(reader, files.Finder(["*.nothing"]), chosen)) == []
        with pytest.raises(casbackup.NotFound):
            files.snapshots_to_search(reader, [], files.SnapshotFilter(hosts=["elsewhere"]))


def test_results_are_plain_dataclasses():
    assert dataclasses.is_dataclass(files.ForgetResult) and dataclasses.is_dataclass(files.RepositoryStats)
