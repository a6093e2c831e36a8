"""repair index on S3 (moto on 127.0.0.1): locations into a pack that is gone, whose blobs another
pack holds, are rebuilt from the TOCs read with ranged GETs, through the real CLI."""
from __future__ import annotations

import filecmp
import importlib
import json
import os
from pathlib import Path

import pytest

from casbackup.codec import EncodedBlob
from casbackup.layout import pack_key
from casbackup.packs import LOCATIONS_NAMESPACE, Location, PackBuilder, PackClass
from casbackup.repository import Repository

_bf = importlib.import_module("backends.conftest")  # the moto server fixture, shared (as tests/aptos does)
moto_endpoint = _bf.moto_endpoint


@pytest.mark.slow  # a moto server and five CLI runs: about 10 s
def test_repair_index_on_s3_moves_locations_to_the_surviving_copy(moto_endpoint: str, tmp_path: Path, cli,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    target = _bf.s3_target("s3-moto", moto_endpoint, monkeypatch)
    args, env = target.cli_args(), dict(target.env)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(200_000))
    (src / "sub" / "small.txt").write_text("hello\n")
    assert cli(*args, "init", "--chunk-min", "16K", "--chunk-avg", "64K", "--chunk-max", "256K", env=env).code == 0
    r = cli(*args, "backup", str(src), env=env)
    assert r.code == 0, r.stderr

    repo = Repository.open(target.make(), write=True)
    with repo.reader() as snap:
        locs = {e.key: Location.from_value(e.value or b"", e.key) for e in snap.list(LOCATIONS_NAMESPACE)}
    old_pack = locs[min(locs)].pack
    kind, pairs = repo.store.split_pack(old_pack, repo.backend.get(pack_key(old_pack)))
    builder = PackBuilder(PackClass(kind))
    for item, stored in pairs:
        builder.add(EncodedBlob(item.id, item.location.type, stored, 0))
    repo.store.put_pack(builder)
    repo.backend.delete(pack_key(old_pack))  # a repack whose location commit was lost
    moved = sorted(i for i, loc in locs.items() if loc.pack == old_pack)

    assert cli(*args, "check", env=env).code == 13
    r = cli(*args, "repair", "index", "--yes", "--json", env=env)
    assert r.code == 0, r.stderr
    doc = json.loads(r.out)
    assert doc["applied"] and sorted(f["blob"] for f in doc["fixed"]) == moved
    assert {f["new"]["pack"] for f in doc["fixed"]} == {builder.pack_id}
    r = cli(*args, "check", "--read-data", env=env)
    assert r.code == 0, r.out + r.stderr
    out = tmp_path / "out"
    r = cli(*args, "restore", "latest", "--target", str(out), env=env)
    assert r.code == 0, r.stderr
    got = out / str(src).lstrip("/")
    assert filecmp.cmp(src / "big.bin", got / "big.bin", shallow=False)
    assert filecmp.cmp(src / "sub" / "small.txt", got / "sub" / "small.txt", shallow=False)
