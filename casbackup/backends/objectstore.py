"""Object-store backend (S3, GCS, Azure) through obstore — spec/backends.md.

Create is a single PUT with `If-None-Match: *`; compare-and-swap is a PUT with `If-Match`
(GCS: the object generation). obstore's own retries are switched off for conditional writes:
retrying a conditional PUT whose reply was lost turns our own success into a 412, i.e. a
false conflict. We retry those ourselves, and only when the request provably did not apply
(connect failure, S3's 409 ConditionalRequestConflict, 503 SlowDown); every other failure after
sending raises OutcomeUnknown so the caller reads back before deciding.
"""
from __future__ import annotations

import random
import re
import secrets
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)

from ..errors import BackendError, EtagMismatch, KeyMissing, OutcomeUnknown, WriteRefused
from ..layout import CLOCK_PREFIX
from .base import Capabilities, ObjectInfo, validate_key

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0          # seconds for a whole request, body included
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_ATTEMPTS = 6            # for requests that may safely be repeated
CLOCK_REFRESH = 600.0           # re-measure the storage clock this often (seconds)
DELETE_BATCH = 1000             # keys per batched delete: S3 DeleteObjects takes at most 1000
LIST_CONCURRENCY = 16           # fan-out prefixes listed at once (backends/listing.py)

_STATUS_RE = re.compile(r"status code: (\d{3})")
_CONNECT_RE = re.compile(r"HttpError \{\s*kind: Connect\b")


def _status(exc: BaseException) -> int | None:
    m = _STATUS_RE.search(str(exc))
    return int(m.group(1)) if m else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).split("\n", 1)[0]
    return text[:300]


def _not_applied(exc: BaseException) -> bool:
    """True only when the server provably did not apply a write, so repeating it is safe."""
    text = str(exc)
    if _CONNECT_RE.search(text):
        return True  # the TCP connection was never made
    status = _status(exc)
    if status == 409 and "ConditionalRequestConflict" in text:
        return True  # S3: a concurrent conditional write on the key; AWS says retry
    if (status == 503 and "SlowDown" in text) or status == 429:
        return True  # throttled: rejected before processing
    return False


def _maybe_applied(exc: BaseException) -> bool:
    """A failed write that may still have been applied: the reply was lost, or the server failed
    part-way (5xx, 408). Errors raised before sending (bad config, credentials) are not."""
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    text = str(exc)
    if "token request" in text or "credential" in text.lower():
        return False
    status = _status(exc)
    if status is not None:
        return status >= 500 or status == 408
    return "HTTP error" in text or "Error performing" in text


# Where each store's client looks for credentials when none are configured (instance metadata
# servers, token endpoints). A failure there means "no credentials", whatever status it shows.
_CREDENTIAL_HINTS = ("169.254.169.254", "fd00:ec2::254", "/latest/api/token", "/latest/meta-data",
                     "metadata.google.internal", "/computeMetadata/", "/metadata/identity/oauth2/token",
                     "error getting credentials", "failed to get credential", "credential provider",
                     "no credentials", "missing credentials", "token request")
CREDENTIAL_VARIABLES = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), "
          "or AWS_PROFILE / AWS_WEB_IDENTITY_TOKEN_FILE",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT",
    "az": "AZURE_STORAGE_ACCOUNT_KEY (with AZURE_STORAGE_ACCOUNT_NAME) or AZURE_STORAGE_SAS_KEY",
}


def _is_credential_failure(exc: BaseException) -> bool:
    """The client found no credentials and fell back to a metadata server (which refused)."""
    text = str(exc).lower()
    return any(h.lower() in text for h in _CREDENTIAL_HINTS)


def credentials_message(description: str, op: str, key: str) -> str:
    scheme = description.split("://", 1)[0] if "://" in description else "s3"
    variables = CREDENTIAL_VARIABLES.get(scheme, CREDENTIAL_VARIABLES["s3"])
    return (f"{description}: no storage credentials were found for {op} {key}: set {variables} "
            "(casbackup takes credentials only from the environment)")


def _is_missing_bucket(exc: BaseException) -> bool:
    text = str(exc)
    return "NoSuchBucket" in text or "ContainerNotFound" in text


class ObjectStoreBackend:
    """One backend for every obstore cloud store; `make_store(max_retries)` builds the client."""

    def __init__(self, make_store: Callable[[int], Any], description: str,
                 attempts: int = DEFAULT_ATTEMPTS, sleep: Callable[[float], None] = time.sleep,
                 cas_by_version: bool = False) -> None:
        self.capabilities = Capabilities(conditional_create=True, conditional_update=True)
        self.description = description
        self.location = description  # the repository URL (cloud.open_cloud passes it)
        self._reads = make_store(attempts - 1)   # GET/HEAD/LIST/DELETE: obstore retries them itself
        self._writes = make_store(0)             # conditional PUTs: never retried blindly
        self._attempts = attempts
        self._sleep = sleep
        self._cas_by_version = cas_by_version  # GCS: an update can only be conditioned on a generation
        self._clock_lock = threading.Lock()
        self._clock: tuple[float, float] | None = None  # (storage time - monotonic, measured at)

    def __repr__(self) -> str:
        return f"ObjectStoreBackend({self.description!r})"

    # ---- error mapping -----------------------------------------------------------------

    def _fail(self, op: str, key: str, exc: BaseException) -> BackendError:
        """Map an obstore error that is not a contract outcome to a BackendError."""
        if _is_missing_bucket(exc):
            return BackendError(f"{self.description}: the bucket/container does not exist ({op} {key})")
        if _is_credential_failure(exc):
            return BackendError(credentials_message(self.description, op, key))
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or _status(exc) == 403:
            cls = WriteRefused if op in ("put", "delete") else BackendError
            return cls(f"{self.description}: access denied for {op} {key}: {_first_line(exc)}")
        return BackendError(f"{self.description}: {op} {key} failed: {_first_line(exc)}")

    def _read(self, op: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (FileNotFoundError, NotFoundError) as exc:
            if _is_missing_bucket(exc):
                raise self._fail(op, key, exc) from None
            raise KeyMissing(f"no such key: {key}") from None
        except (BaseError, OSError, ValueError, RuntimeError) as exc:
            raise self._fail(op, key, exc) from None

    def _conditional_put(self, key: str, data: bytes, mode: Any) -> Mapping[str, Any]:
        """One conditional PUT, repeated only while the server provably did not apply it.

        Returns obstore's PutResult; raises the raw AlreadyExists/Precondition error for a real
        412, OutcomeUnknown if the request may have been applied, BackendError otherwise.
        """
        for attempt in range(self._attempts):
            try:
                return obstore.put(self._writes, key, data, mode=mode, use_multipart=False)
            except (AlreadyExistsError, PreconditionError) as exc:
                if _is_missing_bucket(exc):
                    raise self._fail("put", key, exc) from None
                if not _not_applied(exc):
                    status = _status(exc)
                    if status not in (None, 412, 404, 409):
                        raise self._fail("put", key, exc) from None
                    raise
                last: BaseException = exc
            except (FileNotFoundError, NotFoundError) as exc:
                raise self._fail("put", key, exc) from None
            except (PermissionDeniedError, UnauthenticatedError) as exc:
                raise self._fail("put", key, exc) from None
            except (BaseError, OSError, RuntimeError, ValueError) as exc:
                if _is_credential_failure(exc):
                    raise self._fail("put", key, exc) from None  # never sent: no credentials
                if not _not_applied(exc):
                    if not _maybe_applied(exc):
                        raise self._fail("put", key, exc) from None  # refused outright or never sent
                    raise OutcomeUnknown(f"{self.description}: conditional put of {key} sent but its reply was "
                                         f"lost ({_first_line(exc)}); read back to decide") from None
                last = exc
            self._sleep(min(0.05 * 2 ** attempt, 2.0) * random.uniform(0.5, 1.0))
        raise BackendError(f"{self.description}: put {key} kept failing: {_first_line(last)}")

    # ---- the contract ------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        validate_key(key)
        return self._read("get", key, lambda: bytes(obstore.get(self._reads, key).bytes()))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        validate_key(key)
        if length <= 0:
            self.stat(key)
            return b""
        try:
            return self._read("get_range", key,
                              lambda: bytes(obstore.get_range(self._reads, key, start=start, length=length)))
        except BackendError as exc:
            text = str(exc)
            if isinstance(exc, KeyMissing) or ("416" not in text and "Wanted range starting at" not in text):
                raise
            # the range starts at or past the end: S3 answers 416; on Azure, obstore itself refuses
            # the reply ("Wanted range starting at N, but object was only N bytes long")
            info = self.stat(key)
            if start >= info.size:
                return b""
            raise

    def create(self, key: str, data: bytes) -> bool:
        validate_key(key)
        try:
            self._conditional_put(key, data, "create")
            return True
        except (AlreadyExistsError, PreconditionError):
            return False

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        validate_key(key)

        def fetch() -> tuple[bytes, str]:
            result = obstore.get(self._reads, key)
            meta = result.meta
            return bytes(result.bytes()), _encode_version(meta.get("e_tag"), meta.get("version"), key)

        return self._read("get", key, fetch)

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        validate_key(key)
        mode: Any = "create" if expected_etag is None else _decode_version(expected_etag)
        if self._cas_by_version and isinstance(mode, dict) and "version" not in mode:
            # Every etag this backend hands out on GCS carries the object's generation; one without
            # it names no current object, so the swap cannot succeed (obstore would refuse to send it).
            raise EtagMismatch(f"{key} changed (expected {expected_etag}, which names no GCS generation)")
        try:
            result = self._conditional_put(key, data, mode)
        except (AlreadyExistsError, PreconditionError):
            raise EtagMismatch(f"{key} changed (expected {expected_etag})") from None
        return _encode_version(result.get("e_tag"), result.get("version"), key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # obstore lists by whole path segments; list the enclosing "directory" and filter.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""

        def pages() -> Iterator[list[Any]]:
            yield from obstore.list(self._reads, prefix=directory or None, chunk_size=1000)

        it = iter(pages())
        while True:
            try:
                page = self._read("list", prefix or "/", lambda: next(it, None))
            except KeyMissing as exc:  # a listing never reports a missing key
                raise BackendError(f"{self.description}: listing {prefix!r} failed: {exc}") from None
            if page is None:
                return
            for meta in page:
                path = meta["path"]
                if path.startswith(prefix):
                    yield ObjectInfo(path, int(meta["size"]), meta["last_modified"].timestamp())

    def delete(self, key: str) -> None:
        validate_key(key)
        try:
            self._read("delete", key, lambda: obstore.delete(self._reads, key))
        except KeyMissing:
            return  # some stores answer 404 for an absent key: deleting it is still a no-op

    delete_batch_size = DELETE_BATCH
    list_concurrency = LIST_CONCURRENCY

    def delete_many(self, keys: Sequence[str]) -> None:
        """One batched request per up to 1000 keys on S3 (DeleteObjects; obstore splits Azure's
        into its 256-key batches and runs GCS's as concurrent single deletes). Azure and GCS
        answer an absent key with an error that fails the whole call: then each key is deleted
        alone, where 404 is a no-op, so deleting an absent key is never an error."""
        paths = [validate_key(k) for k in keys]
        if not paths:
            return
        try:
            self._read("delete", f"{paths[0]} (+{len(paths) - 1} more)", lambda: obstore.delete(self._reads, paths))
        except KeyMissing:
            for key in paths:
                self.delete(key)

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        meta = self._read("stat", key, lambda: obstore.head(self._reads, key))
        return ObjectInfo(key, int(meta["size"]), meta["last_modified"].timestamp())

    def now(self) -> float:
        """The storage clock: the mtime the store gives a probe object, carried on by monotonic time.

        S3 reports whole seconds, so the reading is the middle of that second; it is refreshed
        every CLOCK_REFRESH seconds.
        """
        with self._clock_lock:
            mono = time.monotonic()
            if self._clock is None or mono - self._clock[1] > CLOCK_REFRESH:
                key = f"{CLOCK_PREFIX}{secrets.token_hex(16)}"
                before = time.monotonic()
                if not self.create(key, b"clock probe"):
                    raise BackendError(f"{self.description}: clock probe {key} unexpectedly existed")
                after = time.monotonic()
                stored = self.stat(key).mtime
                self.delete(key)
                whole_seconds = stored == int(stored)
                self._clock = (stored + (0.5 if whole_seconds else 0.0) - (before + after) / 2, after)
            return self._clock[0] + time.monotonic()

    def close(self) -> None:
        pass


def _encode_version(e_tag: str | None, version: str | None, key: str) -> str:
    """The opaque etag we hand the core: the store's ETag, plus its version/generation if any."""
    if not e_tag and not version:
        raise BackendError(f"the store returned neither an ETag nor a version for {key}; it cannot do compare-and-swap")
    return f"{e_tag or ''}\n{version or ''}"


def _decode_version(token: str) -> dict[str, str]:
    e_tag, _, version = token.partition("\n")
    mode: dict[str, str] = {}
    if e_tag:
        mode["e_tag"] = e_tag
    if version:
        mode["version"] = version
    if not mode:
        raise EtagMismatch("empty etag")
    return mode


def client_options(timeout: float, connect_timeout: float, allow_http: bool) -> dict[str, Any]:
    return {"timeout": timedelta(seconds=timeout), "connect_timeout": timedelta(seconds=connect_timeout),
            "allow_http": allow_http}


def retry_config(max_retries: int) -> dict[str, Any]:
    return {"max_retries": max_retries, "retry_timeout": timedelta(seconds=120),
            "backoff": {"init_backoff": timedelta(milliseconds=50), "max_backoff": timedelta(seconds=5), "base": 2}}
