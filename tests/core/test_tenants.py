"""HUNT_TENANTS and HUNT_DEFAULT_TENANT read by the real settings loader: every problem names the tenant and the
field; without HUNT_TENANTS nothing changes."""

from __future__ import annotations

import json

import pytest

from shared.app.config import load_settings
from shared.core.errors import SettingsError
from shared.core.tenants import scope_of
from tests.core.test_settings import STORAGE

DESTINATIONS = {"a-results": {"type": "blob", "container": "a-results"},
                "b-results": {"type": "blob", "container": "b-results"},
                "b-hook": {"type": "webhook", "url": "https://soc.b.example/hook"}}
GUID_A, GUID_B = "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7002"


def settings(tenants: object, **extra: str):
    return load_settings({**STORAGE, "HUNT_DESTINATIONS": json.dumps(DESTINATIONS),
                          "HUNT_DEFAULT_DESTINATION": "a-results",
                          "HUNT_TENANTS": tenants if isinstance(tenants, str) else json.dumps(tenants), **extra})


GOOD = {"a": {"tenant_id": GUID_A, "auth": "federated", "client_id": "app-1", "destinations": ["a-results"],
              "quota": "10/1m,100/1h", "api": "graph"},
        "b": {"tenant_id": GUID_B, "auth": "client_secret", "client_id": "app-1", "secret_setting": "B_SECRET",
              "destinations": ["b-results", "b-hook"], "webhook_allowed_hosts": ["SOC.B.example"]}}


def test_tenants_are_read_with_their_identity_quota_and_destinations():
    loaded = settings(GOOD, B_SECRET="s3cret", HUNT_DEFAULT_TENANT="a")
    a, b = loaded.tenants["a"], loaded.tenants["b"]
    assert (a.auth, a.quota_windows, a.api, a.destinations) == ("federated", ((10, 60), (100, 3600)), "graph",
                                                              ("a-results",))
    assert (b.auth, b.secret, b.webhook_allowed_hosts, b.destinations[0]) == (
        "client_secret", "s3cret", frozenset({"soc.b.example"}), "b-results")
    assert loaded.default_tenant == "a" and a.scope == "tenants/a/" and scope_of(None) == ""
    assert "s3cret" not in repr(loaded)


def test_without_hunt_tenants_there_is_only_the_home_tenant():
    loaded = load_settings(STORAGE)
    assert (dict(loaded.tenants), loaded.default_tenant) == ({}, None)


@pytest.mark.parametrize(("tenants", "extra", "message"), [
    ("{not json", {}, "HUNT_TENANTS is not valid JSON"),
    ([], {}, "HUNT_TENANTS must be a non-empty JSON object"),
    ({"A b": GOOD["a"]}, {}, "HUNT_TENANTS.A b: a tenant name"),
    ({"a": {**GOOD["a"], "tennant_id": "x"}}, {}, "HUNT_TENANTS.a.tennant_id: unknown field"),
    ({"a": {**GOOD["a"], "tenant_id": "not a tenant!"}}, {}, "HUNT_TENANTS.a.tenant_id="),
    ({"a": {**GOOD["a"], "auth": "password"}}, {}, "HUNT_TENANTS.a.auth='password' is not allowed"),
    ({"a": {k: v for k, v in GOOD["a"].items() if k != "client_id"}}, {}, "HUNT_TENANTS.a.client_id is required"),
    ({"b": GOOD["b"]}, {}, "HUNT_TENANTS.b.secret_setting: the setting B_SECRET is not set"),
    ({"a": {**GOOD["a"], "secret_setting": "X"}}, {}, "HUNT_TENANTS.a.secret_setting is only for auth"),
    ({"a": {**GOOD["a"], "quota": "lots"}}, {}, "HUNT_TENANTS.a.quota: 'lots' is not CALLS/DURATION"),
    ({"a": {**GOOD["a"], "api": "sentinel"}}, {}, "HUNT_TENANTS.a.api='sentinel' is not allowed"),
    ({"a": {**GOOD["a"], "destinations": ["nowhere"]}}, {}, "HUNT_TENANTS.a.destinations: 'nowhere' is not one"),
    ({"a": {**GOOD["a"], "destinations": []}}, {}, "HUNT_TENANTS.a.destinations is required"),
    ({"a": GOOD["a"], "c": {**GOOD["a"], "tenant_id": GUID_B}}, {}, "'a-results' is already tenant 'a''s"),
    ({"a": {**GOOD["a"], "webhook_allowed_hosts": "soc.example"}}, {}, "HUNT_TENANTS.a.webhook_allowed_hosts must"),
    ({"a": GOOD["a"]}, {"HUNT_DEFAULT_TENANT": "z"}, "HUNT_DEFAULT_TENANT='z' is not one of HUNT_TENANTS"),
])
def test_each_problem_names_the_tenant_and_the_field(tenants, extra, message):
    with pytest.raises(SettingsError) as refused:
        settings(tenants, **extra)
    assert message in str(refused.value)


def test_a_default_tenant_needs_hunt_tenants():
    with pytest.raises(SettingsError) as refused:
        load_settings({**STORAGE, "HUNT_DEFAULT_TENANT": "a"})
    assert "HUNT_TENANTS is not set" in str(refused.value)


def test_home_is_not_a_customer_tenants_name():
    from shared.core.settings import parse_quota_windows, parse_runtime_budget
    from shared.core.tenants import parse_tenants

    problems: list[str] = []
    spec = {"home": {"tenant_id": "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", "auth": "federated",
                     "client_id": "a1b2c3d4-0000-4000-8000-00000000abcd", "destinations": ["out"]}}
    assert parse_tenants(spec, setting=lambda name: None, destinations={"out": object()},
                         parse_windows=parse_quota_windows, problems=problems, parse_budget=parse_runtime_budget) == {}
    assert len(problems) == 1 and "'home'" in problems[0]
