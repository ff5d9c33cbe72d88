"""Where a webhook may be sent: a pure decision over a URL and the addresses its host resolves to.

No I/O here: the adapter (`shared.adapters.outbound`) resolves the name once, asks this module about every address, and
connects only to an address that passed. Messages never echo a URL's query or userinfo: Logic Apps callback URLs
carry their SAS signature (`sig=`) in the query.

    DeliveryRefused (shared.core.errors)
    └── DestinationRefused     this URL or one of its addresses may never be sent to (terminal)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import urlsplit

from shared.core.errors import DestinationRefused, redact_url

IPAddress = IPv4Address | IPv6Address

_MAX_URL_CHARS = 4096
_DEFAULT_PORTS = {"https": 443, "http": 80}
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # a last label like this makes a host an IPv4 spelling
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}")
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")  # urlsplit silently drops tabs and newlines: refuse them

# Named first so that a refusal says which rule applied; `is_global` and friends catch the rest.
# 168.63.129.16 and several IPv6 transition forms count as "global" to Python: hence the explicit rows.
_V4_REFUSED: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), why)
    for net, why in (
        ("255.255.255.255/32", "the broadcast address"),
        ("0.0.0.0/8", "in 0.0.0.0/8 ('this network')"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address (RFC 1918)"),
        ("172.16.0.0/12", "a private address (RFC 1918)"),
        ("192.168.0.0/16", "a private address (RFC 1918)"),
        ("100.64.0.0/10", "a carrier-grade NAT address (100.64.0.0/10)"),
        ("169.254.169.254/32", "the cloud instance metadata address (link-local)"),
        ("169.254.0.0/16", "a link-local address (169.254.0.0/16)"),
        ("168.63.129.16/32", "Azure's platform address (168.63.129.16)"),
        ("192.0.0.0/24", "an IETF protocol assignment (192.0.0.0/24)"),
        ("192.0.2.0/24", "a documentation address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("198.18.0.0/15", "a benchmarking address (198.18.0.0/15)"),
        ("192.88.99.0/24", "a 6to4 relay anycast address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address (240.0.0.0/4)"),
    )
)
_LAST_32_BITS_ARE_IPV4 = (IPv6Network("64:ff9b::/96"), IPv6Network("64:ff9b:1::/48"), IPv6Network("::/96"))
_V6_REFUSED: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), why)
    for net, why in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("::ffff:0:0/96", "an IPv4-mapped IPv6 address"),
        ("::/96", "an IPv4-compatible IPv6 address (deprecated)"),
        ("64:ff9b::/96", "a NAT64 address (64:ff9b::/96)"),
        ("64:ff9b:1::/48", "a local-use NAT64 address (64:ff9b:1::/48)"),
        ("100::/64", "a discard-only address (100::/64)"),
        ("2001::/32", "a Teredo address (2001::/32)"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("2002::/16", "a 6to4 address (2002::/16)"),
        ("fc00::/7", "a unique local address (fc00::/7)"),
        ("fe80::/10", "a link-local address (fe80::/10)"),
        ("fec0::/10", "a site-local address (deprecated)"),
        ("ff00::/8", "a multicast address"),
    )
)


@dataclass(frozen=True)
class OutboundPolicy:
    """What the deployment allows. `allow_loopback` is the local stack's switch (HUNT_ALLOW_LOOPBACK_HTTP): loopback
    addresses become acceptable destinations, over http or https; nothing else ever goes over plain http."""

    allowed_hosts: frozenset[str] = frozenset()
    allow_loopback: bool = False
    identity_host: str | None = None
    identity_port: int | None = None

    @classmethod
    def from_settings(
        cls, allowed_hosts: Iterable[str], allow_loopback_http: bool, identity_endpoint: str | None
    ) -> OutboundPolicy:
        """`allowed_hosts`: exact names or `*.suffix` patterns; `identity_endpoint`: the IDENTITY_ENDPOINT URL."""
        host, port = None, None
        if identity_endpoint:
            parts = urlsplit(identity_endpoint.strip())
            host = (parts.hostname or "").rstrip(".") or None
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
        return cls(frozenset(h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()),
                   allow_loopback_http, host, port)


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the URL-level checks: what to resolve, and what to send once an address is chosen."""

    url: str  # as given; never put it in a message or log line (use `redacted`)
    scheme: str
    host: str  # lowercase, no trailing dot, no brackets around IPv6
    port: int
    target: str  # path and query, as sent on the request line
    literal: IPAddress | None  # the host when it is an IP address: nothing to resolve

    @property
    def redacted(self) -> str:
        return redact_url(self.url)

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if isinstance(self.literal, IPv6Address) else self.host
        return name if self.port == _DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"


def host_is_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Exact match, or `*.example.com` for any name under example.com (not example.com itself)."""
    host = host.lower().rstrip(".")
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in allowed_hosts)


def check_url(url: str, policy: OutboundPolicy, *, inline: bool) -> CheckedUrl:
    """URL-level checks: scheme, userinfo, host spelling, allowlist (inline URLs only), identity endpoint name."""
    if len(url) > _MAX_URL_CHARS or _UNSAFE_CHARS.search(url):
        raise DestinationRefused(url, "the URL is too long or holds whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DestinationRefused(url, "the URL cannot be parsed (malformed host or port)") from None
    scheme = parts.scheme.lower()
    if scheme == "http" and not policy.allow_loopback:
        raise DestinationRefused(url, "plain http is refused; use https")
    if scheme not in _DEFAULT_PORTS:
        raise DestinationRefused(url, "only https URLs are allowed")
    if "@" in parts.netloc:
        raise DestinationRefused(url, "the URL carries a user name or password, which is not allowed")
    hostname = parts.hostname or ""
    written_host = f"[{hostname}]" if ":" in hostname else hostname
    port = port or _DEFAULT_PORTS[scheme]
    if parts.netloc.lower() not in (written_host, f"{written_host}:{port}"):
        raise DestinationRefused(url, "the URL's host and port are not written in a plain form")
    host, literal = _parse_host(url, hostname)
    if inline and not host_is_allowed(host, policy.allowed_hosts):
        raise DestinationRefused(
            url, f"host {host} is not on the allowlist for URLs in messages (HUNT_WEBHOOK_ALLOWED_HOSTS)")
    same_service = port == policy.identity_port or not policy.allow_loopback  # see _reaches_identity_endpoint
    if policy.identity_host and host == policy.identity_host.lower() and same_service:
        raise DestinationRefused(url, "the host is the managed identity endpoint's (IDENTITY_ENDPOINT)")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return CheckedUrl(url, scheme, host, port, target, literal)


def _parse_host(url: str, hostname: str) -> tuple[str, IPAddress | None]:
    host = hostname.lower()
    if ":" in host:  # a bracketed IPv6 literal
        if "%" in host:
            raise DestinationRefused(url, "IPv6 zone ids are not allowed in a webhook URL")
        try:
            return host, IPv6Address(host)
        except ValueError:
            raise DestinationRefused(url, "the host is not a valid IPv6 address") from None
    host = host[:-1] if host.endswith(".") else host
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # Resolvers accept 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 as 127.0.0.1: only dotted decimal passes.
        if not _CANONICAL_IPV4.fullmatch(host):
            raise DestinationRefused(url, f"host {host!r} is an unusual IPv4 spelling; write a.b.c.d in decimal")
        return host, IPv4Address(host)
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise DestinationRefused(url, "the host is not a valid DNS name (letters, digits, hyphens; xn-- for IDN)")
    return host, None


def address_refusal(address: IPAddress) -> str | None:
    """Why this address may never be a webhook destination, or None for a public address."""
    table: Sequence[tuple[IPv4Network | IPv6Network, str]] = (
        _V4_REFUSED if isinstance(address, IPv4Address) else _V6_REFUSED)
    for network, why in table:
        if address in network:
            return why + _embedded_ipv4(address)
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "a multicast, reserved or unspecified address"
    if not address.is_global or address.is_private or address.is_link_local or address.is_loopback:
        return "not a public address"
    return None


def _embedded_ipv4(address: IPAddress) -> str:
    if not isinstance(address, IPv6Address):
        return ""
    inner = address.ipv4_mapped or address.sixtofour
    if inner is None and any(address in net for net in _LAST_32_BITS_ARE_IPV4):
        inner = IPv4Address(int(address) & 0xFFFFFFFF)
    if inner is None:
        return ""
    inner_why = address_refusal(inner)
    return f" embedding {inner}" + (f", {inner_why}" if inner_why else "")


def _is_plain_loopback(address: IPAddress) -> bool:
    return address.is_loopback and not (isinstance(address, IPv6Address) and address.ipv4_mapped)


def check_address(
    address: str, destination: CheckedUrl, policy: OutboundPolicy, identity_addresses: frozenset[IPAddress]
) -> IPAddress:
    """One resolved address: returned parsed when it may be connected to, else DestinationRefused."""
    url = destination.url
    printable = "".join(c if c.isprintable() else "?" for c in address)[:64]
    shown = (f"webhook address {printable}" if destination.literal is not None
             else f"webhook host {destination.host} resolves to {printable}")
    try:
        parsed = ip_address(address)
    except ValueError:
        raise DestinationRefused(url, f"{shown}, which is not an IP address") from None
    identity = f"{shown}, the managed identity endpoint (IDENTITY_ENDPOINT)"
    if policy.allow_loopback and _is_plain_loopback(parsed):
        # The local stack serves the identity endpoint and a receiver on 127.0.0.1: the port tells them apart, on
        # every loopback address (127.0.0.2 and ::1 reach a listener on 0.0.0.0 or [::] too); unresolved = loopback.
        identity_on_loopback = not identity_addresses or any(_is_plain_loopback(a) for a in identity_addresses)
        if destination.port == policy.identity_port and identity_on_loopback:
            raise DestinationRefused(url, identity)
        return parsed
    why = address_refusal(parsed)
    if why is not None:
        raise DestinationRefused(url, f"{shown}, {why}; only public addresses are allowed")
    if parsed in identity_addresses:
        raise DestinationRefused(url, identity)
    if destination.scheme != "https":
        raise DestinationRefused(url, f"{shown}: plain http is allowed only to a loopback address")
    return parsed


def check_addresses(
    addresses: Sequence[str],
    destination: CheckedUrl,
    policy: OutboundPolicy,
    identity_addresses: frozenset[IPAddress] = frozenset(),
) -> tuple[IPAddress, ...]:
    """Every address must pass: one refused address refuses the destination (a name must not mix in a private one)."""
    if not addresses:
        raise DestinationRefused(destination.url, "the host resolves to no address")
    return tuple(check_address(a, destination, policy, identity_addresses) for a in addresses)
