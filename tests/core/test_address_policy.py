"""Where a webhook may go: the pure URL and address decisions (shared/core/address_policy.py)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from shared.core.address_policy import (
    CheckedUrl,
    OutboundPolicy,
    address_refusal,
    check_address,
    check_addresses,
    check_url,
    host_is_allowed,
    redact_url,
)
from shared.core.errors import DestinationRefused

SIG = "sig=Zm9vYmFyU0VDUkVU"
PRODUCTION = OutboundPolicy(allowed_hosts=frozenset({"*.logic.azure.com", "hooks.example.com"}))
LOCAL_STACK = OutboundPolicy.from_settings(["127.0.0.1"], True, "http://127.0.0.1:41741/msi/token")
LOGIC_APP = (
    "https://prod-12.westeurope.logic.azure.com:443/workflows/0a1b/triggers/manual/paths/invoke"
    f"?api-version=2016-10-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&{SIG}"
)


@pytest.mark.parametrize(
    ("url", "policy", "inline", "host", "port", "target"),
    [
        (LOGIC_APP, PRODUCTION, True, "prod-12.westeurope.logic.azure.com", 443,
         f"/workflows/0a1b/triggers/manual/paths/invoke?api-version=2016-10-01&sp=%2Ftriggers%2Fmanual%2Frun"
         f"&sv=1.0&{SIG}"),
        ("https://HOOKS.Example.com/in", PRODUCTION, True, "hooks.example.com", 443, "/in"),
        ("https://hooks.example.com./in", PRODUCTION, True, "hooks.example.com", 443, "/in"),
        ("https://anything.example.net:8443", PRODUCTION, False, "anything.example.net", 8443, "/"),
        ("https://[2606:4700:4700::1111]/x", PRODUCTION, False, "2606:4700:4700::1111", 443, "/x"),
        ("https://8.8.8.8/x#frag", PRODUCTION, False, "8.8.8.8", 443, "/x"),
        ("http://127.0.0.1:8080/hook", LOCAL_STACK, True, "127.0.0.1", 8080, "/hook"),
    ],
)
def test_a_plain_https_url_is_parsed_into_host_port_and_target(
    url: str, policy: OutboundPolicy, inline: bool, host: str, port: int, target: str
) -> None:
    destination = check_url(url, policy, inline=inline)
    assert (destination.host, destination.port, destination.target) == (host, port, target)


@pytest.mark.parametrize(
    ("url", "policy", "inline", "reason"),
    [
        ("http://hooks.example.com/", PRODUCTION, False, "plain http is refused"),
        ("ftp://hooks.example.com/", PRODUCTION, False, "only https"),
        ("file:///etc/passwd", PRODUCTION, False, "only https"),
        ("gopher://hooks.example.com:70/_x", LOCAL_STACK, False, "only https"),
        ("https://user:pw@hooks.example.com/", PRODUCTION, False, "user name or password"),
        ("https://hooks.example.com@169.254.169.254/", PRODUCTION, False, "user name or password"),
        ("https://evil.example\\@hooks.example.com/", PRODUCTION, False, "backslashes"),
        ("https://hooks.example.com\n.evil.net/", PRODUCTION, False, "control characters"),
        ("https://hooks.exa\tmple.com/", PRODUCTION, False, "control characters"),
        (" https://hooks.example.com/", PRODUCTION, False, "whitespace"),
        ("https://evil.example.net/", PRODUCTION, True, "not on the allowlist"),
        ("https://logic.azure.com/", PRODUCTION, True, "not on the allowlist"),
        ("https://evillogic.azure.com/", PRODUCTION, True, "not on the allowlist"),
        ("https://prod-1.logic.azure.com.evil.net/", PRODUCTION, True, "not on the allowlist"),
        ("https://2130706433/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://0177.0.0.1/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://0x7f.1/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://127.1/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://0x7f000001/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://127.000.000.001/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://010.0.0.1/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://1.2.3.4.5/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://256.1.1.1/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://1.2.3.0x4/", PRODUCTION, False, "unusual IPv4 spelling"),
        ("https://[fe80::1%25eth0]/", PRODUCTION, False, "zone ids"),
        ("https://[::ffff:999.0.0.1]/", PRODUCTION, False, "cannot be parsed"),
        ("https://hooks.example.com:0443/", PRODUCTION, False, "plain form"),
        ("https://hooks.example.com:/", PRODUCTION, False, "plain form"),
        ("https://hooks.example.com:99999/", PRODUCTION, False, "cannot be parsed"),
        ("https://[::1/", PRODUCTION, False, "cannot be parsed"),
        ("https:///path-only", PRODUCTION, False, "not a valid DNS name"),
        ("https://bücher.example/", PRODUCTION, False, "not a valid DNS name"),
        ("https://under_score.example.com/", PRODUCTION, False, "not a valid DNS name"),
        ("https://-leading.example.com/", PRODUCTION, False, "not a valid DNS name"),
        ("https://" + "a" * 4100 + ".com/", PRODUCTION, False, "too long"),
        ("https://localhost:8081/msi/token", OutboundPolicy.from_settings([], False, "http://localhost:8081/msi"),
         False, "managed identity endpoint"),
        ("http://127.0.0.1:41741/", LOCAL_STACK, True, "managed identity endpoint"),
    ],
)
def test_a_url_that_breaks_a_rule_is_refused_with_a_reason_naming_the_rule(
    url: str, policy: OutboundPolicy, inline: bool, reason: str
) -> None:
    with pytest.raises(DestinationRefused) as refused:
        check_url(url + f"?{SIG}", policy, inline=inline)
    assert reason in str(refused.value)
    assert SIG not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (LOGIC_APP, "https://prod-12.westeurope.logic.azure.com:443/workflows/0a1b/triggers/manual/paths/invoke"
                    "?<redacted>"),
        ("https://user:secret@hooks.example.com/a?sig=x#f", "https://<userinfo>@hooks.example.com/a?<redacted>"),
        ("https://hooks.example.com/a#sig=x", "https://hooks.example.com/a"),
        ("https://hooks.example.com/\x1b[31m", "https://hooks.example.com/?[31m"),
        ("https://h.example.com/" + "p" * 300, "https://h.example.com/" + "p" * 178 + "..."),
        ("not a url ?sig=x", "not a url ?<redacted>"),
    ],
)
def test_a_redacted_url_keeps_no_query_no_userinfo_and_no_control_characters(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("prod-12.westeurope.logic.azure.com", True),
        ("PROD-12.westeurope.logic.azure.com.", True),
        ("logic.azure.com", False),
        ("evillogic.azure.com", False),
        ("logic.azure.com.evil.net", False),
        ("hooks.example.com", True),
        ("sub.hooks.example.com", False),
    ],
)
def test_the_allowlist_matches_exact_names_and_star_dot_suffixes_only(host: str, allowed: bool) -> None:
    assert host_is_allowed(host, PRODUCTION.allowed_hosts) is allowed


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("20.42.73.1", None),
        ("2606:4700:4700::1111", None),
        ("2a01:111:f400::1", None),
        ("127.0.0.1", "loopback"),
        ("10.0.0.5", "private address (RFC 1918)"),
        ("172.16.0.1", "RFC 1918"),
        ("192.168.255.255", "RFC 1918"),
        ("172.32.0.1", None),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.128.0.1", None),
        ("169.254.169.254", "instance metadata"),
        ("169.254.0.1", "link-local"),
        ("168.63.129.16", "Azure's platform address"),
        ("0.0.0.0", "0.0.0.0/8"),
        ("0.255.1.1", "0.0.0.0/8"),
        ("224.0.0.251", "multicast"),
        ("240.1.2.3", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.1", "documentation"),
        ("198.19.0.1", "benchmarking"),
        ("192.0.0.9", "IETF protocol"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::ffff:8.8.8.8", "IPv4-mapped IPv6 address embedding 8.8.8.8"),
        ("::ffff:169.254.169.254", "embedding 169.254.169.254, the cloud instance metadata address"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("64:ff9b::a9fe:a9fe", "NAT64 address (64:ff9b::/96) embedding 169.254.169.254"),
        ("64:ff9b:1::a00:5", "local-use NAT64"),
        ("2002:a9fe:a9fe::1", "6to4 address (2002::/16) embedding 169.254.169.254"),
        ("2002:808:808::1", "6to4"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("100::1", "discard-only"),
        ("fd00::1", "unique local"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("4000::1", "reserved"),
    ],
)
def test_every_non_public_address_is_named_for_what_it_is(address: str, reason: str | None) -> None:
    why = address_refusal(ip_address(address))
    if reason is None:
        assert why is None
    else:
        assert why is not None
        assert reason in why


def _destination(url: str, policy: OutboundPolicy = PRODUCTION) -> CheckedUrl:
    return check_url(url, policy, inline=False)


def test_a_name_that_resolves_to_a_public_and_a_private_address_is_refused_for_the_private_one() -> None:
    with pytest.raises(DestinationRefused) as refused:
        check_addresses(["8.8.8.8", "10.0.0.5"], _destination(f"https://hooks.example.com/?{SIG}"), PRODUCTION)
    assert str(refused.value) == (
        "refused webhook URL https://hooks.example.com/?<redacted>: webhook host hooks.example.com resolves to "
        "10.0.0.5, a private address (RFC 1918); only public addresses are allowed"
    )


def test_a_name_that_resolves_to_nothing_is_refused() -> None:
    with pytest.raises(DestinationRefused, match="resolves to no address"):
        check_addresses([], _destination("https://hooks.example.com/"), PRODUCTION)


def test_every_public_address_of_a_name_is_returned_in_order() -> None:
    checked = check_addresses(["8.8.8.8", "2606:4700:4700::1111"], _destination("https://h.example.com/"), PRODUCTION)
    assert checked == (IPv4Address("8.8.8.8"), IPv6Address("2606:4700:4700::1111"))


def test_a_resolver_answer_that_is_not_an_ip_address_is_refused() -> None:
    with pytest.raises(DestinationRefused, match="not an IP address"):
        check_addresses(["hooks.example.com"], _destination("https://hooks.example.com/"), PRODUCTION)


def test_loopback_is_refused_unless_the_local_stack_setting_allows_it() -> None:
    with pytest.raises(DestinationRefused, match="loopback"):
        check_addresses(["127.0.0.1"], _destination("https://127.0.0.1:9000/"), PRODUCTION)
    local = _destination("http://127.0.0.1:9000/", LOCAL_STACK)
    assert check_addresses(["127.0.0.1", "::1"], local, LOCAL_STACK) == (IPv4Address("127.0.0.1"), IPv6Address("::1"))


def test_the_local_stack_setting_allows_loopback_only_never_other_private_addresses() -> None:
    local = _destination("http://receiver.test:9000/", LOCAL_STACK)
    for address in ("10.0.0.5", "::ffff:127.0.0.1", "169.254.169.254"):
        with pytest.raises(DestinationRefused, match="only public addresses"):
            check_addresses([address], local, LOCAL_STACK)


def test_plain_http_to_a_public_address_is_refused_even_on_the_local_stack() -> None:
    with pytest.raises(DestinationRefused, match="plain http is allowed only to a loopback address"):
        check_addresses(["8.8.8.8"], _destination("http://receiver.test/", LOCAL_STACK), LOCAL_STACK)


@pytest.mark.parametrize(
    ("address", "port", "refused"),
    [
        ("127.0.0.1", 41741, True),
        ("127.0.0.2", 41741, True),
        ("::1", 41741, True),
        ("127.0.0.1", 9000, False),
    ],
)
def test_on_the_local_stack_the_identity_endpoints_port_is_refused_on_every_loopback_address(
    address: str, port: int, refused: bool
) -> None:
    identity = frozenset({IPv4Address("127.0.0.1")})
    destination = _destination(f"http://receiver.test:{port}/", LOCAL_STACK)
    if refused:
        with pytest.raises(DestinationRefused, match=r"managed identity endpoint \(IDENTITY_ENDPOINT\)"):
            check_address(address, destination, LOCAL_STACK, identity)
    else:
        assert check_address(address, destination, LOCAL_STACK, identity) == ip_address(address)


def test_an_identity_endpoint_on_a_public_address_is_refused_whatever_the_port() -> None:
    policy = OutboundPolicy.from_settings([], False, "http://identity.example.net:42356/msi/token")
    with pytest.raises(DestinationRefused, match="managed identity endpoint"):
        check_address("20.1.2.3", _destination("https://other.example.com/", policy), policy,
                      frozenset({IPv4Address("20.1.2.3")}))


def test_settings_become_a_policy_with_normalized_hosts_and_the_identity_endpoint_parsed() -> None:
    policy = OutboundPolicy.from_settings([" *.Logic.Azure.com ", "", "hooks.example.com."], False,
                                          "http://127.0.0.1:41741/MSI/token/")
    assert policy == OutboundPolicy(frozenset({"*.logic.azure.com", "hooks.example.com"}), False, "127.0.0.1", 41741)
    assert OutboundPolicy.from_settings([], True, None).identity_host is None


def test_on_the_local_stack_an_identity_endpoint_that_did_not_resolve_still_guards_its_port_on_loopback() -> None:
    with pytest.raises(DestinationRefused, match="managed identity endpoint"):
        check_address("127.0.0.1", _destination("http://receiver.test:41741/", LOCAL_STACK), LOCAL_STACK, frozenset())
