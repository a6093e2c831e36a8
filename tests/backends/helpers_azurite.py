"""Azurite (Microsoft's Azure Blob emulator) for the conformance suite: find it, and make containers.

Azurite comes from the npm registry into a project-local cache folder (`.ci/run` installs it;
nothing global). Containers are created with one SharedKey-signed request, so the tests need
no Azure SDK. The account and key are Azurite's published development account.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import urllib.request
from email.utils import formatdate
from pathlib import Path

ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; valid only for the emulator).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
API_VERSION = "2021-08-06"


def cache_dir() -> Path:
    """Where `.ci/run` installs Azurite (`npm install --prefix DIR azurite`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "casbackup-tests" / "azurite"


def find_azurite_blob() -> str | None:
    explicit = os.environ.get("CASBACKUP_AZURITE_BLOB")
    if explicit:
        return explicit
    local = cache_dir() / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def server_command(binary: str, port: int) -> list[str]:
    """Loopback only, in memory, no telemetry (Azurite otherwise phones home)."""
    return [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
            "--disableTelemetry", "--skipApiVersionCheck", "--loose", "--silent"]


def make_container(account_url: str, name: str | None = None) -> str:
    """PUT ?restype=container, signed with the development key (Azure SharedKey scheme)."""
    name = name or f"casb-{secrets.token_hex(6)}"
    date = formatdate(usegmt=True)
    # verb, then 11 standard headers (all empty), then x-ms-* headers and the resource
    to_sign = ("PUT\n" + "\n" * 11 + f"x-ms-date:{date}\nx-ms-version:{API_VERSION}\n"
               f"/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container")
    sig = base64.b64encode(hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    req = urllib.request.Request(f"{account_url}/{name}?restype=container", method="PUT", headers={"Content-Length": "0",
        "x-ms-date": date, "x-ms-version": API_VERSION, "Authorization": f"SharedKey {ACCOUNT}:{sig}"})
    urllib.request.urlopen(req, timeout=10).close()
    return name
