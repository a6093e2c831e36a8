"""The operator's deployment: uid 6180, a read-only root filesystem with only /tmp writable,
HOME=/tmp; and the helm-chart adapter configs in tools/aptos/helm/.
"""
from __future__ import annotations

import compileall
import contextlib
import importlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from helpers_common import TEST_PASSWORD
from helpers_aptos import (PROJECT_ROOT, STRICT, Adapter, helper_pids, sync_raw, tool_env, wait_for_helper,
                           write_config)

HELM = PROJECT_ROOT / "tools" / "aptos" / "helm"
OPS = ("create_backup", "create_for_write", "open_for_read", "save_metadata_line", "list_metadata_files",
       "backup_metadata_file")
UID = 6180
# What an adapter call imports from outside the standard library (an image installs exactly these).
RUNTIME_PACKAGES = ("casbackup", "click", "blake3", "msgpack", "zstandard", "nacl", "cryptography", "_cffi_backend")
# A private mount namespace in which / is read-only and /tmp stays writable, entered as uid 6180:
# the pod's securityContext (runAsUser 6180, readOnlyRootFilesystem, an emptyDir on /tmp).
AS_OPERATOR = """#!/bin/sh
exec unshare -m --propagation private -- sh -c \\
  'mount --bind /tmp /tmp && mount -o remount,bind,ro / && exec setpriv --reuid %(uid)d --regid %(uid)d --clear-groups -- "$@"' \\
  sh "$@"
"""


def _can_sandbox() -> str | None:
    if os.geteuid() != 0:
        return "needs root to switch to uid 6180 and to make / read-only in a mount namespace"
    for tool in ("unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"mount namespaces are not available here: {probe.stderr.decode().strip()}"
    return None


@pytest.fixture
def operator_site() -> Iterator[Path]:
    """A directory under /tmp like an image's install: the runtime packages, compiled, readable by
    anyone (this machine's own site-packages may not be readable by another user)."""
    why = _can_sandbox()
    if why:
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="casb-operator-", dir="/tmp"))
    site = base / "site"
    site.mkdir()
    for name in RUNTIME_PACKAGES:
        module = Path(importlib.import_module(name).__file__)  # type: ignore[arg-type]
        if module.name.startswith("__init__."):
            shutil.copytree(module.parent, site / name, ignore=shutil.ignore_patterns("__pycache__", "tests"))
        else:  # a single-file extension module (cffi's _cffi_backend, which PyNaCl needs)
            shutil.copy2(module, site / module.name)
    compileall.compile_dir(str(site), quiet=1)
    bin_ = base / "as-operator"
    bin_.write_text(AS_OPERATOR % {"uid": UID})
    for p in [base, *base.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode | stat.S_IRGRP | stat.S_IROTH | (stat.S_IXGRP | stat.S_IXOTH if p.is_dir() or mode & 0o100 else 0))
    bin_.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _owned_by(uid: int, top: Path) -> set[Path]:
    """Paths under `top` owned by `uid`; other processes' temp dirs may vanish mid-walk (skipped)."""
    found: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(top, onerror=lambda _exc: None):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            try:
                st = p.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISLNK(st.st_mode) and st.st_uid == uid:
                found.add(p)
    return found


def _system_python() -> str:
    """An interpreter uid 6180 can run: the image's Debian python3 (this process's may sit in a
    private home). The site's compiled packages need the same minor version."""
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        probe = subprocess.run([cand, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                               text=True) if os.access(cand, os.X_OK) else None
        if probe is not None and probe.stdout.strip() == str(sys.version_info[:2]):
            return cand
    pytest.skip(f"no system python{sys.version_info[0]}.{sys.version_info[1]} for uid {UID} to run")


def _kill_helpers(helper_dir: Path) -> None:
    for pid in helper_pids(helper_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


@pytest.mark.slow
@pytest.mark.parametrize("thin", [False, True], ids=["cli", "thin-client"])
def test_adapter_as_uid_6180_on_a_read_only_root(operator_site, cli, thin):
    """thin-client: the same calls through `install-thin-client`'s client and its helper, which keeps
    its socket in the default /tmp/casbackup-<uid> (no XDG_RUNTIME_DIR in a pod)."""
    base = operator_site
    work = Path(tempfile.mkdtemp(prefix="casb-operator-tmp-", dir="/tmp"))  # what the pod can write: /tmp
    os.chown(work, UID, UID)
    helper_dir = Path(f"/tmp/casbackup-{UID}")
    shutil.rmtree(helper_dir, ignore_errors=True)
    before = _owned_by(UID, Path("/tmp"))
    try:
        repo = work / "repo"
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": str(base / "site"), "LANG": "C.UTF-8",
               "CASBACKUP_BIN": f"{base / 'as-operator'} {sys.executable} -m casbackup",
               # the pod's secret, and where the rollback watermark goes (the pod's writable /tmp)
               "CASBACKUP_PASSWORD": TEST_PASSWORD, "CASBACKUP_CACHE_DIR": str(work / "cache")}
        if thin:  # installed by the image build, as root, into a read-only place
            python = _system_python()
            client = base / "casbackup-aptos"
            subprocess.run([sys.executable, "-m", "casbackup", "aptos", "install-thin-client", str(client),
                            "--python", python],
                           env={**env, "PYTHONPATH": str(base / "site")}, check=True, capture_output=True)
            env["CASBACKUP_BIN"] = f"{base / 'as-operator'} {client}"
            env["CASBACKUP_APTOS_HELPER_DEBUG"] = "1"
        # Created once by an administrator, then handed to the backup user. (Only the adapter's own
        # packages are installed in the operator's site: the calls below prove they suffice.)
        assert cli("-r", str(repo), "init").code == 0
        for p in [repo, *repo.rglob("*")]:
            os.chown(p, UID, UID)
        cfg = write_config(work / "casbackup.yaml", str(repo))
        a = Adapter(cfg, env)
        bh = a.create_backup("transaction_0-.beef")
        if thin:  # that first call ran through the full CLI and started the helper
            wait_for_helper(helper_dir)
            assert stat.S_IMODE(helper_dir.stat().st_mode) == 0o700 and helper_dir.stat().st_uid == UID
        data = os.urandom(200_000)
        h = a.create_for_write(bh, "0-99.chunk", data)
        line = b'{"TransactionBackup":{"first_version":0,"last_version":99,"manifest":"%s"}}\n' % h.encode()
        a.save_metadata_lines("transaction_0-99.meta", [line])
        assert sync_raw(a) == {"metadata/transaction_0-99.meta": line}
        assert a.open_for_read(h) == data
        a.backup_metadata_file("metadata/transaction_0-99.meta")
        assert a.list_metadata_files() == []
        # The sandbox is real: the same wrapper cannot write outside /tmp, even where root could.
        # (probe / itself: the checkout may live under /tmp, which stays writable for the operator)
        probe = subprocess.run([str(base / "as-operator"), "touch", "/.casbackup-probe"], capture_output=True)
        assert probe.returncode != 0 and b"Read-only file system" in probe.stderr
        # Everything the operator's processes created is inside the repository, or is the rollback
        # watermark of an encrypted repository (one small file per repository, in the cache dir).
        created = _owned_by(UID, Path("/tmp")) - before
        cache = work / "cache"
        outside = sorted(str(p) for p in created if repo not in p.parents and p != repo
                         and not (thin and (p == helper_dir or helper_dir in p.parents))
                         and not (p == cache or cache in p.parents))
        assert outside == [], outside
        if thin:
            log = "".join(p.read_text() for p in helper_dir.glob("*.log"))
            for op in ("create-for-write", "save-metadata-line", "open-for-read", "list-metadata-files",
                       "backup-metadata-file"):
                assert f"aptos {op}: exit 0" in log, (op, log)
        assert any(p.name.startswith("pins") or "pins" in p.parts for p in created)  # the listing's pin, in the repo
        r = cli("-r", str(repo), "aptos", "status", "--json")  # root reads what uid 6180 wrote
        assert r.code == 0 and json.loads(r.out)["metadata_files"] == 0
    finally:
        _kill_helpers(helper_dir)
        shutil.rmtree(helper_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.parametrize("name", ["s3.yaml", "s3-public.yaml", "gcs.yaml", "azure.yaml"])
def test_helm_configs_are_complete_and_strict(name):
    cfg = yaml.safe_load((HELM / name).read_text())
    assert set(cfg["commands"]) == set(OPS)
    for op, cmd in cfg["commands"].items():
        assert f"exec ${{CASBACKUP_BIN:-casbackup}} -q " in cmd and cmd.rstrip().endswith(f"aptos {op.replace('_', '-')}")
        assert "||" not in cmd
        assert subprocess.run(["bash", "-n", "-c", STRICT + cmd]).returncode == 0


ARGV_ENV = """#!/bin/sh
printf '%s\\n' "$@" > "$OUT"
echo "SAS_KEY=${AZURE_STORAGE_SAS_KEY:-}" >> "$OUT"
"""


@pytest.mark.parametrize("name,chart_env,argv,sas", [
    ("s3.yaml", {"BUCKET": "aptos-backups", "SUB_DIR": "mainnet"}, ["-r", "s3://aptos-backups/mainnet"], ""),
    ("s3.yaml", {"BUCKET": "b1", "SUB_DIR": "x", "R2_ENDPOINT_URL": "https://acct.r2.cloudflarestorage.com"},
     ["-r", "s3://b1/x", "-o", "endpoint=https://acct.r2.cloudflarestorage.com", "-o", "region=auto"], ""),
    ("s3-public.yaml", {"BUCKET": "pub", "SUB_DIR": "t"}, ["-r", "s3://pub/t", "-o", "skip_signature=true"], ""),
    ("gcs.yaml", {"BUCKET": "g1", "SUB_DIR": "s"}, ["-r", "gs://g1/s"], ""),
    ("azure.yaml", {"ACCOUNT": "acct", "CONTAINER": "c1", "SUB_DIR": "s", "SAS": "?sv=2022&sig=abc"},
     ["-r", "az://c1/s", "-o", "account_name=acct"], "sv=2022&sig=abc"),
])
def test_helm_configs_build_the_repository_from_the_chart_env(tmp_path, name, chart_env, argv, sas):
    """The exact argv each config hands casbackup, from the variables the chart sets."""
    fake = tmp_path / "fake"
    fake.write_text(ARGV_ENV)
    fake.chmod(0o755)
    cfg = yaml.safe_load((HELM / name).read_text())
    out = tmp_path / "out"
    env = {**tool_env(), **chart_env, "CASBACKUP_BIN": str(fake), "OUT": str(out)}
    for op, cmd in cfg["commands"].items():
        r = subprocess.run(["bash", "-c", STRICT + cmd], env=env, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, (name, op)
        lines = out.read_text().splitlines()
        assert lines == ["-q", *argv, "aptos", op.replace("_", "-"), f"SAS_KEY={sas}"], (name, op)


@pytest.mark.slow
def test_helm_s3_config_against_moto(moto_endpoint, tmp_path, cli):
    """The s3 config end to end, with only what the chart sets (BUCKET, SUB_DIR, AWS_*)."""
    from aptos_backend_fixtures import S3_TEST_ENV, make_bucket  # loaded by this folder's conftest

    bucket = make_bucket(moto_endpoint)
    env = {k: v for k, v in tool_env().items() if not k.startswith("AWS_")}
    env.update(S3_TEST_ENV, HOME=str(tmp_path), BUCKET=bucket, SUB_DIR="mainnet", AWS_ENDPOINT_URL=moto_endpoint,
               AWS_ALLOW_HTTP="true")
    assert cli("-r", f"s3://{bucket}/mainnet", "init", env=env).code == 0
    a = Adapter(HELM / "s3.yaml", env)
    h = a.create_for_write(a.create_backup("epoch_ending_0-.abcd"), "0-.chunk", b"\x00\x00\x00\x01e")
    a.save_metadata_lines("epoch_ending_0-0.meta", [b'{"EpochEndingBackup":{"first_epoch":0,"last_epoch":0,'
                                                    b'"first_version":0,"last_version":9,"manifest":"m/m"}}\n'])
    assert a.list_metadata_files() == ["metadata/epoch_ending_0-0.meta"]
    assert a.open_for_read(h) == b"\x00\x00\x00\x01e"
