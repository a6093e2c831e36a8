"""Item 7's goal end to end: a single flipped byte anywhere in a real repository (records, live
blobs, unreferenced blobs, pins, the gc lease) makes `check --read-data` fail."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers_common import run_cli, store_orphan
from casbackup.backends import LocalBackend
from casbackup.check import check
from casbackup.cli.core import check_validators
from casbackup.errors import CasbackupError
from casbackup.repository import Repository

pytestmark = pytest.mark.slow  # flips every byte of a repository and runs check on each


def _build(tmp_path: Path) -> Path:
    repo, src = tmp_path / "repo", tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "small.txt").write_text("hello\n")
    (src / "d" / "big.bin").write_bytes(os.urandom(300_000) + b"text " * 40_000)
    assert run_cli("-r", str(repo), "init", "--chunk-min", "64K", "--chunk-avg", "128K", "--chunk-max", "256K").code == 0
    assert run_cli("-r", str(repo), "backup", str(src)).code == 0
    assert run_cli("-r", str(repo), "meta", "put", "ns", "k", "v").code == 0
    assert run_cli("-r", str(repo), "gc", "--grace", "0s", "--force").code == 0  # leaves locks/gc (released)
    r = Repository.open(LocalBackend(repo), write=True)
    store_orphan(r, b"an unreferenced orphan " * 10)  # a pack no generation locates
    r.open_reader("left behind", renew=False)  # a live pin record, never released
    return repo


def _ok(repo: Path) -> bool:
    """False if check reports damage, or stops with an error naming it (a corrupt config: exit 5)."""
    validators, entry_validators = check_validators()
    try:
        report = check(Repository.open(LocalBackend(repo)), read_data=True, validators=validators,
                       entry_validators=entry_validators)
    except CasbackupError:
        return False
    return report.ok


def test_every_stored_object_with_a_flipped_byte_fails_check(tmp_path: Path) -> None:
    repo = _build(tmp_path)
    assert _ok(repo)
    files = sorted(p for p in repo.rglob("*") if p.is_file() and not p.name.startswith("."))
    kinds = {p.relative_to(repo).parts[0] for p in files}
    assert {"config", "root", "blobs", "packs", "pins", "locks", "keys"} <= kinds
    missed = []
    for path in files:
        original = path.read_bytes()
        size = len(original)
        offsets = sorted({0, 4, 5, 6, 7, 8, size // 3, size // 2, size - 17, size - 16, size - 1} & set(range(size)))
        for off in offsets:
            damaged = bytearray(original)
            damaged[off] ^= 0x80
            path.write_bytes(bytes(damaged))
            try:
                if _ok(repo):
                    missed.append((str(path.relative_to(repo)), off))
            finally:
                path.write_bytes(original)
    assert not missed, missed
    assert _ok(repo)
