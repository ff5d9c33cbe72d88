"""The portable HTTP server: the front door's handlers (shared.app.http_api) as a WSGI app on waitress.

    python -m shared serve [--port 8080] [--host 127.0.0.1]      the API only, no worker
    python -m shared worker --serve [--port 8080]                 both in one process (the local stack)

Waitress is a production-grade pure-Python WSGI server (a thread pool, no C extension, the same on Linux and
Windows, maintained by the Pylons project): the handlers are short and block on storage, which a thread pool suits,
and it needs nothing beyond the relay's own dependencies. Bodies over the API's limit are refused by waitress itself
(`max_request_body_size`) before any byte reaches a handler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from waitress.server import create_server

from shared.app.http_api import HttpRequest, HuntApi
from shared.core.hunt_request import MAX_QUEUE_MESSAGE_BYTES

logger = logging.getLogger(__name__)

_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
            415: "Unsupported Media Type", 503: "Service Unavailable"}


def wsgi_app(api: HuntApi) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        # One byte past the limit is enough for the handler's 413; the rest is never read.
        body = environ["wsgi.input"].read(min(length, MAX_QUEUE_MESSAGE_BYTES + 1)) if length else b""
        headers = {key[5:].replace("_", "-").lower(): value for key, value in environ.items()
                   if key.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
        request = HttpRequest(environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/",
                              dict(parse_qsl(environ.get("QUERY_STRING") or "")), headers, body,
                              base_url=f"{environ.get('wsgi.url_scheme', 'http')}://{host}")
        response = api.handle(request)
        start_response(f"{response.status} {_REASONS.get(response.status, 'Status')}",
                       [*response.headers.items(), ("Content-Length", str(len(response.body)))])
        return [response.body]

    return application


class ApiServer:
    """The API on a port (0: a free one), served by waitress on a thread of its own until `stop()`."""

    def __init__(self, api: HuntApi, *, host: str = "127.0.0.1", port: int = 8080, threads: int = 8) -> None:
        self._server = create_server(wsgi_app(api), host=host, port=port, threads=threads,
                                     max_request_body_size=4 * MAX_QUEUE_MESSAGE_BYTES, ident="hunt-relay")
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def _run(self) -> None:
        try:
            self._server.run()
        except OSError:   # the socket closed under the loop by stop(): the server is done
            if not self._stopping:
                raise

    def start(self) -> ApiServer:
        self._thread = threading.Thread(target=self._run, name="hunt-relay-http", daemon=True)
        self._thread.start()
        logger.info("HTTP API listening on %s", self.url)
        return self

    def serve_forever(self) -> None:
        logger.info("HTTP API listening on %s", self.url)
        self._server.run()

    def stop(self) -> None:
        self._stopping = True
        self._server.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
