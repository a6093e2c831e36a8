"""The library's type annotations are checked, so "typed" stays true as the code changes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers_common import PROJECT_ROOT


@pytest.mark.slow
def test_mypy_finds_no_errors() -> None:
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "casbackup", "--ignore-missing-imports", "--no-error-summary"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
