"""FIFOs, sockets and device nodes are stored as entries (not errors) and restored: FIFOs and
sockets always, devices when running as root; owner before mode, so setuid bits survive."""
from __future__ import annotations

import io
import json
import os
import socket
import stat
import tarfile
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0


def j(r) -> object:
    assert r.code == 0, r.stderr
    return json.loads(r.out)


@pytest.fixture
def specials(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain").write_text("x\n")
    os.mkfifo(src / "fifo", 0o640)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    sock.close()
    if ROOT:
        os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(src / "loopish", stat.S_IFBLK | 0o600, os.makedev(7, 200))
        os.chown(src / "fifo", 1234, 5678)
        os.chmod(src / "fifo", 0o4755)  # setuid: survives only if the owner is set first
    return src


def _meta(p: Path) -> tuple:
    st = os.lstat(p)
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_rdev, st.st_mtime_ns, st.st_uid, st.st_gid)


@pytest.mark.slow
def test_special_files_round_trip(specials: Path, tmp_path: Path, cli) -> None:
    src = specials
    repo = str(tmp_path / "repo")
    assert cli("-r", repo, "init").code == 0
    doc = j(cli("-r", repo, "backup", str(src), "--json"))
    assert doc["error_count"] == 0 and doc["specials"] == (4 if ROOT else 2)  # exit 0, not 16

    rows = {r["path"][len(str(src)) + 1:]: r for r in j(cli("-r", repo, "ls", "latest", str(src), "--json"))
            if r["path"].startswith(f"{src}/")}
    assert rows["fifo"]["type"] == "fifo" and rows["sock"]["type"] == "socket"
    text = cli("-r", repo, "ls", "latest", str(src), "-l").out
    assert any(line.startswith("p") and line.endswith("/fifo") for line in text.splitlines())
    assert any(line.startswith("s") and line.endswith("/sock") for line in text.splitlines())

    target = tmp_path / "out"
    res = j(cli("-r", repo, "restore", "latest", "--target", str(target), "--json"))
    got = target / str(src).lstrip("/")
    names = ["fifo", "sock"] + (["null", "loopish"] if ROOT else [])
    for name in names:
        assert _meta(got / name) == _meta(src / name), name
    if ROOT:
        assert rows["null"]["type"] == "chardev" and rows["null"]["rdev"] == os.makedev(1, 3)
        assert stat.S_IMODE(os.lstat(got / "fifo").st_mode) == 0o4755
        assert res["specials"] == 4 and res["specials_skipped"] == 0
    else:
        assert res["specials"] == 2
    # unchanged, the second snapshot shows no difference
    second = j(cli("-r", repo, "backup", str(src), "--json"))["id"]
    assert j(cli("-r", repo, "diff", doc["id"], second, "--json")) == []

    r = cli("-r", repo, "dump", "latest", str(src))
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        kinds = {m.name.split("/")[-1]: m for m in tar.getmembers()}
    assert kinds["fifo"].isfifo() and "sock" not in kinds
    if ROOT:
        assert kinds["null"].ischr() and (kinds["null"].devmajor, kinds["null"].devminor) == (1, 3)
    r = cli("-r", repo, "check", "--read-data")
    assert r.code == 0, r.stderr


@pytest.mark.skipif(not ROOT, reason="needs root to create the device node to back up")
def test_devices_not_created_without_owner_rights(specials: Path, tmp_path: Path) -> None:
    """A restore that does not set owners (non-root) counts the devices it could not create."""
    from helpers_files import backup, make_repo, restore
    repo = make_repo()
    backup(repo, specials)
    _, summary = restore(repo, tmp_path / "out", owner=False)
    assert summary.specials_skipped == 2 and summary.specials == 2
