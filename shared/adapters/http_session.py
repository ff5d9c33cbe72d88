"""The process's one pooled HTTP session, shared by the hunting client and the storage clients.

requests consults the environment on every request when `trust_env` is on: it walks every environment variable
for proxy settings and looks for ~/.netrc, about a tenth of the relay's CPU per storage call. The relay's calls
carry their own Authorization and never want .netrc credentials, so when no proxy is configured the environment
is read once, here, instead: the CA bundle variables (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) still apply. When a
proxy is configured (HTTPS_PROXY and friends) the session keeps requests' per-request behaviour, so that
NO_PROXY and the proxy variables work exactly as requests documents them.

The Azure SDKs' calls (queues, blobs, tables: most of the relay's calls per hunt) go over a session of their own,
and the hunting API's over another (`pooled_session()` each). Both callers hand every setting to each call
explicitly (headers, verify, timeouts, no redirects), so when no proxy is configured the session sends each
request straight through its connection pool: it skips requests' general merging of session settings, its cookie
jar, its hooks and its redirect handling, which neither uses. A call whose body is already bytes goes to urllib3
itself, without requests' preparation and response building: about 0.4 ms less CPU per table write, 0.3 ms per
small blob upload (2.7 -> 2.4 ms and 3.3 -> 3.0 ms) and 0.2-0.4 ms per API call (one thread, alternated in the
same run). A request whose pooled connection is reset under it is sent again once (Azurite closes idle
connections after 5 s).
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from datetime import timedelta
from http.client import RemoteDisconnected
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)
from urllib3.util import Timeout

HOST_POOLS = 8        # hosts kept pooled at once: the API, blob, queue and table endpoints, with room to spare
POOL_SIZE = 32        # connections kept per host: above the worker's concurrency and the block uploads
# A URL requests would send as it is: http(s), a host, and a path and query of characters it leaves unquoted.
_QUOTED_URL = re.compile(r"https?://[^/?#\s]+/[A-Za-z0-9\-._~!$%&'()*+,/:;=?@\[\]]*")


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
    """A session that sends what it is given, over requests' default headers, straight through the pooled
    adapter's connection pools: no cookies, auth, hooks or redirects (the Azure SDKs' transport sets
    `allow_redirects=False` and its own headers; a call that asks for any of them goes requests' own way).
    Certificates are verified against `verify` when the call gives one, else the session's (what requests does
    with `trust_env` off).

    A call with a body already in bytes (or text, or none) and a URL already quoted, which is every call the
    storage SDKs make but for streamed uploads, goes to urllib3 directly: the connection pool for its host and
    TLS settings is looked up once and kept, and the response is built from urllib3's without requests'
    preparation, cookie extraction and header copies (about a seventh of a table write's CPU).
    The others are prepared by requests and sent through the same adapter. Both raise requests' exceptions, which
    the SDKs' transport maps to azure-core's.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pools: dict[tuple[str, str, Any, Any], tuple[HTTPAdapter, Any]] = {}

    def request(self, method: str | bytes, url: str | bytes, params: Any = None, data: Any = None,
                headers: Any = None, cookies: Any = None, files: Any = None, auth: Any = None,
                timeout: Any = None, allow_redirects: bool = True, proxies: Any = None, hooks: Any = None,
                stream: bool | None = None, verify: Any = None, cert: Any = None, json: Any = None
                ) -> requests.Response:
        if cookies or auth or hooks or allow_redirects:   # what this session does not do: requests' own way
            return super().request(method, url, params=params, data=data, headers=headers, cookies=cookies,
                                   files=files, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
                                   proxies=proxies, hooks=hooks, stream=stream, verify=verify, cert=cert, json=json)
        verify = self.verify if verify is None else verify
        verify = True if verify is None else verify
        cert = self.cert if cert is None else cert
        as_is = (isinstance(method, str) and isinstance(url, str) and _QUOTED_URL.fullmatch(url) is not None
                 and not (params or files or json or proxies) and _whole_body(data))
        prepared = None if as_is else self._prepare(method, url, params, data, headers, files, json)
        resendable = prepared is None or isinstance(prepared.body, bytes | str | None)
        for tries_left in (1, 0):
            started = time.perf_counter()
            try:
                if prepared is None:
                    response = self._send_direct(str(method).upper(), str(url), data or None, headers, timeout,
                                                 verify, cert)
                else:
                    response = self.get_adapter(prepared.url or "").send(
                        prepared, stream=bool(stream), timeout=timeout, verify=verify, cert=cert,
                        proxies=proxies or {})
                break
            except requests.ConnectionError as error:
                # A pooled connection the server had closed while it idled (Azurite closes them after 5 s): sent
                # again once, on a fresh one, when the body can be sent again. A write that did land is refused
                # the second time (the relay's blob and table writes are create-only or conditional); a queue
                # message may arrive twice, which the relay takes as it takes any redelivery (the job runs once).
                if not tries_left or not _reset_in_flight(error) or not resendable:
                    raise
        response.elapsed = timedelta(seconds=time.perf_counter() - started)   # as requests: up to the head
        if not stream:   # as requests does: the body read now puts the connection back in the pool at once
            _ = response.content
        return response

    def _prepare(self, method: Any, url: Any, params: Any, data: Any, headers: Any, files: Any, json: Any
                 ) -> requests.PreparedRequest:
        merged = CaseInsensitiveDict(self.headers)   # requests' defaults (Connection: keep-alive...), then the call's
        merged.update(headers or {})
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method, url=url, headers=merged, files=files, data=data or {},
                         params=params or {}, json=json)
        return prepared

    def _send_direct(self, method: str, url: str, data: bytes | str | None, headers: Any, timeout: Any,
                     verify: Any, cert: Any) -> requests.Response:
        """What requests' preparation and adapter send for this call (the same headers, Content-Length, timeouts
        and retries), sent by urllib3 itself; urllib3's errors raised as requests' (as its adapter does)."""
        body = data.encode() if isinstance(data, str) else data   # urllib3 sends text as UTF-8 too
        given = dict(headers or {})
        named = {name.lower() for name in given}
        sent = {name: value for name, value in self.headers.items() if name.lower() not in named}
        sent.update(given)
        if "content-length" not in named and (body is not None or method not in ("GET", "HEAD")):
            sent["Content-Length"] = str(len(body or b""))
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        adapter, pool = self._pool(url, verify, cert)
        try:
            raw = pool.urlopen(method, "/" + url.split("/", 3)[3], body=body, headers=sent, redirect=False,
                               assert_same_host=False, preload_content=False, decode_content=False,
                               retries=adapter.max_retries, timeout=Timeout(connect=connect, read=read),
                               chunked=False)
        except (ProtocolError, OSError, ClosedPoolError) as error:
            raise requests.ConnectionError(error) from error
        except MaxRetryError as error:
            reason = error.reason
            if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
                raise requests.ConnectTimeout(error) from error
            if isinstance(reason, ResponseError):
                raise requests.exceptions.RetryError(error) from error
            if isinstance(reason, SSLError):
                raise requests.exceptions.SSLError(error) from error
            raise requests.ConnectionError(error) from error
        except SSLError as error:
            raise requests.exceptions.SSLError(error) from error
        except ReadTimeoutError as error:
            raise requests.ReadTimeout(error) from error
        except InvalidHeader as error:
            raise requests.exceptions.InvalidHeader(error) from error
        response = requests.Response()
        response.status_code, response.raw, response.reason, response.url = raw.status, raw, raw.reason, url
        response.headers = CaseInsensitiveDict(raw.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.connection = adapter
        return response

    def _pool(self, url: str, verify: Any, cert: Any) -> tuple[HTTPAdapter, Any]:
        """The adapter and its connection pool for this URL's scheme, host and TLS settings, looked up once and
        kept. At most HOST_POOLS are kept, as the adapter keeps: past that the session starts again."""
        scheme, _, rest = url.partition("://")
        key = (scheme, rest.partition("/")[0], verify, tuple(cert) if isinstance(cert, list) else cert)
        kept = self._pools.get(key)
        if kept is not None:
            return kept
        if len(self._pools) >= HOST_POOLS:
            self._pools.clear()
        adapter = self.get_adapter(url)
        assert isinstance(adapter, HTTPAdapter)
        placeholder = requests.PreparedRequest()
        placeholder.url = url
        pool = adapter.get_connection_with_tls_context(placeholder, verify, proxies=None, cert=cert)
        adapter.cert_verify(pool, url, verify, cert)   # type: ignore[no-untyped-call]  # a missing CA bundle raises here
        self._pools[key] = (adapter, pool)
        return adapter, pool


def _whole_body(data: Any) -> bool:
    """No body, or one already whole in memory (the SDKs give bytes, or text for JSON)."""
    return data is None or data == {} or isinstance(data, bytes | str)


def _reset_in_flight(error: requests.ConnectionError) -> bool:
    """The connection was reset or closed under the request (not refused, not a timeout)."""
    reason = error.args[0] if error.args else None
    return isinstance(reason, ProtocolError) and isinstance(
        reason.args[1] if len(reason.args) > 1 else None, ConnectionResetError | RemoteDisconnected)


def pooled_session() -> requests.Session:
    """A pooled session: direct when no proxy is configured, else requests' own (see the module's text)."""
    return _pooled(DirectSession() if not urllib.request.getproxies() else requests.Session())


def _pooled(session: requests.Session) -> requests.Session:
    adapter = HTTPAdapter(pool_connections=HOST_POOLS, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if not urllib.request.getproxies():
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return session
