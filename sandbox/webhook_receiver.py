"""A loopback HTTP receiver for webhook deliveries, for tests and the demo.

    receiver = WebhookReceiver().start()
    receiver.replies = [503, 200]          # statuses to answer, in order; then `default_status`
    ... deliver to receiver.url + "/hooks/x" ...
    receiver.wait_for(1)                   # the recorded requests
    receiver.stop()

Every complete request is recorded (method, path, headers, body bytes) before the reply; one whose sender went
away before its body was whole is not, as a real endpoint would not act on it; a reply may be delayed
(`delay_seconds`) and carry extra headers (`reply_headers`, e.g. Retry-After).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sandbox.http_base import IncompleteBody, read_body


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


class _ReceiverHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ReceiverServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        try:
            body = read_body(self.rfile, self.headers)
        except IncompleteBody:
            # A sender killed mid-request: a real endpoint never sees this as a delivery, so neither do we.
            self.close_connection = True
            return
        receiver = self.server.receiver
        status, delay, headers, reply_body = receiver._record(
            ReceivedRequest(self.command, self.path, dict(self.headers.items()), body))
        if delay > 0:
            receiver._stopped.wait(delay)
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply_body)))
            self.end_headers()
            self.wfile.write(reply_body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True   # the sender was killed while it waited for the answer

    do_POST = do_PUT = do_GET = do_PATCH = do_DELETE = _handle


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: WebhookReceiver) -> None:
        super().__init__(("127.0.0.1", receiver.port), _ReceiverHandler)
        self.receiver = receiver


class WebhookReceiver:
    """Records deliveries and answers with queued statuses (then `default_status`)."""

    def __init__(self, port: int = 0, default_status: int = 200) -> None:
        self.port = port
        self.default_status = default_status
        self.replies: list[int] = []
        self.delay_seconds = 0.0
        self.reply_headers: dict[str, str] = {}
        self.reply_body = b'{"ok": true}'
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Condition()
        self._stopped = threading.Event()
        self._server: _ReceiverServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WebhookReceiver:
        self._server = _ReceiverServer(self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _record(self, request: ReceivedRequest) -> tuple[int, float, dict[str, str], bytes]:
        with self._lock:
            self.requests.append(request)
            status = self.replies.pop(0) if self.replies else self.default_status
            self._lock.notify_all()
            return status, self.delay_seconds, dict(self.reply_headers), self.reply_body

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Waits until `count` requests have arrived; returns them all (raises TimeoutError if they do not)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"expected {count} webhook requests, got {len(self.requests)}")
            return list(self.requests)

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
