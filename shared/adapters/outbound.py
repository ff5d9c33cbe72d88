"""The webhook sender: resolve the host once, check every address, connect only to an address that was checked.

The URL's host is resolved by one injectable resolver call per send; `shared.core.address_policy` judges the URL and
each address; the request then goes to `scheme://<checked address>:<port>` with the original `Host` header, and
TLS sends SNI for, and verifies the certificate against, the original hostname (the pool's `server_hostname`).
No second lookup happens anywhere, so a name that re-resolves to a private address (DNS rebinding) is never
reached. Redirects are never followed, and proxies from the environment are ignored (a proxy would resolve the
name again). Response bodies are read up to a cap and never logged.

    DeliveryError (shared.core.errors)
    ├── DeliveryRefused
    │   └── DestinationRefused  (shared.core.address_policy) the URL or an address is refused: terminal
    └── DeliveryRetryable
        └── DeliveryFailed      DNS failure, connection error, timeout, TLS failure: worth retrying later

A response with any status is a value (`PostResult`), not an error; only 2xx counts as delivered (a 3xx is a
failure: the redirect is not followed).
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from ipaddress import IPv6Address, ip_address
from typing import TYPE_CHECKING, Any, cast

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.exceptions import MaxRetryError, NewConnectionError

from shared.adapters.http_session import read_capped
from shared.core.address_policy import (
    CheckedUrl,
    IPAddress,
    OutboundPolicy,
    check_addresses,
    check_url,
)
from shared.core.errors import DeliveryFailed

if TYPE_CHECKING:
    from requests.adapters import _HostParams, _PoolKwargs

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]

_MAX_ADDRESSES_TRIED = 3  # each may cost a connect timeout


def resolve_with_getaddrinfo(host: str, port: int) -> list[str]:
    """Every A/AAAA answer for the host, in the resolver's order, without duplicates."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in answers))


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 20.0  # per socket read; also the budget for reading the response body snippet


@dataclass(frozen=True)
class PostResult:
    status: int
    headers: Mapping[str, str]  # case-insensitive (requests' CaseInsensitiveDict)
    body_snippet: bytes  # at most `max_body_bytes`; never log it
    address: str  # the checked address the request was sent to


class _PinnedHostnameAdapter(HTTPAdapter):
    """The request URL names the checked IP address; SNI and certificate verification use the Host header's name.

    `server_hostname` is part of urllib3's pool key, so connections are pooled per (address, port, hostname).
    The SSL context is this adapter's own (check_hostname on), never the process-wide default.
    """

    def __init__(self, ssl_context: ssl.SSLContext, pool_maxsize: int) -> None:
        self._ssl_context = ssl_context
        super().__init__(pool_connections=pool_maxsize, pool_maxsize=pool_maxsize, max_retries=0)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> tuple[_HostParams, _PoolKwargs]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs.pop("ca_certs", None)
            pool_kwargs.pop("ca_cert_dir", None)
            pool_kwargs["cert_reqs"] = "CERT_REQUIRED"
            pool_kwargs["ssl_context"] = self._ssl_context
            # urllib3 takes server_hostname as a pool key; the stubs' TypedDict does not list it.
            cast(dict[str, Any], pool_kwargs)["server_hostname"] = _hostname_of(request.headers["Host"])
        return host_params, pool_kwargs


def _hostname_of(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if ":" in host_header else host_header


class SafeSender:
    """One per process: a pooled session that only ever talks to checked addresses.

    `ca_bundle` replaces the default trust store (certifi's), for tests and private CAs.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        resolver: Resolver | None = None,
        timeouts: Timeouts = Timeouts(),
        max_body_bytes: int = 64 * 1024,
        ca_bundle: str | None = None,
        pool_maxsize: int = 10,
    ) -> None:
        self._policy = policy
        self._resolve = resolver or resolve_with_getaddrinfo
        self._timeouts = timeouts
        self._max_body_bytes = max_body_bytes
        self._identity_addresses = self._resolve_identity_endpoint()
        context = ssl.create_default_context(cafile=ca_bundle or DEFAULT_CA_BUNDLE_PATH)
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies, .netrc or CA bundle from the environment
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # keep no cookies
        self._session.headers["Accept-Encoding"] = "identity"  # the body cap counts bytes on the wire
        adapter = _PinnedHostnameAdapter(context, pool_maxsize)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SafeSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def post(self, url: str, body: bytes, headers: Mapping[str, str], *, inline: bool) -> PostResult:
        """POST `body` to `url`. `inline`: the URL came in a message, so its host must be on the allowlist.

        Raises DestinationRefused (terminal) or DeliveryFailed (retryable); any HTTP status is returned.
        """
        destination = check_url(url, self._policy, inline=inline)
        if destination.literal is not None:
            answers = [str(destination.literal)]
        else:
            try:
                answers = self._resolve(destination.host, destination.port)
            except (OSError, UnicodeError):
                raise DeliveryFailed(url, f"the host {destination.host} could not be resolved") from None
        checked = check_addresses(answers, destination, self._policy, self._identity_addresses)
        unreachable: list[str] = []
        for address in checked[:_MAX_ADDRESSES_TRIED]:
            result = self._post_to(address, destination, body, headers)
            if result is not None:
                return result
            unreachable.append(str(address))
        raise DeliveryFailed(url, f"could not connect to {destination.host} at {', '.join(unreachable)}")

    def _post_to(
        self, address: IPAddress, destination: CheckedUrl, body: bytes, headers: Mapping[str, str]
    ) -> PostResult | None:
        """The response, or None when no connection could be opened (nothing was sent: the next address may try)."""
        netloc = f"[{address}]" if isinstance(address, IPv6Address) else str(address)
        pinned_url = f"{destination.scheme}://{netloc}:{destination.port}{destination.target}"
        send_headers = {name: value for name, value in headers.items() if name.lower() != "host"}
        send_headers["Host"] = destination.host_header
        logger.debug("webhook host %s pinned to checked address %s", destination.host, address)
        try:
            response = self._session.post(
                pinned_url,
                data=body,
                headers=send_headers,
                timeout=(self._timeouts.connect, self._timeouts.read),
                allow_redirects=False,
                stream=True,
            )
        except requests.exceptions.SSLError:
            raise DeliveryFailed(
                destination.url, f"TLS handshake or certificate verification failed for {destination.host}"
            ) from None
        except requests.exceptions.RequestException as error:
            if _never_connected(error):
                return None
            # str(error) would carry the path and query (a SAS signature): name the kind of failure only.
            raise DeliveryFailed(destination.url, f"{type(error).__name__} talking to {destination.host}") from None
        with response:
            snippet = read_capped(response, self._max_body_bytes, max_seconds=self._timeouts.read,
                                  partial_on_error=True)
            return PostResult(response.status_code, response.headers, snippet, str(address))

    def _resolve_identity_endpoint(self) -> frozenset[IPAddress]:
        host = self._policy.identity_host
        if not host:
            return frozenset()
        try:
            return frozenset({ip_address(host)})
        except ValueError:
            pass
        try:
            return frozenset(ip_address(a) for a in self._resolve(host, self._policy.identity_port or 80))
        except (OSError, UnicodeError, ValueError):
            logger.warning("could not resolve the identity endpoint host %s; it is refused by name only", host)
            return frozenset()


def _never_connected(error: requests.exceptions.RequestException) -> bool:
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    reason = error.args[0].reason if error.args and isinstance(error.args[0], MaxRetryError) else None
    return isinstance(reason, NewConnectionError)
