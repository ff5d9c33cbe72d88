"""The HTTP plumbing under every sandbox endpoint: requests in, replies out, keep-alive, streaming, faults.

Route functions take a `Request` and return a `Reply`; `ReplyingHandler` writes the reply. Small bodies go out
with Content-Length in one write; a streamed body is buffered to its first 64 KiB and, if longer, sent with
`Transfer-Encoding: chunked`. A body fault cuts the body after its first part: "reset" closes the socket with
SO_LINGER 0 (the peer sees ECONNRESET), "stall" sleeps before sending the rest.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from sandbox.faults import BodyFault

logger = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
JSON_TYPE = "application/json; charset=utf-8"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Reply:
    status: int
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_TYPE
    body_fault: BodyFault | None = None
    on_sent: Callable[[], None] | None = None     # called once the body is out (CPU accounting)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), dict(headers or {}))


class SandboxHTTPServer(ThreadingHTTPServer):
    """A threading server whose handler threads never block shutdown, with a hook per accepted connection."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128     # the default backlog of 5 drops connections when a relay opens many at once

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 route: Callable[[Request], Reply], on_connection: Callable[[], None] | None = None,
                 stop_event: threading.Event | None = None) -> None:
        super().__init__(address, handler)
        self.route = route
        self.on_connection = on_connection
        self.stop_event = stop_event or threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops the connection or refuses the certificate is routine here, not a traceback.
        logger.debug("connection from %s ended with %r", client_address, sys.exc_info()[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.on_connection is not None:
            self.on_connection()
        super().process_request(request, client_address)


class ReplyingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "HuntRelaySandbox/1.0"
    server: SandboxHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without NODELAY, Nagle and delayed ACKs add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        try:
            body = read_body(self.rfile, self.headers)
        except IncompleteBody:
            self.close_connection = True   # the client is gone; nothing to answer
            return
        request = Request(self.command, url.path, parse_qs(url.query, keep_blank_values=True), self.headers, body)
        try:
            reply = self.server.route(request)
        except Exception:
            logger.exception("sandbox route failed for %s %s", self.command, url.path)
            reply = json_reply(500, {"error": {"code": "InternalServerError", "message": "sandbox fault"}})
        self._send(reply)

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_PATCH = _handle
    do_DELETE = _handle

    def _start(self, reply: Reply, length: int | None) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, reply: Reply) -> None:
        pieces: Iterator[bytes] = iter([reply.body] if isinstance(reply.body, bytes) else reply.body)
        try:
            first, exhausted = _gather(pieces, CHUNK_BYTES)
        except Exception:
            logger.exception("the reply body failed before any byte was sent")
            first, exhausted = b'{"error": {"code": "InternalServerError", "message": "sandbox fault"}}', True
            reply = Reply(500, first)
        try:
            if exhausted:
                self._start(reply, len(first))
                self._write_with_fault(first, reply.body_fault, framed=False)
            else:
                self._start(reply, None)
                if not self._write_with_fault(first, reply.body_fault, framed=True):
                    return
                while True:
                    block, done = _gather(pieces, CHUNK_BYTES)
                    if block:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    if done:
                        break
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            logger.debug("client went away during the reply")
        except Exception:
            # Headers are out: the only honest signal left is a broken body.
            logger.exception("the reply body failed mid-stream")
            self.close_connection = True
        finally:
            if reply.on_sent is not None:
                reply.on_sent()

    def _write_with_fault(self, block: bytes, fault: BodyFault | None, *, framed: bool) -> bool:
        """Writes the first block, cut by the fault if any; False when the connection is gone."""
        def frame(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data) if framed and data else data

        if fault is None or len(block) < 2:
            self.wfile.write(frame(block))
            return True
        half = len(block) // 2
        self.wfile.write(frame(block[:half]))
        if fault.kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return False
        self.server.stop_event.wait(fault.stall_seconds)
        self.wfile.write(frame(block[half:]))
        return True


class IncompleteBody(ConnectionError):
    """The client closed the connection before the whole body arrived (e.g. it was killed mid-send)."""


def read_body(rfile: IO[bytes] | Any, headers: Message) -> bytes:
    """The request body, framed by Content-Length or chunked transfer encoding.

    Raises IncompleteBody when the connection ends before the framing says the body does: such a request was
    never sent, and a server must not act on it."""
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        parts: list[bytes] = []
        while True:
            line = rfile.readline()
            if not line:
                raise IncompleteBody("the connection closed inside a chunked body")
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(_read_exactly(rfile, size))
            rfile.readline()
    length = int(headers.get("Content-Length") or 0)
    return _read_exactly(rfile, length) if length > 0 else b""


def _read_exactly(rfile: IO[bytes] | Any, length: int) -> bytes:
    data = rfile.read(length)
    if len(data) < length:
        raise IncompleteBody(f"the connection closed after {len(data)} of {length} body bytes")
    return bytes(data)


def _gather(pieces: Iterator[bytes], limit: int) -> tuple[bytes, bool]:
    """Joins pieces up to about `limit` bytes; True when the iterator is exhausted."""
    parts: list[bytes] = []
    size = 0
    for piece in pieces:
        parts.append(piece)
        size += len(piece)
        if size >= limit:
            return b"".join(parts), False
    return b"".join(parts), True
