"""Names that are not UTF-8 (b"caf\\xe9", b"\\xff\\xfe"), through every command that prints or takes
a name: shown losslessly (text escapes, JSON `*_bytes`), named from the command line by their
bytes, and restored and dumped byte for byte."""
from __future__ import annotations

import base64
import codecs
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from casbackup.files import names

from helpers_files import snapshot_of

LATIN1 = b"caf\xe9"
FFFE = b"\xff\xfe"


def test_shown_is_lossless_and_plain_for_utf8() -> None:
    for raw in (LATIN1, FFFE, b"a\\xe9", "caf\u00e9".encode(), b"new\nline", b"tab\tand\x1besc", b"back\\slash"):
        text = names.shown(raw, terminal=True)
        text.encode("utf-8")  # valid UTF-8: no lone surrogate ever leaves
        assert "\n" not in text and "\x1b" not in text
        assert codecs.escape_decode(text.encode("utf-8"))[0] == raw  # the escapes decode back to the bytes
    assert names.shown("café/x") == "café/x"  # UTF-8 is printed as is
    assert names.shown(LATIN1) == "caf\\xe9" and names.shown(b"a\\xe9") == "a\\\\xe9"  # never ambiguous
    assert names.shown(b"tab\t") == "tab\t" and names.shown(b"tab\t", terminal=True) == "tab\\t"


def test_json_fields_carry_exact_bytes_only_when_needed() -> None:
    doc = names.put_json({}, "path", names.from_bytes(b"/d/" + LATIN1))
    assert doc == {"path": "/d/caf\\xe9", "path_bytes": base64.b64encode(b"/d/" + LATIN1).decode()}
    json.dumps(doc, ensure_ascii=False).encode("utf-8")
    assert names.put_json({}, "name", "café\n") == {"name": "café\n"}  # exact: no *_bytes
    assert names.from_argv(os.fsdecode(FFFE)) == names.from_bytes(FFFE)


def _tree(root: Path) -> Path:
    src = root / "src"
    (src / os.fsdecode(LATIN1 + b"dir")).mkdir(parents=True)
    (src / os.fsdecode(LATIN1)).write_bytes(b"latin-1 name\n")
    (src / os.fsdecode(FFFE)).write_bytes(b"\x00\x01 not utf-8 either\n" * 100)
    (src / os.fsdecode(LATIN1 + b"dir") / os.fsdecode(b"in\xe9side")).write_bytes(b"inner\n")
    (src / "plain.txt").write_text("plain\n")
    os.symlink(os.fsdecode(LATIN1), src / os.fsdecode(b"link\xe9"))
    return src


def _ok(r):
    assert r.code == 0, r.stderr
    assert "\\udc" not in r.stderr and "Traceback" not in r.stderr
    return r


def _p(src: Path, raw: bytes) -> str:
    """A path argument naming raw bytes below src, as the shell passes it (argv is bytes)."""
    return os.fsdecode(os.fsencode(src) + b"/" + raw)


@pytest.mark.slow  # about 15 CLI subprocesses
def test_non_utf8_names_through_the_cli(tmp_path: Path, cli) -> None:
    src = _tree(tmp_path)
    first_state = snapshot_of(src)
    repo = str(tmp_path / "repo")
    _ok(cli("-r", repo, "init"))
    first = json.loads(_ok(cli("-r", repo, "backup", str(src), "--json")).stdout)["id"]

    listed = _ok(cli("-r", repo, "ls", "latest", str(src))).stdout.decode("utf-8").splitlines()  # strict UTF-8
    assert listed == [str(src), f"{src}/caf\\xe9", f"{src}/caf\\xe9dir", f"{src}/link\\xe9", f"{src}/plain.txt",
                      f"{src}/\\xff\\xfe"]  # stored order: by bytes
    long = _ok(cli("-r", repo, "ls", "-l", "latest", _p(src, b"link\xe9"))).out
    assert long.rstrip().endswith(f"{src}/link\\xe9 -> caf\\xe9")

    rows = {base64.b64decode(r["path_bytes"]) if "path_bytes" in r else r["path"].encode(): r
            for r in json.loads(_ok(cli("-r", repo, "ls", "--json", "latest", str(src))).stdout)}
    assert os.fsencode(src) + b"/" + LATIN1 in rows and os.fsencode(src) + b"/" + FFFE in rows
    link = rows[os.fsencode(src) + b"/link\xe9"]
    assert base64.b64decode(link["name_bytes"]) == b"link\xe9" and base64.b64decode(link["target_bytes"]) == LATIN1
    assert link["name"] == "link\\xe9" and "path_bytes" not in rows[os.fsencode(src) + b"/plain.txt"]

    # a command-line PATH given as raw bytes names the entry
    one = _ok(cli("-r", repo, "ls", "--json", "latest", _p(src, FFFE)))
    assert [base64.b64decode(r["name_bytes"]) for r in json.loads(one.stdout)] == [FFFE]

    found = _ok(cli("-r", repo, "find", os.fsdecode(b"caf\xe9*"))).out
    assert f"{src}/caf\\xe9\n" in found and f"{src}/caf\\xe9dir\n" in found and "plain" not in found
    fj = json.loads(_ok(cli("-r", repo, "find", "--json", os.fsdecode(b"in\xe9side"))).stdout)
    assert [base64.b64decode(m["path_bytes"]) for m in fj[0]["matches"]] == [
        os.fsencode(src) + b"/caf\xe9dir/in\xe9side"]

    (src / os.fsdecode(LATIN1)).write_bytes(b"changed\n")
    (src / os.fsdecode(b"new\xe9")).write_bytes(b"new\n")
    second = json.loads(_ok(cli("-r", repo, "backup", str(src), "--json")).stdout)["id"]
    d = _ok(cli("-r", repo, "diff", first, second, "-q")).out.splitlines()
    assert d == [f"M  {src}/caf\\xe9", f"+  {src}/new\\xe9"]
    dj = json.loads(_ok(cli("-r", repo, "diff", first, second, "--json")).stdout)
    assert [(c["change"], base64.b64decode(c["path_bytes"])) for c in dj] == [
        ("M", os.fsencode(src) + b"/" + LATIN1), ("+", os.fsencode(src) + b"/new\xe9")]

    # restore round trip, byte-identical names and content
    target = tmp_path / "restored"
    _ok(cli("-r", repo, "restore", first, "--target", str(target)))
    assert snapshot_of(target / str(src).lstrip("/")) == first_state
    # restore --include with a raw-bytes pattern, and SNAPSHOT:SUBPATH naming a non-UTF-8 directory
    inc = tmp_path / "inc"
    _ok(cli("-r", repo, "restore", "latest", "--target", str(inc), "--include", os.fsdecode(FFFE)))
    assert sorted(os.listdir(os.fsencode(inc / str(src).lstrip("/")))) == [FFFE]
    sub = tmp_path / "sub"
    _ok(cli("-r", repo, "restore", "latest:" + _p(src, LATIN1 + b"dir"), "--target", str(sub)))
    assert os.listdir(os.fsencode(sub)) == [b"in\xe9side"]

    # dump: the file as is, the directory as tar and zip with the names' exact bytes
    assert _ok(cli("-r", repo, "dump", "latest", _p(src, FFFE))).stdout == (src / os.fsdecode(FFFE)).read_bytes()
    tar = tarfile.open(fileobj=io.BytesIO(_ok(cli("-r", repo, "dump", "latest", str(src))).stdout),
                       encoding="utf-8", errors="surrogateescape")
    members = {os.fsencode(m.name): m for m in tar.getmembers()}
    assert {b"src/" + LATIN1, b"src/" + FFFE, b"src/caf\xe9dir/in\xe9side", b"src/link\xe9"} <= members.keys()
    assert tar.extractfile(members[b"src/" + FFFE]).read() == (src / os.fsdecode(FFFE)).read_bytes()
    assert members[b"src/link\xe9"].linkname == os.fsdecode(LATIN1)
    zf = zipfile.ZipFile(io.BytesIO(_ok(cli("-r", repo, "dump", "latest", str(src), "--archive", "zip")).stdout))
    zipped = {i.filename.encode() if i.flag_bits & 0x800 or i.filename.isascii() else i.orig_filename.encode("cp437")
              for i in zf.infolist()}
    assert {b"src/" + LATIN1, b"src/" + FFFE, b"src/caf\xe9dir/in\xe9side"} <= zipped

    r = cli("-r", repo, "ls", "latest", _p(src, b"gone\xe9"))
    assert r.code == 3 and "gone\\xe9" in r.stderr and "\\udc" not in r.stderr

