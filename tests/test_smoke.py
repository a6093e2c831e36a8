from __future__ import annotations


def test_cli_roundtrip(tmp_path, cli):
    repo = str(tmp_path / "r")
    assert cli("-r", repo, "init").code == 0
    assert cli("-r", repo, "meta", "put", "ns", "k", "v").code == 0
    r = cli("-r", repo, "meta", "get", "ns", "k")
    assert (r.code, r.stdout) == (0, b"v")


def test_library_roundtrip(local_repo):
    local_repo.commit(puts=[("a", "b", b"c")])
    with local_repo.reader() as snap:
        assert snap.get("a", "b") == b"c"
