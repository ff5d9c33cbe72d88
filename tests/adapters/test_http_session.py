"""The pooled session reads the environment once, unless a proxy is configured (then requests reads it per call)."""

from __future__ import annotations

import pytest

from shared.adapters.http_session import pooled_session

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture
def no_proxy_environment(monkeypatch):
    for name in (*PROXY_VARIABLES, "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_a_proxy_the_environment_is_read_once_and_the_ca_bundle_still_applies(no_proxy_environment):
    no_proxy_environment.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/bundle.pem")
    session = pooled_session()
    assert session.trust_env is False and session.verify == "/etc/ssl/bundle.pem"


def test_without_a_proxy_or_a_bundle_certificates_are_verified_against_the_default_store(no_proxy_environment):
    session = pooled_session()
    assert session.trust_env is False and session.verify is True


def test_with_a_proxy_configured_requests_keeps_reading_the_environment_per_request(no_proxy_environment):
    no_proxy_environment.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = pooled_session()
    assert session.trust_env is True
    assert session.merge_environment_settings("https://api.security.microsoft.com/x", {}, None, None, None)[
        "proxies"]["https"] == "http://proxy.example:3128"
