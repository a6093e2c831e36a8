"""A tiny HTTP proxy in front of an S3 endpoint that injects faults.

It can strip the conditional headers (a store that silently ignores them), answer with an
injected status before forwarding, or forward a request and then drop the connection without
replying (a lost reply: the write happened, the client never hears of it).
"""
from __future__ import annotations

import http.client
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

CONDITIONAL_HEADERS = ("if-match", "if-none-match")


@dataclass
class Fault:
    """What to do with the next `times` requests that `match` (method, path, headers)."""

    match: Callable[[str, str, dict[str, str]], bool]
    action: str  # "drop_after" | "drop_before" | "status" | "pass"
    status: int = 500
    body: bytes = b""
    times: int = 1
    hits: int = 0
    hook: Callable[[], None] | None = None  # runs before the action (e.g. a rival commit)


@dataclass
class ProxyState:
    upstream: str
    strip: tuple[str, ...] = ()  # lower-case request headers to drop, e.g. CONDITIONAL_HEADERS
    faults: list[Fault] = field(default_factory=list)
    clock_skew: float = 0.0  # seconds added to every Last-Modified the store reports
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, outcome)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.hits < f.times and f.match(method, path, headers):
                    f.hits += 1
                    return f
        return None


def _handler(state: ProxyState) -> type[BaseHTTPRequestHandler]:
    up = urlsplit(state.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items()}
            lower = {k.lower(): v for k, v in headers.items()}
            fault = state.take_fault(self.command, self.path, lower)
            if fault is not None and fault.hook is not None:
                fault.hook()
            if fault is not None and fault.action == "drop_before":
                state.log.append((self.command, self.path, "dropped before forwarding"))
                self._drop()
                return
            if fault is not None and fault.action == "status":
                state.log.append((self.command, self.path, f"injected {fault.status}"))
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(fault.body)))
                self.end_headers()
                self.wfile.write(fault.body)
                return
            if state.strip:
                headers = {k: v for k, v in headers.items() if k.lower() not in state.strip}
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
            try:
                conn.request(self.command, self.path, body=body if body or length else None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status, resp_headers = resp.status, resp.getheaders()
            finally:
                conn.close()
            if fault is not None and fault.action == "drop_after":
                state.log.append((self.command, self.path, f"applied ({status}), reply dropped"))
                self._drop()
                return
            state.log.append((self.command, self.path, str(status)))
            self.send_response(status)
            if state.clock_skew:
                resp_headers, data = _skew(resp_headers, data, state.clock_skew)
            for k, v in resp_headers:
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _drop(self) -> None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


def _skew(headers: list[tuple[str, str]], body: bytes, skew: float) -> tuple[list[tuple[str, str]], bytes]:
    """Shift the store's clock: Last-Modified headers and <LastModified> in listings."""
    def shift_http(value: str) -> str:
        return formatdate(parsedate_to_datetime(value).timestamp() + skew, usegmt=True)

    def shift_iso(m: re.Match[bytes]) -> bytes:
        t = datetime.fromisoformat(m.group(1).decode().replace("Z", "+00:00")).timestamp() + skew
        stamp = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return b"<LastModified>" + stamp.encode() + b"</LastModified>"

    headers = [(k, shift_http(v) if k.lower() == "last-modified" else v) for k, v in headers]
    return headers, re.sub(rb"<LastModified>([^<]+)</LastModified>", shift_iso, body)


class FaultProxy:
    def __init__(self, upstream: str, strip: tuple[str, ...] = ()) -> None:
        self.state = ProxyState(upstream, strip)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, fault: Fault) -> Fault:
        with self.state.lock:
            self.state.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.state.lock:
            self.state.faults.clear()
            self.state.log.clear()


def conditional_put(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "PUT" and any(h in headers for h in CONDITIONAL_HEADERS)


def put_to(fragment: str) -> Callable[[str, str, dict[str, str]], bool]:
    return lambda method, path, headers: method == "PUT" and fragment in path
