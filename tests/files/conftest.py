"""The file layer's in-process gc runs walk TREE and FILE blobs: here every such walk locates
them through one scan of its generation's `_blobs` (structmap), the path a large repository's
gc takes, so the file-level races and round trips cover it; the core tests keep the
one-descent-per-blob path of small repositories."""
from __future__ import annotations

import pytest

from casbackup import structmap


@pytest.fixture(autouse=True)
def _walks_scan_their_locations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(structmap, "SCAN_AFTER_MIN", 0)
    monkeypatch.setattr(structmap, "SCAN_AFTER_SHARE", 0.0)
