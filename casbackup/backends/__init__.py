"""Backends, and the one function that turns a repository URL into one."""
from __future__ import annotations

from ..errors import UsageError
from .base import Backend, Capabilities, ObjectInfo, validate_key
from .local import LocalBackend
from .memory import MemoryBackend

__all__ = ["Backend", "Capabilities", "ObjectInfo", "LocalBackend", "MemoryBackend", "open_backend", "validate_key"]


def open_backend(url: str, options: dict[str, str] | None = None, create: bool = False) -> Backend:
    """Resolve a repository URL: a plain path or file:// is local disk, the embedded default;
    s3://, gs://, az:// are object stores (obstore); cmd:CONFIG.yaml runs shell commands."""
    options = options or {}
    if not url:
        raise UsageError("no repository given: use -r/--repo or set CASBACKUP_REPO")
    if url.startswith("file://"):
        return LocalBackend(url[len("file://"):], create=create)
    if url.startswith("memory://"):
        return MemoryBackend()
    if url.startswith(("s3://", "gs://", "az://")):
        from .cloud import open_cloud  # obstore is imported only when an object store is used

        return open_cloud(url, options)
    if url.startswith("cmd:"):
        from .command import CommandBackend

        return CommandBackend.from_config(url[len("cmd:"):], options)
    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme is not None:
        raise UsageError(f"unsupported repository URL scheme {scheme!r} in {url!r}")
    return LocalBackend(url, create=create)
