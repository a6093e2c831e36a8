"""Long variants (run with --soak): peak memory stays flat as the input grows."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_common import cli_env

pytestmark = pytest.mark.slow  # long soaks (with --soak)


def _peak_rss_of_backup(tmp_path: Path, size: int, name: str) -> int:
    src = tmp_path / name
    src.mkdir()
    block = os.urandom(8 * 1024 * 1024)
    with open(src / "big", "wb") as f:  # distinct content per block: the XOR counter defeats dedup
        for i in range(size // len(block)):
            f.write(i.to_bytes(8, "little") + block[8:])
    repo = tmp_path / f"repo-{name}"
    subprocess.run([sys.executable, "-m", "casbackup", "-q", "-r", str(repo), "init"], env=cli_env(), check=True)
    code = ("import resource,subprocess,sys;subprocess.run(sys.argv[1:],check=True);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "casbackup", "-q", "-r", str(repo),
                          "backup", str(src)], env=cli_env(), check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) * 1024


def test_backup_memory_is_flat(tmp_path: Path, soak: bool) -> None:
    if not soak:
        pytest.skip("long: run with --soak")
    small = _peak_rss_of_backup(tmp_path, 512 * 1024 * 1024, "small")  # large enough to fill the in-flight budget
    large = _peak_rss_of_backup(tmp_path, 4096 * 1024 * 1024, "large")
    assert large < 300 * 1024 * 1024, (small, large)
    assert large < small * 1.5 + 32 * 1024 * 1024, (small, large)  # 8x the input, about the same memory
