"""The process's one pooled HTTP session, shared by the hunting client and the storage clients.

requests consults the environment on every request when `trust_env` is on: it walks every environment variable
for proxy settings and looks for ~/.netrc, about a tenth of the relay's CPU per storage call. The relay's calls
carry their own Authorization and never want .netrc credentials, so when no proxy is configured the environment
is read once, here, instead: the CA bundle variables (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE) still apply. When a
proxy is configured (HTTPS_PROXY and friends) the session keeps requests' per-request behaviour, so that
NO_PROXY and the proxy variables work exactly as requests documents them.
"""

from __future__ import annotations

import os
import time
import urllib.request

import requests
from requests.adapters import HTTPAdapter

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


def pooled_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=HOST_POOLS, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if not urllib.request.getproxies():
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return session
