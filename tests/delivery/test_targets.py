"""Destination resolution: configured names, the default, and inline URLs only for allowed hosts."""

from __future__ import annotations

import base64
import json

import pytest

from shared.app.config import load_settings
from shared.delivery.base import Refused
from shared.delivery.targets import Target, resolve_destination

SETTINGS = load_settings({
    "AzureWebJobsStorage": "UseThis;QueueEndpoint=http://127.0.0.1:1/a",
    "HUNT_DESTINATIONS": json.dumps({"archive": {"type": "blob", "container": "archive"},
                                     "soc": {"type": "webhook", "url": "https://soc.example/hook"}}),
    "HUNT_DEFAULT_DESTINATION": "archive",
    "HUNT_WEBHOOK_ALLOWED_HOSTS": "prod-01.westeurope.logic.azure.com, *.hooks.example.org",
})


def test_no_destination_means_the_default():
    assert resolve_destination(None, SETTINGS).destination.name == "archive"


def test_a_configured_name_is_used_as_configured():
    target = resolve_destination("soc", SETTINGS)
    assert (target.destination.url, target.inline) == ("https://soc.example/hook", False)


def test_an_inline_url_on_the_allowlist_is_accepted_as_inline():
    url = "https://prod-01.westeurope.logic.azure.com/workflows/1/triggers/manual/paths/invoke?sig=abc"
    target = resolve_destination(url, SETTINGS)
    assert (target.destination.url, target.inline) == (url, True)


def test_a_wildcard_allows_subdomains_only():
    assert resolve_destination("https://a.hooks.example.org/x", SETTINGS).inline
    assert isinstance(resolve_destination("https://hooks.example.org.evil.example/x", SETTINGS), Refused)


@pytest.mark.parametrize(("name", "reason"), [
    ("https://evil.example/hook", "not in HUNT_WEBHOOK_ALLOWED_HOSTS"),
    ("nowhere", "unknown destination 'nowhere': configured destinations are archive, soc"),
])
def test_anything_else_is_refused_with_the_reason(name, reason):
    refused = resolve_destination(name, SETTINGS)
    assert isinstance(refused, Refused) and reason in refused.reason


def test_an_inline_url_that_cannot_be_parsed_is_refused_not_raised():
    refused = resolve_destination("https://[not-an-address]/x", SETTINGS)
    assert isinstance(refused, Refused) and "cannot be parsed" in refused.reason


def test_an_inline_url_is_signed_with_the_inline_secrets():
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    settings = load_settings({"AzureWebJobsStorage": "UseThis;QueueEndpoint=http://127.0.0.1:1/a",
                              "HUNT_WEBHOOK_ALLOWED_HOSTS": "hooks.example.org", "HUNT_INLINE_WEBHOOK_SECRETS": secret})
    target = resolve_destination("https://hooks.example.org/x", settings)
    assert isinstance(target, Target) and target.destination.secrets == (secret,)
