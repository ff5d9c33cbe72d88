"""Destination resolution: configured names, the default, and inline URLs only for allowed hosts."""

from __future__ import annotations

import json

import pytest

from shared.core.errors import DeliveryRefused
from shared.core.settings import load_settings
from shared.delivery.targets import resolve_destination

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
    with pytest.raises(DeliveryRefused):
        resolve_destination("https://hooks.example.org.evil.example/x", SETTINGS)


@pytest.mark.parametrize(("name", "reason"), [
    ("https://evil.example/hook", "not in HUNT_WEBHOOK_ALLOWED_HOSTS"),
    ("nowhere", "unknown destination 'nowhere': configured destinations are archive, soc"),
])
def test_anything_else_is_refused_with_the_reason(name, reason):
    with pytest.raises(DeliveryRefused, match=reason):
        resolve_destination(name, SETTINGS)
