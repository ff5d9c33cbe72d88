"""The process's one pooled HTTP session, shared by the hunting client and the storage clients.

requests consults the environment on every request when `trust_env` is on: it walks every environment variable
for proxy settings and looks for ~/.netrc, about a tenth of the relay's CPU per storage call. The relay's calls
carry their own Authorization and never want .netrc credentials, so when no proxy is configured the environment
is read once, here, instead: the CA bundle variables (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) still apply. When a
proxy is configured (HTTPS_PROXY and friends) the session keeps requests' per-request behaviour, so that
NO_PROXY and the proxy variables work exactly as requests documents them.

The Azure SDKs' calls (queues, blobs, tables: most of the relay's calls per hunt) go over a session of their own,
`storage_session()`. The SDKs' transport hands every setting to each call explicitly (headers, verify, timeouts,
no redirects), so when no proxy is configured that session sends each request straight through its connection
pool: it skips requests' general merging of session settings, its cookie jar, its hooks and its redirect
handling, which Azure Storage uses none of and which cost a tenth to a fifth of the CPU of each storage call. A
request whose pooled connection is reset under it is sent again once (Azurite closes idle connections after 5 s).
"""

from __future__ import annotations

import os
import time
import urllib.request
from http.client import RemoteDisconnected
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ProtocolError

HOST_POOLS = 8        # hosts kept pooled at once: the API, blob, queue and table endpoints, with room to spare
POOL_SIZE = 32        # connections kept per host: above the worker's concurrency and the block uploads


def read_capped(response: requests.Response, limit: int, *, max_seconds: float | None = None,
                partial_on_error: bool = False) -> bytes:
    """At most `limit` bytes of the body, read for at most `max_seconds`; the response is closed. An error while
    reading propagates (requests.RequestException, OSError), or with `partial_on_error` ends the read with what
    came (a webhook's status is already known: a broken body only shortens the snippet)."""
    chunks: list[bytes] = []
    size, started = 0, time.monotonic()
    try:
        for chunk in response.iter_content(chunk_size=8192):
            chunks.append(chunk[: limit - size])
            size += len(chunks[-1])
            if size >= limit or (max_seconds is not None and time.monotonic() - started > max_seconds):
                break
    except (requests.RequestException, OSError):
        if not partial_on_error:
            raise
    finally:
        response.close()
    return b"".join(chunks)


class DirectSession(requests.Session):
    """A session whose `request` prepares what it is given, over requests' default headers, and sends it through
    the pooled adapter: no cookies, auth, hooks or redirects (the Azure SDKs' transport sets `allow_redirects=
    False` and its own headers; a call that asks for any of them goes requests' own way). Certificates are
    verified against `verify` when the call gives one, else the session's (what requests does with `trust_env`
    off)."""

    def request(self, method: str | bytes, url: str | bytes, params: Any = None, data: Any = None,
                headers: Any = None, cookies: Any = None, files: Any = None, auth: Any = None,
                timeout: Any = None, allow_redirects: bool = True, proxies: Any = None, hooks: Any = None,
                stream: bool | None = None, verify: Any = None, cert: Any = None, json: Any = None
                ) -> requests.Response:
        if cookies or auth or hooks or allow_redirects:   # what this session does not do: requests' own way
            return super().request(method, url, params=params, data=data, headers=headers, cookies=cookies,
                                   files=files, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
                                   proxies=proxies, hooks=hooks, stream=stream, verify=verify, cert=cert, json=json)
        merged = CaseInsensitiveDict(self.headers)   # requests' defaults (Connection: keep-alive...), then the call's
        merged.update(headers or {})
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=url, headers=merged, files=files, data=data or {},
                         params=params or {}, json=json)
        verify = self.verify if verify is None else verify
        for tries_left in (1, 0):
            try:
                response = self.get_adapter(prepared.url or "").send(
                    prepared, stream=bool(stream), timeout=timeout, verify=True if verify is None else verify,
                    cert=self.cert if cert is None else cert, proxies=proxies or {})
                break
            except requests.ConnectionError as error:
                # A pooled connection the server had closed while it idled (Azurite closes them after 5 s): sent
                # again once, on a fresh one, when the body can be sent again. A write that did land is refused
                # the second time (the relay's blob and table writes are create-only or conditional); a queue
                # message may arrive twice, which the relay takes as it takes any redelivery (the job runs once).
                if not tries_left or not _reset_in_flight(error) or not isinstance(prepared.body, bytes | str | None):
                    raise
        if not stream:   # as requests does: the body read now puts the connection back in the pool at once
            _ = response.content
        return response


def _reset_in_flight(error: requests.ConnectionError) -> bool:
    """The connection was reset or closed under the request (not refused, not a timeout)."""
    reason = error.args[0] if error.args else None
    return isinstance(reason, ProtocolError) and isinstance(
        reason.args[1] if len(reason.args) > 1 else None, ConnectionResetError | RemoteDisconnected)


def storage_session() -> requests.Session:
    """The Azure SDKs' session: direct when no proxy is configured, else requests' own (see the module's text)."""
    return _pooled(DirectSession() if not urllib.request.getproxies() else requests.Session())


def pooled_session() -> requests.Session:
    return _pooled(requests.Session())


def _pooled(session: requests.Session) -> requests.Session:
    adapter = HTTPAdapter(pool_connections=HOST_POOLS, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if not urllib.request.getproxies():
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return session
