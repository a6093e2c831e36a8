"""Object-store URLs, options and error mapping that can be checked without a cloud account.

GCS and Azure are verified only this far: URL parsing, option mapping, and (Azure fully, GCS for
reads) the mapping of their HTTP answers, served by a fake server on 127.0.0.1.
"""
from __future__ import annotations

import pytest

from casbackup.backends import open_backend
from casbackup.backends.cloud import is_loopback_url, parse_cloud_url, store_spec
from casbackup.errors import BackendError, EtagMismatch, KeyMissing, OutcomeUnknown, UsageError

from .helpers_faultproxy import Fault, FaultProxy

ANY = lambda m, p, h: True  # noqa: E731
# Azurite's published development-storage key (a documented constant, not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.mark.parametrize("url, scheme, bucket, prefix", [
    ("s3://my-bucket", "s3", "my-bucket", ""),
    ("s3://my-bucket/", "s3", "my-bucket", ""),
    ("s3://my.bucket/a/b/", "s3", "my.bucket", "a/b"),
    ("gs://bkt_1/backups", "gs", "bkt_1", "backups"),
    ("az://container/x", "az", "container", "x"),
])
def test_parse_cloud_url(url: str, scheme: str, bucket: str, prefix: str) -> None:
    cu = parse_cloud_url(url)
    assert (cu.scheme, cu.bucket, cu.prefix) == (scheme, bucket, prefix)


@pytest.mark.parametrize("url", [
    "s3://", "s3://UPPER", "s3://b/../x", "s3://bkt/a/../b", "s3://bkt/a//b/..", "s3://user@bkt/x",
    "s3://bkt:9000/x", "s3://bkt/x?versionId=1", "s3://bkt/x#f", "s3://bkt/.hidden", "az://a--b/x", "s3://b",
])
def test_bad_cloud_urls_are_refused(url: str) -> None:
    with pytest.raises(UsageError):
        parse_cloud_url(url)


def test_s3_options_and_environment() -> None:
    env = {"AWS_ENDPOINT_URL": "https://s3.example.net", "AWS_REGION": "eu-west-1"}
    spec = store_spec("s3://bkt/p", {}, env)
    assert spec.config["endpoint"] == "https://s3.example.net"
    assert spec.config["region"] == "eu-west-1"
    assert spec.config["conditional_put"] == "etag"
    assert spec.config["virtual_hosted_style_request"] is False  # custom endpoints are path-style
    assert spec.allow_http is False
    spec = store_spec("s3://bkt/p", {"endpoint": "http://127.0.0.1:9000", "allow_http": "true", "region": "x",
                                    "timeout": "5", "attempts": "3"}, env)
    assert (spec.config["endpoint"], spec.config["region"], spec.allow_http, spec.timeout, spec.attempts) == \
        ("http://127.0.0.1:9000", "x", True, 5.0, 3)
    assert store_spec("s3://bkt", {}, {}).config["virtual_hosted_style_request"] is True  # AWS itself
    assert store_spec("s3://bkt", {"endpoint": "http://[::1]:9000"}, {"AWS_ALLOW_HTTP": "true"}).allow_http


@pytest.mark.parametrize("options, env, message", [
    ({"endpoint": "http://s3.example.net"}, {}, "plain HTTP"),
    ({"endpoint": "http://s3.example.net", "allow_http": "true"}, {}, "loopback"),
    ({"allow_http": "true"}, {}, "loopback"),
    ({}, {"AWS_ENDPOINT_URL": "http://10.0.0.5:9000", "AWS_ALLOW_HTTP": "true"}, "loopback"),
    ({"endpoint": "ftp://127.0.0.1"}, {}, "http"),
    ({"access_key_id": "AKIA..."}, {}, "unknown option"),
    ({"timeout": "soon"}, {}, "seconds"),
    ({"attempts": "99"}, {}, "attempts"),
    ({"allow_http": "perhaps"}, {}, "true or false"),
])
def test_bad_s3_options_are_refused(options: dict[str, str], env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        store_spec("s3://bkt/p", options, env)


def test_loopback_detection() -> None:
    assert is_loopback_url("http://127.0.0.1:1") and is_loopback_url("http://localhost") and is_loopback_url("http://[::1]:2")
    assert not is_loopback_url("http://127.0.0.1.example.com") and not is_loopback_url("http://10.1.1.1")


def test_gs_and_az_option_mapping() -> None:
    gs = store_spec("gs://bkt/p", {"base_url": "http://127.0.0.1:4443", "allow_http": "true"}, {})
    assert gs.config == {"base_url": "http://127.0.0.1:4443"}
    az = store_spec("az://cont/p", {"account_name": "acct", "use_emulator": "true", "allow_http": "true"}, {})
    assert az.config == {"account_name": "acct", "use_emulator": True}
    with pytest.raises(UsageError, match="unknown option"):
        store_spec("gs://bkt/p", {"endpoint": "https://x"}, {})
    with pytest.raises(UsageError, match="unknown option"):
        store_spec("az://cont/p", {"region": "x"}, {})


def test_gs_and_az_backends_build_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
    for url in ("gs://bkt/p", "az://cont/p"):
        opts = {"account_name": "devstoreaccount1"} if url.startswith("az") else {}
        assert open_backend(url, opts).capabilities.conditional_update


@pytest.fixture
def fake_azure(monkeypatch: pytest.MonkeyPatch):
    """A fake Azure Blob endpoint on 127.0.0.1: every answer is injected by the test."""
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)
    with FaultProxy("http://127.0.0.1:9") as fake:
        backend = open_backend("az://cont/pre", {"account_name": "devstoreaccount1", "endpoint": fake.url,
                                                 "allow_http": "true", "attempts": "2"})
        yield fake, backend


def _azure_error(code: str) -> bytes:
    return f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>m</Message></Error>'.encode()


def test_azure_error_mapping(fake_azure) -> None:  # type: ignore[no-untyped-def]
    fake, b = fake_azure
    fake.add(Fault(ANY, "status", 412, _azure_error("ConditionNotMet")))
    assert b.create("blobs/aa/x", b"1") is False
    assert fake.state.log[-1][:2] == ("PUT", "/cont/pre/blobs/aa/x")
    fake.add(Fault(ANY, "status", 409, _azure_error("BlobAlreadyExists")))
    assert b.create("blobs/aa/x", b"1") is False  # Azure's 409 is a real conflict, not S3's retry hint
    fake.add(Fault(ANY, "status", 412, _azure_error("ConditionNotMet")))
    with pytest.raises(EtagMismatch):
        b.compare_and_swap("root", '"0x8D"\n', b"1")
    fake.add(Fault(ANY, "status", 404, _azure_error("BlobNotFound")))
    with pytest.raises(KeyMissing):
        b.get("root")
    fake.add(Fault(ANY, "status", 404, _azure_error("ContainerNotFound")))
    with pytest.raises(BackendError, match="does not exist") as info:
        b.get("root")
    assert not isinstance(info.value, KeyMissing)
    fake.add(Fault(ANY, "drop_before"))
    with pytest.raises(OutcomeUnknown):
        b.create("blobs/aa/y", b"1")
    fake.add(Fault(ANY, "status", 403, _azure_error("AuthenticationFailed")))
    with pytest.raises(BackendError) as denied:
        b.create("blobs/aa/z", b"1")
    assert not isinstance(denied.value, (OutcomeUnknown, KeyMissing))


def test_gcs_read_error_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    """GCS reads only: writes would fetch an OAuth token from the metadata server (a network call)."""
    monkeypatch.setenv("GOOGLE_SKIP_SIGNATURE", "true")
    with FaultProxy("http://127.0.0.1:9") as fake:
        b = open_backend("gs://bkt/pre", {"base_url": fake.url, "allow_http": "true", "attempts": "1"})
        fake.add(Fault(ANY, "status", 404, b'{"error": {"code": 404, "message": "No such object"}}'))
        with pytest.raises(KeyMissing):
            b.get("root")
        assert fake.state.log[-1][0] == "GET"
