"""Repository URLs for object stores (s3://, gs://, az://) and their options.

Kept apart from the backend so URL parsing and option mapping can be tested without a network.
Credentials are never options: they come from each store's standard environment variables.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from ..errors import UsageError
from .objectstore import (
    DEFAULT_ATTEMPTS,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    ObjectStoreBackend,
    client_options,
    retry_config,
)

SCHEMES = ("s3", "gs", "az")
_BUCKET_RE = {
    "s3": re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z"),
    "gs": re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]\Z"),
    "az": re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]\Z"),
}
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")  # used with fullmatch; \Z: no "\n"

# Options every cloud scheme accepts, plus per-scheme ones (names as the user types them).
COMMON_OPTIONS = {"timeout", "connect_timeout", "attempts", "allow_http"}
SCHEME_OPTIONS = {
    "s3": {"endpoint", "region", "virtual_hosted_style", "skip_signature"},
    "gs": {"base_url"},
    "az": {"account_name", "endpoint", "use_emulator"},
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class CloudUrl:
    scheme: str
    bucket: str
    prefix: str  # "" or "a/b" (no leading/trailing slash)


def parse_cloud_url(url: str) -> CloudUrl:
    """s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX; refuses anything odd."""
    if not url.isprintable() or any(c.isspace() for c in url):
        # urlsplit silently deletes tabs and newlines ("s3://b/p\n" would become prefix "p").
        raise UsageError(f"{url!r}: a repository URL cannot contain whitespace or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise UsageError(f"unsupported object-store URL {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password or parts.port:
        raise UsageError(f"{url!r}: no user, port, query or fragment allowed in a repository URL (use --option)")
    bucket = parts.hostname or ""
    if parts.netloc != bucket or not _BUCKET_RE[scheme].fullmatch(bucket) or ".." in bucket:
        raise UsageError(f"{url!r}: {bucket!r} is not a valid bucket/container name")
    path = parts.path.strip("/")
    segments = path.split("/") if path else []
    for seg in segments:
        if not _SEGMENT_RE.fullmatch(seg) or seg in (".", ".."):
            raise UsageError(f"{url!r}: invalid prefix segment {seg!r}")
    return CloudUrl(scheme, bucket, "/".join(segments))


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise UsageError(f"option {name}={value!r}: expected true or false")


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value.rstrip("s"))
    except ValueError:
        raise UsageError(f"option {name}={value!r}: expected seconds, e.g. 30") from None
    if not 0 < seconds <= 3600:
        raise UsageError(f"option {name}={value!r}: out of range (0, 3600]")
    return seconds


def is_loopback_url(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class StoreSpec:
    """Everything needed to build the obstore client, computed without touching the network."""

    url: CloudUrl
    config: dict[str, Any]
    timeout: float
    connect_timeout: float
    attempts: int
    allow_http: bool
    unsigned: bool = False  # s3 skip_signature: anonymous requests, so the backend only reads


def store_spec(url: str, options: Mapping[str, str] | None = None,
               env: Mapping[str, str] | None = None) -> StoreSpec:
    """Map a URL, --option values and the environment onto obstore configuration."""
    cu = parse_cloud_url(url)
    options = dict(options or {})
    env = os.environ if env is None else env
    timeout, connect_timeout, attempts = _common_options(cu.scheme, options)

    def pick(option: str, *env_names: str) -> str | None:
        """An explicit --option always wins; then the first environment variable set."""
        if option in options:
            return options[option]
        return next((env[n] for n in env_names if env.get(n)), None)

    env_http = env.get("AWS_ALLOW_HTTP", "") if cu.scheme == "s3" else ""
    allow_http = _bool("allow_http", options.get("allow_http", env_http or "false"))
    config: dict[str, Any] = {}
    unsigned = False
    if cu.scheme == "s3":
        endpoint, unsigned = _s3_config(config, options, pick)
    elif cu.scheme == "gs":
        endpoint = pick("base_url", "GOOGLE_BASE_URL")
        if endpoint:
            config["base_url"] = endpoint
    else:
        endpoint = _azure_config(config, pick, env)
    _check_endpoint(endpoint, allow_http)
    return StoreSpec(cu, config, timeout, connect_timeout, attempts, allow_http, unsigned)


def _common_options(scheme: str, options: Mapping[str, str]) -> tuple[float, float, int]:
    """Refuse unknown or empty options; (timeout, connect_timeout, attempts)."""
    allowed = COMMON_OPTIONS | SCHEME_OPTIONS[scheme]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} for {scheme}:// "
                         f"(known: {', '.join(sorted(allowed))}; credentials come from the environment)")
    timeout = _seconds("timeout", options["timeout"]) if "timeout" in options else DEFAULT_TIMEOUT
    connect_timeout = (_seconds("connect_timeout", options["connect_timeout"]) if "connect_timeout" in options
                       else DEFAULT_CONNECT_TIMEOUT)
    attempts = DEFAULT_ATTEMPTS
    if "attempts" in options:
        try:
            attempts = int(options["attempts"])
        except ValueError:
            raise UsageError(f"option attempts={options['attempts']!r}: expected an integer") from None
        if not 1 <= attempts <= 20:
            raise UsageError("option attempts: expected 1 to 20")
    for name, value in options.items():
        if not value.strip() and name != "allow_http":
            raise UsageError(f"option {name}= is empty: give a value, or leave the option out")
    return timeout, connect_timeout, attempts


def _s3_config(config: dict[str, Any], options: Mapping[str, str],
               pick: Callable[..., str | None]) -> tuple[str | None, bool]:
    """Fill the S3 configuration; (the endpoint, whether requests go unsigned)."""
    # The store itself also reads these variables, and AWS_ENDPOINT_URL_S3 takes precedence
    # over the `endpoint` key there: so the endpoint we chose is set under both keys, and
    # every other value is set explicitly, so nothing in the environment can override it.
    endpoint = pick("endpoint", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
    region = pick("region", "AWS_REGION", "AWS_DEFAULT_REGION")
    if endpoint:
        config["endpoint"] = endpoint
        config["aws_endpoint_url_s3"] = endpoint
    if not region and endpoint:
        region = "us-east-1"  # S3-compatible servers ignore it, but signing needs one
    if region:
        config["region"] = region
        config["default_region"] = region
    config["virtual_hosted_style_request"] = _bool(
        "virtual_hosted_style",
        pick("virtual_hosted_style", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST") or ("false" if endpoint else "true"))
    config["conditional_put"] = "etag"
    unsigned = _bool("skip_signature", options.get("skip_signature", "false"))
    if unsigned:
        # A public bucket read without credentials; no AWS_* variable can turn it on by accident.
        config["skip_signature"] = True
    return endpoint, unsigned


def _azure_config(config: dict[str, Any], pick: Callable[..., str | None], env: Mapping[str, str]) -> str | None:
    """Fill the Azure configuration; the endpoint requests will go to (None: Azure itself)."""
    endpoint = pick("endpoint", "AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT")
    account = pick("account_name", "AZURE_STORAGE_ACCOUNT_NAME")
    if account:
        config["account_name"] = account
    use_emulator = _bool("use_emulator", pick("use_emulator", "AZURE_STORAGE_USE_EMULATOR") or "false")
    config["use_emulator"] = use_emulator
    if endpoint:
        config["endpoint"] = endpoint
    elif use_emulator:
        # obstore then talks to AZURITE_BLOB_STORAGE_URL, or the emulator's default port; check that
        # address against allow_http like any endpoint
        endpoint = env.get("AZURITE_BLOB_STORAGE_URL") or "http://127.0.0.1:10000"
    return endpoint


def _check_endpoint(endpoint: str | None, allow_http: bool) -> None:
    """Plain HTTP only with allow_http, and allow_http only for a loopback endpoint."""
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.hostname:
            raise UsageError(f"endpoint {endpoint!r}: expected http(s)://HOST[:PORT]")
        if ep.scheme == "http" and not allow_http:
            raise UsageError(f"endpoint {endpoint!r} is plain HTTP: pass --option allow_http=true "
                             "(only accepted for loopback test endpoints)")
    if allow_http and (endpoint is None or not is_loopback_url(endpoint)):
        raise UsageError("allow_http is only accepted for a loopback endpoint (127.0.0.1, ::1, localhost); "
                         "credentials and data must not cross a network unencrypted")


def open_cloud(url: str, options: Mapping[str, str] | None = None) -> ObjectStoreBackend:
    spec = store_spec(url, options)
    from obstore.store import AzureStore, GCSStore, S3Store

    cls: Any = {"s3": S3Store, "gs": GCSStore, "az": AzureStore}[spec.url.scheme]
    copts = client_options(spec.timeout, spec.connect_timeout, spec.allow_http)

    def make(max_retries: int) -> Any:
        try:
            return cls(spec.url.bucket, prefix=spec.url.prefix or None, config=spec.config,
                       client_options=copts, retry_config=retry_config(max_retries))
        except Exception as exc:  # obstore raises builtins and its own errors for bad config
            raise UsageError(f"cannot configure {spec.url.scheme}:// store: {str(exc).splitlines()[0]}") from None

    backend = ObjectStoreBackend(make, url, attempts=spec.attempts, cas_by_version=spec.url.scheme == "gs")
    return UnsignedReader(backend) if spec.unsigned else backend  # type: ignore[return-value]


class UnsignedReader:
    """An S3 store read with unsigned requests (skip_signature=true): a public bucket, no credentials.

    Every write is refused here, before a request is sent, with one clear message: an anonymous
    write would fail anyway (or, on a misconfigured bucket, succeed without anyone's name on it).
    Readers on it must not pin (`unsigned` tells the CLI so)."""

    unsigned = True

    def __init__(self, inner: ObjectStoreBackend) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return repr(self._inner)

    def _refuse(self, what: str) -> UsageError:
        return UsageError(f"{self._inner.description}: skip_signature=true sends unsigned requests, which can only "
                          f"read a public bucket, and this command would write ({what}); reads there take --no-pin, "
                          "writes need credentials and no skip_signature")

    def create(self, key: str, data: bytes) -> bool:
        raise self._refuse(f"create {key}")

    def compare_and_swap(self, key: str, expected_etag: str | None, data: bytes) -> str:
        raise self._refuse(f"update {key}")

    def delete(self, key: str) -> None:
        raise self._refuse(f"delete {key}")

    def delete_many(self, keys: Sequence[str]) -> None:
        raise self._refuse(f"delete {len(keys)} keys")

    def now(self) -> float:
        raise self._refuse("a clock probe object")
