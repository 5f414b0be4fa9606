"""A fault-injecting HTTP proxy for the embedded AWS endpoint, for fault tests.

Put it between a client and the moto server (e.g. as the Lambda workers' `AWS_ENDPOINT_URL`:
`EmbeddedStack(extra_env={"AWS_ENDPOINT_URL": proxy.url})`), then cut and restore it:

    proxy.fail("dynamodb", mode="503")   # only DynamoDB: 503 ServiceUnavailable
    proxy.fail(None, mode="drop")        # the whole endpoint: connections closed, no response
    proxy.fail("s3", mode="delay", delay_s=3)   # hold each request, then forward it
    proxy.restore()

A request's service is read from its SigV4 credential scope (`.../<region>/<service>/aws4_request`),
so one rule covers every API of a service whatever its protocol (JSON X-Amz-Target, query, REST).
`counts` says how many requests each rule affected, so a test can prove its fault was hit.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

Mode = Literal["503", "drop", "delay"]
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}
_SERVICE_UNAVAILABLE = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailable","message":"injected fault"}'
)


def service_of(headers: dict[str, str]) -> str | None:
    """The AWS service a signed request is for (`dynamodb`, `s3`, `sqs`, ...), or None if unsigned."""
    m = _SCOPE.search(headers.get("authorization", ""))
    return m.group(1) if m else None


@dataclass
class Rule:
    service: str | None  # None: every request
    mode: Mode
    delay_s: float = 0.0
    until: float | None = None  # time.monotonic() after which the rule lapses

    def applies(self, service: str | None, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.service is None or self.service == service


class FaultProxy:
    """Threaded HTTP/1.1 proxy on 127.0.0.1; `target` is the real endpoint (settable after start)."""

    def __init__(self, target: str = "", port: int = 0) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.counts: Counter[str] = Counter()  # "<service|*>:<mode>" -> requests affected
        self.in_flight = 0  # requests currently held by a delay rule
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults

    def fail(
        self, service: str | None, mode: Mode = "503", *, delay_s: float = 0.0, for_s: float | None = None
    ) -> None:
        """From now on, requests for `service` (None: all) fail by `mode`, for `for_s` seconds or until restore."""
        until = None if for_s is None else time.monotonic() + for_s
        with self._lock:
            self._rules.append(Rule(service, mode, delay_s, until))

    def restore(self) -> None:
        with self._lock:
            self._rules.clear()

    def _rule_for(self, service: str | None) -> Rule | None:
        now = time.monotonic()
        with self._lock:
            self._rules = [r for r in self._rules if r.until is None or now < r.until]
            return next((r for r in reversed(self._rules) if r.applies(service, now)), None)

    # -- serving

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        body = _read_body(h, headers)
        service = service_of(headers)
        rule = self._rule_for(service)
        if rule is not None:
            with self._lock:
                self.counts[f"{rule.service or '*'}:{rule.mode}"] += 1
            if rule.mode == "drop":
                h.close_connection = True
                with contextlib.suppress(OSError):
                    h.connection.shutdown(socket.SHUT_RDWR)
                return
            if rule.mode == "503":
                h.send_response(503, "Service Unavailable")
                h.send_header("Content-Type", "application/x-amz-json-1.0")
                h.send_header("Content-Length", str(len(_SERVICE_UNAVAILABLE)))
                h.end_headers()
                h.wfile.write(_SERVICE_UNAVAILABLE)
                return
            with self._lock:
                self.in_flight += 1
            try:
                time.sleep(rule.delay_s)
            finally:
                with self._lock:
                    self.in_flight -= 1
        self._forward(h, headers, body)

    def _forward(self, h: BaseHTTPRequestHandler, headers: dict[str, str], body: bytes) -> None:
        target = urlsplit(self.target)
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
        try:
            out = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
            out["content-length"] = str(len(body))
            conn.request(h.command, h.path, body=body, headers=out)
            resp = conn.getresponse()
            data = resp.read()
        except OSError:
            h.close_connection = True  # the target is gone: the client sees a dropped connection
            return
        finally:
            conn.close()
        try:
            h.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                    h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
        except OSError:
            h.close_connection = True  # the client went away (e.g. its process was killed)


def _read_body(h: BaseHTTPRequestHandler, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(headers.get("content-length") or 0)
    return h.rfile.read(length) if length else b""
