"""SSRF: a webhook URL must never open a connection to a refused address (shared/adapters/outbound.py, real
sockets).

Every test records each connection attempt at the socket layer (`socket.socket.connect`, `connect_ex`,
`socket.create_connection`) and each `getaddrinfo` call. The recorder also refuses anything that is not loopback,
so that even a broken sender could not reach another address from here. Receivers are real HTTP(S) servers on
127.0.0.1; names are resolved by the sender's injected resolver, never by DNS.
"""

from __future__ import annotations

import datetime
import re
import socket
import ssl
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.adapters.outbound import SafeSender, Timeouts, resolve_with_getaddrinfo
from shared.core.address_policy import OutboundPolicy
from shared.core.errors import DeliveryFailed, DestinationRefused

SECRET = "c2VjcmV0LXNhcy1zaWduYXR1cmU"
PRODUCTION = OutboundPolicy.from_settings(["*.logic.azure.com"], False, "http://localhost:8081/msi/token")


# --- the socket-layer recorder -------------------------------------------------------------------------------------


@dataclass
class SocketLog:
    connects: list[tuple[str, int]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> SocketLog:
    log = SocketLog()
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create_connection, real_getaddrinfo = socket.create_connection, socket.getaddrinfo

    def guard(address: Any) -> None:
        host, port = str(address[0]), int(address[1])
        log.connects.append((host, port))
        if not ip_address(host.partition("%")[0]).is_loopback:
            raise ConnectionRefusedError(f"test guard: no connection to {host} from the tests")

    def connect(sock: socket.socket, address: Any) -> None:
        guard(address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        guard(address)
        return real_connect_ex(sock, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        guard(address)
        return real_create_connection(address, *args, **kwargs)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        log.lookups.append(str(host))
        try:
            ip_address(str(host))
        except ValueError:
            raise socket.gaierror(f"test guard: no DNS lookup of {host!r} from the tests") from None
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return log


class FakeResolver:
    """Answers from a table; each call is counted. A list of answers per name is served one per call (rebinding)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self._answers = answers
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        served = self._answers.get(host)
        if not served:
            raise socket.gaierror(f"no such test name {host}")
        return served.pop(0) if len(served) > 1 else served[0]


# --- loopback receivers ------------------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and answers with a set status, headers and body."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.status, self.headers, self.body = 200, {"Content-Type": "application/json"}, b'{"ok": true}'
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so that tests can see pooled connections reused

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(Received("POST", self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Quiet:  # a client that aborts (a refused certificate, a timeout) is expected here, not an error
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        server_class = type("Server", (Quiet, HTTPServer if tls else ThreadingHTTPServer), {})
        self.server = server_class(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # type: ignore[attr-defined]
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(tls: ssl.SSLContext | None = None) -> Receiver:
        started.append(Receiver(tls))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


# --- certificates made at test time ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalCA:
    path: Path
    issue: Callable[[str], ssl.SSLContext]  # a server context presenting a certificate for that DNS name


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
                 issuer_key: ec.EllipticCurvePrivateKey, dns_name: str | None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if dns_name is None:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    folder = tmp_path_factory.mktemp("ssrf-ca")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Hunt Relay test CA", ca_key, None, ca_key, None)
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issue(dns_name: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(dns_name, key, ca, ca_key, dns_name)
        cert_path, key_path = folder / f"{dns_name}.pem", folder / f"{dns_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        return context

    return LocalCA(ca_path, issue)


# --- the SSRF table ------------------------------------------------------------------------------------------------

PUBLIC = "8.8.8.8"  # never connected to: every row is refused before any connection
NAMES: dict[str, list[list[str]]] = {
    "private.example.com": [["10.0.0.5"]],
    "metadata.example.com": [["169.254.169.254"]],
    "mixed.example.com": [[PUBLIC, "10.0.0.5"]],
    "mixed6.example.com": [["2606:4700:4700::1111", "fd00::1"]],
    "mapped.example.com": [["::ffff:169.254.169.254"]],
    "nat64.example.com": [["64:ff9b::a9fe:a9fe"]],
    "wireserver.example.com": [["168.63.129.16"]],
    "loopback.example.com": [["127.0.0.1"]],
    "cgnat.example.com": [["100.100.100.200"]],
    "empty.example.com": [[]],
    "garbage.example.com": [["not-an-address"]],
    "prod-1.westus.logic.azure.com": [["172.20.0.4"]],
    "localhost": [["127.0.0.1", "::1"]],  # the identity endpoint's host, resolved once when the sender starts
}

SSRF_TABLE = [
    # IPv4 literals
    ("https://127.0.0.1/", "loopback"),
    ("https://127.8.9.10/", "loopback"),
    ("https://10.0.0.5/", "RFC 1918"),
    ("https://172.16.0.1/", "RFC 1918"),
    ("https://172.31.255.254/", "RFC 1918"),
    ("https://192.168.1.1/", "RFC 1918"),
    ("https://169.254.169.254/metadata/identity/oauth2/token", "instance metadata"),
    ("https://169.254.1.1/", "link-local"),
    ("https://100.64.0.1/", "carrier-grade NAT"),
    ("https://100.127.255.254/", "carrier-grade NAT"),
    ("https://168.63.129.16/machine?comp=goalstate", "Azure's platform address"),
    ("https://0.0.0.0/", "0.0.0.0/8"),
    ("https://0.1.2.3/", "0.0.0.0/8"),
    ("https://224.0.0.1/", "multicast"),
    ("https://239.255.255.250/", "multicast"),
    ("https://240.0.0.1/", "reserved"),
    ("https://255.255.255.255/", "broadcast"),
    ("https://192.0.2.10/", "documentation"),
    ("https://198.51.100.7/", "documentation"),
    ("https://203.0.113.9/", "documentation"),
    ("https://198.18.0.1/", "benchmarking"),
    ("https://192.0.0.8/", "IETF protocol"),
    # odd IPv4 spellings (each means 127.0.0.1 or 10.0.0.1 to some resolver)
    ("https://2130706433/", "unusual IPv4 spelling"),
    ("https://0177.0.0.1/", "unusual IPv4 spelling"),
    ("https://0x7f.1/", "unusual IPv4 spelling"),
    ("https://127.1/", "unusual IPv4 spelling"),
    ("https://0x7f000001/", "unusual IPv4 spelling"),
    ("https://017700000001/", "unusual IPv4 spelling"),
    ("https://127.000.000.001/", "unusual IPv4 spelling"),
    ("https://10.1/", "unusual IPv4 spelling"),
    ("https://0xa9.0xfe.0xa9.0xfe/", "unusual IPv4 spelling"),
    # IPv6 literals
    ("https://[::1]/", "loopback"),
    ("https://[::]/", "unspecified"),
    ("https://[::ffff:127.0.0.1]/", "IPv4-mapped IPv6 address embedding 127.0.0.1"),
    ("https://[::ffff:a9fe:a9fe]/", "IPv4-mapped IPv6 address embedding 169.254.169.254"),
    ("https://[::ffff:10.0.0.5]/", "embedding 10.0.0.5, a private address"),
    ("https://[::127.0.0.1]/", "IPv4-compatible"),
    ("https://[64:ff9b::a9fe:a9fe]/", "NAT64 address (64:ff9b::/96) embedding 169.254.169.254"),
    ("https://[64:ff9b:1::a00:5]/", "local-use NAT64"),
    ("https://[2002:a9fe:a9fe::1]/", "6to4 address (2002::/16) embedding 169.254.169.254"),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    ("https://[fc00::1]/", "unique local"),
    ("https://[fd12:3456:789a::1]/", "unique local"),
    ("https://[fe80::1]/", "link-local"),
    ("https://[fe80::1%25eth0]/", "zone ids"),
    ("https://[fec0::1]/", "site-local"),
    ("https://[ff02::1]/", "multicast"),
    ("https://[2001:db8::1]/", "documentation"),
    # names that resolve to refused addresses (through the injected resolver)
    ("https://private.example.com/", "resolves to 10.0.0.5, a private address (RFC 1918)"),
    ("https://metadata.example.com/", "resolves to 169.254.169.254, the cloud instance metadata address"),
    ("https://mixed.example.com/", "resolves to 10.0.0.5"),
    ("https://mixed6.example.com/", "resolves to fd00::1, a unique local address"),
    ("https://mapped.example.com/", "IPv4-mapped IPv6 address embedding 169.254.169.254"),
    ("https://nat64.example.com/", "NAT64"),
    ("https://wireserver.example.com/", "Azure's platform address"),
    ("https://loopback.example.com/", "loopback"),
    ("https://cgnat.example.com/", "carrier-grade NAT"),
    ("https://empty.example.com/", "resolves to no address"),
    ("https://garbage.example.com/", "not an IP address"),
    # URL-level refusals
    ("http://private.example.com/", "plain http is refused"),
    ("http://127.0.0.1:8081/msi/token", "plain http is refused"),
    ("https://localhost:8081/msi/token", "managed identity endpoint"),
    ("https://user:pw@private.example.com/", "user name or password"),
    ("https://private.example.com@169.254.169.254/", "user name or password"),
    ("file:///etc/passwd", "only https"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "only https"),
]


@pytest.mark.parametrize(("url", "reason"), SSRF_TABLE)
def test_a_refused_destination_never_gets_a_connection_or_a_dns_lookup(
    sockets: SocketLog, url: str, reason: str
) -> None:
    resolver = FakeResolver({name: [list(a) for a in answers] for name, answers in NAMES.items()})
    with SafeSender(PRODUCTION, resolver=resolver) as sender, pytest.raises(DestinationRefused) as refused:
        resolver.calls.clear()
        sender.post(f"{url}?sig={SECRET}", b"{}", {"Content-Type": "application/json"}, inline=False)
    assert reason in str(refused.value)
    assert SECRET not in "".join(traceback.format_exception(refused.value))
    assert sockets.connects == []
    assert [host for host in sockets.lookups if not _is_ip(host)] == []
    assert len(resolver.calls) <= 1


@pytest.mark.parametrize(
    "url",
    ["https://evil.example.net/", "https://logic.azure.com/", "https://prod-1.logic.azure.com.evil.net/",
     "https://8.8.8.8/"],
)
def test_an_inline_url_off_the_allowlist_is_refused_before_its_name_is_even_resolved(
    sockets: SocketLog, url: str
) -> None:
    resolver = FakeResolver({"localhost": [["127.0.0.1"]]})
    with SafeSender(PRODUCTION, resolver=resolver) as sender, pytest.raises(DestinationRefused, match="allowlist"):
        resolver.calls.clear()
        sender.post(url, b"{}", {}, inline=True)
    assert resolver.calls == []
    assert sockets.connects == []


def test_an_allowlisted_inline_host_that_resolves_to_a_private_address_is_still_refused(sockets: SocketLog) -> None:
    resolver = FakeResolver({name: [list(a) for a in answers] for name, answers in NAMES.items()})
    with SafeSender(PRODUCTION, resolver=resolver) as sender, pytest.raises(DestinationRefused, match=r"172\.20\.0\.4"):
        sender.post(f"https://prod-1.westus.logic.azure.com/workflows/x?sig={SECRET}", b"{}", {}, inline=True)
    assert sockets.connects == []


def _is_ip(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


# --- the local stack: plain http to loopback, allowed by HUNT_ALLOW_LOOPBACK_HTTP -------------------------------


def _local_policy(identity_port: int = 1) -> OutboundPolicy:
    return OutboundPolicy.from_settings(["receiver.test"], True, f"http://127.0.0.1:{identity_port}/msi/token")


def test_an_allowed_loopback_receiver_gets_the_post_on_the_checked_address(
    sockets: SocketLog, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    resolver = FakeResolver({"receiver.test": [["127.0.0.1"]]})
    with SafeSender(_local_policy(), resolver=resolver) as sender:
        result = sender.post(f"http://receiver.test:{receiver.port}/hooks/in?sig={SECRET}", b'{"id": "job-1"}',
                             {"Content-Type": "application/json", "Host": "evil.example"}, inline=True)
    assert (result.status, 200 <= result.status < 300, result.address, result.body_snippet) == (
        200, True, "127.0.0.1", b'{"ok": true}')
    [request] = receiver.requests
    assert (request.path, request.body) == (f"/hooks/in?sig={SECRET}", b'{"id": "job-1"}')
    assert request.headers["Host"] == f"receiver.test:{receiver.port}"
    assert sockets.connects == [("127.0.0.1", receiver.port)]
    assert resolver.calls == ["receiver.test"]
    assert "receiver.test" not in sockets.lookups


def test_plain_http_to_a_loopback_receiver_is_refused_when_the_setting_is_off(
    sockets: SocketLog, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    with SafeSender(PRODUCTION) as sender, pytest.raises(DestinationRefused, match="plain http is refused"):
        sender.post(f"http://127.0.0.1:{receiver.port}/", b"{}", {}, inline=False)
    assert receiver.requests == []
    assert sockets.connects == []


def test_a_name_is_resolved_once_per_send_so_a_rebinding_answer_is_never_connected_to(
    sockets: SocketLog, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    resolver = FakeResolver({"receiver.test": [["127.0.0.1"], ["10.0.0.5"]]})
    with SafeSender(_local_policy(), resolver=resolver) as sender:
        assert sender.post(f"http://receiver.test:{receiver.port}/", b"{}", {}, inline=True).status == 200
        with pytest.raises(DestinationRefused, match=re.escape("resolves to 10.0.0.5")):
            sender.post(f"http://receiver.test:{receiver.port}/", b"{}", {}, inline=True)
    assert resolver.calls == ["receiver.test", "receiver.test"]
    assert sockets.connects == [("127.0.0.1", receiver.port)]
    assert len(receiver.requests) == 1


def test_a_name_whose_first_answer_is_allowed_but_second_is_private_gets_no_connection_at_all(
    sockets: SocketLog, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    resolver = FakeResolver({"receiver.test": [["127.0.0.1", "10.0.0.5"]]})
    with SafeSender(_local_policy(), resolver=resolver) as sender, pytest.raises(
        DestinationRefused, match=r"10\.0\.0\.5"
    ):
        sender.post(f"http://receiver.test:{receiver.port}/", b"{}", {}, inline=True)
    assert sockets.connects == []
    assert receiver.requests == []


def test_a_redirect_to_the_identity_endpoint_is_not_followed(
    sockets: SocketLog, receivers: Callable[..., Receiver]
) -> None:
    identity, receiver = receivers(), receivers()
    receiver.status = 302
    receiver.headers = {"Location": f"http://127.0.0.1:{identity.port}/msi/token?resource=https://api.security"}
    with SafeSender(_local_policy(identity.port)) as sender:
        result = sender.post(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, inline=False)
    assert (result.status, 200 <= result.status < 300) == (302, False)
    assert identity.requests == []
    assert sockets.connects == [("127.0.0.1", receiver.port)]


def test_a_redirect_to_the_metadata_address_is_not_followed(
    sockets: SocketLog, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    receiver.status = 307
    receiver.headers = {"Location": "http://169.254.169.254/metadata/identity/oauth2/token"}
    with SafeSender(_local_policy()) as sender:
        result = sender.post(f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, inline=False)
    assert (result.status, 200 <= result.status < 300) == (307, False)
    assert sockets.connects == [("127.0.0.1", receiver.port)]


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "localhost"])
def test_the_identity_endpoints_port_is_refused_on_the_local_stack_under_any_loopback_spelling(
    sockets: SocketLog, receivers: Callable[..., Receiver], address: str
) -> None:
    identity = receivers()
    resolver = FakeResolver({"localhost": [["127.0.0.1", "::1"]]})
    with SafeSender(_local_policy(identity.port), resolver=resolver) as sender, pytest.raises(
        DestinationRefused, match="managed identity endpoint"
    ):
        sender.post(f"http://{address}:{identity.port}/msi/token", b"{}", {}, inline=False)
    assert identity.requests == []
    assert sockets.connects == []


def test_an_address_that_refuses_the_connection_falls_through_to_the_next_checked_address(
    sockets: SocketLog, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()  # listens on 127.0.0.1 only: 127.0.0.2 refuses the connection
    resolver = FakeResolver({"receiver.test": [["127.0.0.2", "127.0.0.1"]]})
    with SafeSender(_local_policy(), resolver=resolver) as sender:
        result = sender.post(f"http://receiver.test:{receiver.port}/", b"{}", {}, inline=True)
    assert (200 <= result.status < 300, result.address) == (True, "127.0.0.1")
    assert sockets.connects == [("127.0.0.2", receiver.port), ("127.0.0.1", receiver.port)]


def test_a_receiver_that_is_not_listening_is_a_retryable_failure_without_the_query(sockets: SocketLog) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with SafeSender(_local_policy()) as sender, pytest.raises(DeliveryFailed) as failed:
        sender.post(f"http://127.0.0.1:{port}/hook?sig={SECRET}", b"{}", {}, inline=False)
    assert "could not connect" in str(failed.value)
    assert SECRET not in "".join(traceback.format_exception(failed.value))


def test_a_receiver_that_does_not_answer_in_time_is_a_retryable_failure_without_the_query(
    sockets: SocketLog,
) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with SafeSender(_local_policy(), timeouts=Timeouts(connect=2.0, read=0.2)) as sender, pytest.raises(
            DeliveryFailed, match="ReadTimeout"
        ) as failed:
            sender.post(f"http://127.0.0.1:{port}/hook?sig={SECRET}", b"{}", {}, inline=False)
    assert SECRET not in "".join(traceback.format_exception(failed.value))
    assert sockets.connects == [("127.0.0.1", port)]


def test_a_large_response_body_is_read_only_up_to_the_cap(
    sockets: SocketLog, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    receiver.status, receiver.body = 500, b"x" * 1_000_000
    with SafeSender(_local_policy(), max_body_bytes=1024) as sender:
        result = sender.post(f"http://127.0.0.1:{receiver.port}/", b"{}", {}, inline=False)
    assert (result.status, 200 <= result.status < 300, result.body_snippet) == (500, False, b"x" * 1024)


# --- https: connect to the checked address, verify the certificate for the hostname -------------------------------


def test_https_connects_to_the_checked_address_and_verifies_the_certificate_for_the_hostname(
    sockets: SocketLog, receivers: Callable[..., Receiver], test_ca: LocalCA
) -> None:
    server_context = test_ca.issue("hooks.example.test")
    server_names: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)  # type: ignore[assignment]
    receiver = receivers(tls=server_context)
    resolver = FakeResolver({"hooks.example.test": [["127.0.0.1"]]})
    policy = OutboundPolicy.from_settings(["hooks.example.test"], True, None)  # test-only: loopback over https
    with SafeSender(policy, resolver=resolver, ca_bundle=str(test_ca.path)) as sender:
        first = sender.post(f"https://hooks.example.test:{receiver.port}/in?sig={SECRET}", b"{}", {}, inline=True)
        second = sender.post(f"https://hooks.example.test:{receiver.port}/in", b"{}", {}, inline=True)
    assert (first.status, second.status, first.address) == (200, 200, "127.0.0.1")
    assert server_names[0] == "hooks.example.test"
    assert [r.headers["Host"] for r in receiver.requests] == [f"hooks.example.test:{receiver.port}"] * 2
    assert sockets.connects == [("127.0.0.1", receiver.port)]  # the second POST reused the pooled connection
    assert "hooks.example.test" not in sockets.lookups


def test_https_refuses_a_certificate_issued_for_another_name(
    sockets: SocketLog, receivers: Callable[..., Receiver], test_ca: LocalCA
) -> None:
    receiver = receivers(tls=test_ca.issue("other.example.test"))
    resolver = FakeResolver({"hooks.example.test": [["127.0.0.1"]]})
    policy = OutboundPolicy.from_settings(["hooks.example.test"], True, None)
    with SafeSender(policy, resolver=resolver, ca_bundle=str(test_ca.path)) as sender, pytest.raises(
        DeliveryFailed, match=re.escape("certificate verification failed for hooks.example.test")
    ):
        sender.post(f"https://hooks.example.test:{receiver.port}/in?sig={SECRET}", b"{}", {}, inline=True)
    assert receiver.requests == []
    assert sockets.connects == [("127.0.0.1", receiver.port)]


def test_https_refuses_a_certificate_from_an_unknown_authority(
    sockets: SocketLog, receivers: Callable[..., Receiver], test_ca: LocalCA
) -> None:
    receiver = receivers(tls=test_ca.issue("hooks.example.test"))
    resolver = FakeResolver({"hooks.example.test": [["127.0.0.1"]]})
    policy = OutboundPolicy.from_settings(["hooks.example.test"], True, None)
    with SafeSender(policy, resolver=resolver) as sender, pytest.raises(DeliveryFailed, match="TLS"):
        sender.post(f"https://hooks.example.test:{receiver.port}/in", b"{}", {}, inline=True)
    assert receiver.requests == []


# --- the default resolver and the identity endpoint's own resolution ----------------------------------------------


def test_the_default_resolver_returns_each_address_of_a_name_once() -> None:
    addresses = resolve_with_getaddrinfo("localhost", 443)
    assert addresses
    assert len(addresses) == len(set(addresses))
    assert all(ip_address(a).is_loopback for a in addresses)


def test_an_identity_endpoint_host_that_cannot_be_resolved_is_still_refused_by_name(
    sockets: SocketLog, caplog: pytest.LogCaptureFixture
) -> None:
    policy = OutboundPolicy.from_settings([], False, "http://identity.internal:42356/msi/token")
    with SafeSender(policy, resolver=FakeResolver({})) as sender, pytest.raises(
        DestinationRefused, match="managed identity endpoint"
    ):
        sender.post("https://identity.internal:42356/msi/token", b"{}", {}, inline=False)
    assert "could not resolve the identity endpoint host identity.internal" in caplog.text
    assert sockets.connects == []


def test_an_identity_endpoint_on_a_public_address_is_refused_through_any_name_that_resolves_to_it(
    sockets: SocketLog,
) -> None:
    policy = OutboundPolicy.from_settings([], False, "http://identity.internal:42356/msi/token")
    resolver = FakeResolver({"identity.internal": [["20.1.2.3"]], "alias.example.com": [["20.1.2.3"]]})
    with SafeSender(policy, resolver=resolver) as sender, pytest.raises(
        DestinationRefused, match=re.escape("resolves to 20.1.2.3, the managed identity endpoint")
    ):
        sender.post("https://alias.example.com/", b"{}", {}, inline=False)
    assert sockets.connects == []
