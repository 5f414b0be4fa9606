"""moto's threaded server with HTTP/1.1 keep-alive: the same moto application, connections reused.

moto's `ThreadedMotoServer` serves with werkzeug's development server, which closes the connection
after every response (werkzeug sends `Connection: close` and then waits up to 10 ms to drain the
socket). So every SDK call from the stack (pollers, the runtime's workers, the CLI, Step Functions'
Lambda tasks) opened a new TCP connection, and the server started a new thread for it: measured
with `lfr bench --throughput`, that was about half of the CPU of a cheap call (GetQueueUrl: ~5 ms
CPU client + server on this machine). Here a connection serves request after request, as AWS's
endpoints do; each request and response is still handled by moto's own application and request
handler (`MotoRequestHandler.make_environ`).

Kept as werkzeug does it (the handler falls back to werkzeug's own one-request path): chunked
request bodies, and anything that is not HTTP/1.1. A response whose length is not known from its
headers gets a Content-Length; one whose stated length differs from its body closes the connection
after it, so the stream can never desynchronise.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server
from werkzeug.wsgi import LimitedStream

log = logging.getLogger(__name__)

# An idle keep-alive connection's thread ends after this long without a request (the SDKs
# reconnect transparently); also bounds how long a stopped server's connections linger.
IDLE_TIMEOUT_S = 120


class KeepAliveRequestHandler(MotoRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        track = getattr(self.server, "lfr_connections", None)
        if track is not None:
            track.add(self.connection)

    def finish(self) -> None:
        track = getattr(self.server, "lfr_connections", None)
        if track is not None:
            track.discard(self.connection)
        super().finish()

    def log_error(self, format: str, *args: Any) -> None:
        # An idle kept-alive connection reaching IDLE_TIMEOUT_S is a normal close, not an error.
        if not format.startswith("Request timed out"):
            super().log_error(format, *args)

    def run_wsgi(self) -> None:
        length = self.headers.get("Content-Length", "0").strip()
        if (
            self.request_version != "HTTP/1.1"
            or "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            or not length.isdigit()
        ):
            self.close_connection = True
            super().run_wsgi()  # werkzeug's path: one request, then the connection closes
            return
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()
        body_in = LimitedStream(self.rfile, int(length))  # type: ignore[arg-type]  # rfile: a binary stream
        environ["wsgi.input"] = body_in
        started: list[Any] = []
        chunks: list[bytes] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            started[:] = [status, list(headers)]
            return chunks.append

        try:
            result: Iterable[bytes] = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            body_in.exhaust()  # the next request starts right after this one's body
        except Exception:
            log.exception("moto request failed: %s %s", self.command, self.path)
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        status, headers = started
        body = b"".join(chunks)
        code = int(status.split(None, 1)[0])
        no_body = environ["REQUEST_METHOD"] == "HEAD" or 100 <= code < 200 or code in (204, 304)
        stated = [v for k, v in headers if k.lower() == "content-length"]
        if not stated and not no_body:
            headers.append(("Content-Length", str(len(body))))
        elif stated and not no_body and stated[0].strip() != str(len(body)):
            self.close_connection = True
        if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
            self.close_connection = True
        head = "".join(f"{k}: {v}\r\n" for k, v in headers)
        self.wfile.write(f"HTTP/1.1 {status}\r\n{head}\r\n".encode("latin-1") + (b"" if no_body else body))


class KeepAliveMotoServer(ThreadedMotoServer):
    """`ThreadedMotoServer` (moto's application and dispatcher) with `KeepAliveRequestHandler`."""

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        server = make_server(self._ip_address, self._port, app, True, request_handler=KeepAliveRequestHandler)
        server.lfr_connections = set()  # type: ignore[attr-defined]
        self._server = server
        self._server_ready_event.set()
        server.serve_forever()

    def stop(self) -> None:
        server = self._server
        super().stop()
        # A stopped server answers nothing more, on new connections or kept-alive ones.
        for conn in list(getattr(server, "lfr_connections", ())):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

