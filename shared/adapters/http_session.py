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
import urllib.request

import requests
from requests.adapters import HTTPAdapter

HOST_POOLS = 8        # hosts kept pooled at once: the API, blob, queue and table endpoints, with room to spare
POOL_SIZE = 32        # connections kept per host: above the worker's concurrency and the block uploads


def pooled_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=HOST_POOLS, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if not urllib.request.getproxies():
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return session
