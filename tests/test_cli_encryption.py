"""The CLI on encrypted repositories, the way a user runs it: a real subprocess, a real disk,
the real Argon2id parameters, the password from the environment, a file or a command."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from helpers_common import TEST_PASSWORD

PLANTED = {"content": b"PLANTED-FILE-CONTENT-31337", "name": "planted-file-name.txt", "dir": "planted-directory",
           "host": "planted-host-name", "tag": "planted-tag-value", "xattr": "user.planted-xattr-key"}


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / PLANTED["dir"]).mkdir(parents=True)
    (src / PLANTED["dir"] / PLANTED["name"]).write_bytes(PLANTED["content"] * 1000)
    (src / "small.txt").write_bytes(PLANTED["content"])
    try:
        os.setxattr(src / "small.txt", PLANTED["xattr"], b"planted-xattr-value")
    except OSError:
        pass
    return src


def _every_stored_byte(repo: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file())


def test_main_job_with_the_password_from_the_environment_stores_nothing_readable(tmp_path: Path, cli: Callable[..., Any]) -> None:
    src, repo = _tree(tmp_path), tmp_path / "repo"
    r = cli("-r", str(repo), "init", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.out)["encrypted"] is True and "NOT encrypted" not in r.stderr
    r = cli("-r", str(repo), "backup", str(src), "--host", PLANTED["host"], "--tag", PLANTED["tag"])
    assert r.code == 0, r.stderr
    stored = _every_stored_byte(repo)
    for what, text in PLANTED.items():
        raw = text if isinstance(text, bytes) else text.encode()
        assert raw not in stored, what
    assert str(src).encode() not in stored and b"planted" not in stored.lower()
    r = cli("-r", str(repo), "snapshots", "--json")
    assert r.code == 0 and json.loads(r.out)[0]["host"] == PLANTED["host"], r.stderr
    r = cli("-r", str(repo), "restore", "latest", "--target", str(tmp_path / "out"))
    assert r.code == 0, r.stderr
    restored = tmp_path / "out" / str(src).lstrip("/") / PLANTED["dir"] / PLANTED["name"]
    assert restored.read_bytes() == PLANTED["content"] * 1000
    r = cli("-r", str(repo), "check", "--read-data")
    assert r.code == 0, r.out + r.stderr


def test_init_without_a_password_is_refused_and_insecure_init_warns_on_every_use(tmp_path: Path, cli) -> None:
    repo = tmp_path / "repo"
    r = cli("-r", str(repo), "init", env={"CASBACKUP_PASSWORD": ""})
    assert r.code == 18 and "--insecure-no-encryption" in r.stderr and "Traceback" not in r.stderr
    assert not repo.exists() or not any(repo.iterdir())
    r = cli("-r", str(repo), "init", "--insecure-no-encryption", env={"CASBACKUP_PASSWORD": ""})
    assert r.code == 0 and "NOT encrypted" in r.stderr
    r = cli("-r", str(repo), "snapshots")
    assert r.code == 0 and r.stderr.count("NOT encrypted") == 1
    r = cli("-r", str(repo), "key", "list")
    assert r.code == 2 and "not encrypted" in r.stderr


def test_password_errors_each_have_their_own_exit_code(tmp_path: Path, cli) -> None:
    repo = tmp_path / "repo"
    assert cli("-r", str(repo), "init").code == 0
    r = cli("-r", str(repo), "snapshots", env={"CASBACKUP_PASSWORD": "wrong"})
    assert r.code == 17 and "wrong password" in r.stderr
    r = cli("-r", str(repo), "snapshots", env={"CASBACKUP_PASSWORD": ""})
    assert r.code == 18 and "CASBACKUP_PASSWORD" in r.stderr
    second = tmp_path / "second"
    second.write_text("the second password\n")
    r = cli("-r", str(repo), "key", "add", "--new-password-file", str(second), "--json")
    assert r.code == 0, r.stderr
    new_id = json.loads(r.out)["id"]
    assert cli("--password-file", str(second), "-r", str(repo), "snapshots").code == 0
    r = cli("-r", str(repo), "key", "remove", new_id)
    assert r.code == 0, r.stderr
    r = cli("--password-file", str(second), "-r", str(repo), "snapshots")
    assert r.code == 19 and new_id in r.stderr and "removed" in r.stderr
    r = cli("--password-file", str(second), "--password-command", "echo x", "-r", str(repo), "snapshots")
    assert r.code == 2 and "mutually exclusive" in r.stderr
    for code_and_text in ((17, "wrong"), (18, "needed"), (19, "removed")):
        assert "Traceback" not in r.stderr, code_and_text


def test_key_lifecycle_round_trip(tmp_path: Path, cli) -> None:
    repo = tmp_path / "repo"
    assert cli("-r", str(repo), "init").code == 0
    src = _tree(tmp_path)
    assert cli("-r", str(repo), "backup", str(src)).code == 0
    keys = json.loads(cli("-r", str(repo), "key", "list", "--json").out)
    assert len(keys) == 1 and keys[0]["current"] and keys[0]["kind"] == "password"
    first = keys[0]["id"]
    pw2 = tmp_path / "pw2"
    pw2.write_text("second")
    r = cli("-r", str(repo), "key", "add", "--new-password-file", str(pw2), "--json")
    second = json.loads(r.out)["id"]
    r = cli("-r", str(repo), "key", "remove", first)
    assert r.code == 2 and "opened the repository with" in r.stderr
    # passwd of the second key, through --password-command
    pw3 = tmp_path / "pw3"
    pw3.write_text("third")
    r = cli("--password-command", f"cat {pw2}", "-r", str(repo), "key", "passwd", "--new-password-file", str(pw3))
    assert r.code == 0, r.stderr
    assert cli("--password-file", str(pw2), "-r", str(repo), "snapshots").code == 17
    listed = json.loads(cli("--password-file", str(pw3), "-r", str(repo), "key", "list", "--json").out)
    assert {k["id"] for k in listed} == {first, second} and [k["id"] for k in listed if k["current"]] == [second]
    # rotate: new writes under epoch 1, every key can read old and new
    r = cli("-r", str(repo), "key", "rotate", "--json")
    assert r.code == 0 and json.loads(r.out)["epoch"] == 1, r.stderr
    (src / "new.txt").write_text("after the rotation")
    assert cli("--password-file", str(pw3), "-r", str(repo), "backup", str(src)).code == 0
    for pw in (["--password-file", str(pw3)], []):
        r = cli(*pw, "-r", str(repo), "check", "--read-data")
        assert r.code == 0, r.out + r.stderr
    assert all(k["epoch"] == 1 for k in json.loads(cli("-r", str(repo), "key", "list", "--json").out))
    r = cli("--password-file", str(pw3), "-r", str(repo), "key", "remove", first)
    assert r.code == 0
    r = cli("--password-file", str(pw3), "-r", str(repo), "key", "remove", second)
    assert r.code == 2 and ("last key" in r.stderr or "opened the repository with" in r.stderr)


def test_flipped_bytes_fail_loudly_naming_the_object(tmp_path: Path, cli) -> None:
    repo = tmp_path / "repo"
    assert cli("-r", str(repo), "init").code == 0
    src = _tree(tmp_path)
    assert cli("-r", str(repo), "backup", str(src)).code == 0
    pack = max((p for p in (repo / "packs").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[200] ^= 0x01
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    r = cli("-r", str(repo), "check", "--read-data")
    assert r.code == 13 and "authentication failed" in r.out + r.stderr, r.out + r.stderr
    r = cli("-r", str(repo), "restore", "latest", "--target", str(tmp_path / "out"))
    assert r.code == 5 and "authentication failed" in r.stderr and "Traceback" not in r.stderr, r.stderr
    root = repo / "root"
    raw = bytearray(root.read_bytes())
    raw[-3] ^= 0x10
    root.chmod(0o644)
    root.write_bytes(bytes(raw))
    r = cli("-r", str(repo), "snapshots")
    assert r.code == 5 and "root is corrupt" in r.stderr, r.stderr


def test_a_rolled_back_root_is_refused(tmp_path: Path, cli) -> None:
    repo = tmp_path / "repo"
    cache = tmp_path / "cache"
    env = {"CASBACKUP_CACHE_DIR": str(cache)}
    assert cli("-r", str(repo), "init", env=env).code == 0
    src = _tree(tmp_path)
    assert cli("-r", str(repo), "backup", str(src), env=env).code == 0
    saved = (repo / "root").read_bytes()
    (src / "more").write_text("more")
    assert cli("-r", str(repo), "backup", str(src), env=env).code == 0
    (repo / "root").chmod(0o644)
    (repo / "root").write_bytes(saved)
    r = cli("-r", str(repo), "snapshots", env=env)
    assert r.code == 21 and "rolled it back" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a machine that never saw the newer root has nothing to compare with (the documented limit)
    assert cli("-r", str(repo), "snapshots", env={"CASBACKUP_CACHE_DIR": str(tmp_path / "fresh")}).code == 0
    shutil.rmtree(cache)
    assert cli("-r", str(repo), "snapshots", env=env).code == 0


def test_the_test_password_is_what_cli_repositories_use() -> None:
    assert os.environ.get("CASBACKUP_PASSWORD") == TEST_PASSWORD


def test_rotate_reencrypt_and_gc_retire_an_old_key(tmp_path: Path, cli) -> None:
    repo = tmp_path / "repo"
    assert cli("-r", str(repo), "init").code == 0
    src = _tree(tmp_path)
    assert cli("-r", str(repo), "backup", str(src)).code == 0
    old = tmp_path / "old"
    old.write_text("old key")
    old_id = json.loads(cli("-r", str(repo), "key", "add", "--new-password-file", str(old), "--json").out)["id"]
    kept = (repo / "keys" / old_id).read_bytes()  # a copy the old key's holder kept
    assert cli("-r", str(repo), "key", "remove", old_id).code == 0
    r = cli("-r", str(repo), "key", "rotate", "--reencrypt", "--json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.out)
    assert doc["epoch"] == 1 and doc["gc"]["repacked_packs"] >= 1 and doc["gc"]["resealed"] >= 1
    for _ in range(2):
        r = cli("-r", str(repo), "gc", "--grace", "0s", "--force", "--keep-last", "1")
        assert r.code == 0, r.stderr
    assert cli("-r", str(repo), "check", "--read-data").code == 0
    slot = repo / "keys" / old_id
    slot.chmod(0o644)
    slot.write_bytes(kept)
    r = cli("--password-file", str(old), "-r", str(repo), "snapshots")
    assert r.code == 5 and "key epoch 1" in r.stderr, r.stderr


def test_copy_between_encrypted_repositories_needs_a_shared_id_key(tmp_path: Path, cli) -> None:
    src, a, b, c = _tree(tmp_path), tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert cli("-r", str(a), "init").code == 0
    assert cli("-r", str(a), "backup", str(src)).code == 0
    assert cli("-r", str(b), "init").code == 0
    r = cli("-r", str(b), "copy", "--from-repo", str(a))
    assert r.code == 2 and "--copy-id-key-from" in r.stderr, r.stderr
    frm = tmp_path / "from-pw"
    frm.write_text(TEST_PASSWORD)
    r = cli("-r", str(c), "init", "--copy-id-key-from", str(a), "--from-password-file", str(frm),
            env={"CASBACKUP_PASSWORD": "another password"})
    assert r.code == 0, r.stderr
    r = cli("-r", str(c), "copy", "--from-repo", str(a), env={"CASBACKUP_PASSWORD": "another password",
                                                              "CASBACKUP_FROM_PASSWORD": TEST_PASSWORD})
    assert r.code == 0 and "copied 1 snapshot" in r.out, r.stderr
    r = cli("-r", str(c), "restore", "latest", "--target", str(tmp_path / "out"), env={"CASBACKUP_PASSWORD": "another password"})
    assert r.code == 0, r.stderr
    assert (tmp_path / "out" / str(src).lstrip("/") / "small.txt").read_bytes() == PLANTED["content"]


def _on_a_terminal(args: list[str], talk: list[tuple[str, str | None]]) -> int:
    """Run the CLI on a pseudo-terminal without a password in the environment: for each
    (prompt, answer), wait for the prompt and type the answer (None: only wait); the exit code."""
    import sys

    import pexpect

    from helpers_common import cli_env
    child = pexpect.spawn(sys.executable, ["-m", "casbackup", *args], env=cli_env({"CASBACKUP_PASSWORD": ""}),
                          timeout=60)
    for expected, answer in talk:
        child.expect(expected)
        if answer is not None:
            child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus)


def test_the_password_is_asked_on_a_terminal(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    assert _on_a_terminal(["-r", repo, "init"], [("enter password for new repository: ", "typed secret"),
                                                 ("enter password for new repository again: ", "typed secret"),
                                                 ("encrypted", None)]) == 0
    assert _on_a_terminal(["-r", repo, "key", "list", "--json"], [("enter password for repository: ", "typed secret"),
                                                                  ('"current": true', None)]) == 0
    assert _on_a_terminal(["-r", repo, "init"], [("repository: ", "one"), ("again: ", "two"),
                                                 ("the two passwords differ", None)]) == 2
