"""The admin path round-trip, the knob merge it rests on, and the Graph directory extension point."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from sandbox.knobs import KnobError, Knobs, merge_knobs
from sandbox.server import Sandbox
from tests.sandbox.sandbox_client import hunt, token_for


def admin(sandbox: Sandbox, action: str, payload: Any = None) -> requests.Response:
    url = f"{sandbox.api_url}/_sandbox/{action}"
    if payload is None and action == "state":
        return requests.get(url, timeout=10)
    return requests.post(url, json=payload if payload is not None else {}, timeout=10)


@pytest.mark.parametrize(("update", "path", "value"), [
    ({"row_cap": 5}, ("row_cap",), 5),
    ({"quota": {"window_seconds": 2}}, ("quota", "window_seconds"), 2.0),
    ({"quota": {"cpu_seconds_per_call": None}}, ("quota", "cpu_seconds_per_call"), None),
    ({"quota": {"throttle_body": "calls_for_key"}}, ("quota", "throttle_body"), "calls_for_key"),
    ({"faults": {"endpoint": "graph", "status_next": 3}}, ("faults", "status_next"), 3),
])
def test_a_knob_update_is_merged_into_the_knobs(update: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    knobs: Any = Knobs()
    merge_knobs(knobs, update)
    for name in path:
        knobs = getattr(knobs, name)
    assert knobs == value


@pytest.mark.parametrize("update", [
    {"no_such_knob": 1},
    {"quota": {"calls_per_window": "many"}},
    {"quota": {"throttle_form": "sometimes"}},
    {"quota": 3},
    {"row_cap": True},
])
def test_a_wrong_knob_update_is_refused_and_changes_nothing(update: dict[str, Any]) -> None:
    knobs = Knobs()
    with pytest.raises(KnobError):
        merge_knobs(knobs, update)
    assert knobs == Knobs()


def test_knobs_set_over_http_take_effect_and_reset_restores_them(sandbox: Sandbox) -> None:
    set_reply = admin(sandbox, "knobs", {"quota": {"calls_per_window": 1}})
    assert set_reply.json()["quota"]["calls_per_window"] == 1
    token = token_for(sandbox, "mde")
    hunt(sandbox, "mde", token=token)
    assert hunt(sandbox, "mde", token=token).status_code == 429

    state = admin(sandbox, "state").json()
    assert state["counters"]["calls"]["mde"] == {"200": 1, "429": 1}
    assert state["counters"]["throttled"] == 1
    assert state["counters"]["tokens_issued"] == {"sandbox-client": 1}
    assert state["counters"]["request_bodies"][0]["body"] == '{"Query": "DeviceProcessEvents | take 1"}'

    after = admin(sandbox, "reset").json()
    assert after["knobs"]["quota"]["calls_per_window"] == 45
    assert after["counters"]["throttled"] == 0
    assert hunt(sandbox, "mde", token=token).status_code == 200


def test_a_bad_knob_over_http_is_a_400_naming_it(sandbox: Sandbox) -> None:
    reply = admin(sandbox, "knobs", {"quota": {"calls_per_minute": 3}})
    assert reply.status_code == 400
    assert "calls_per_minute" in reply.json()["error"]["message"]


def test_an_identity_added_over_http_gets_tokens_with_its_roles_only(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ManagedIdentityCredential

    assert admin(sandbox, "identities", {"client_id": "reader", "roles": ["AdvancedHunting.Read.All"]}).ok
    monkeypatch.setenv("IDENTITY_ENDPOINT", sandbox.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "sandbox")
    credential = ManagedIdentityCredential(client_id="reader")

    m365d = credential.get_token("https://api.security.microsoft.com/.default").token
    mde = credential.get_token("https://api.securitycenter.microsoft.com/.default").token
    assert hunt(sandbox, "m365d", token=m365d).status_code == 200
    assert hunt(sandbox, "mde", token=mde).status_code == 403
    assert any(i["client_id"] == "reader" for i in admin(sandbox, "state").json()["identities"])


def test_an_app_added_over_http_can_sign_in(sandbox: Sandbox) -> None:
    reply = admin(sandbox, "apps", {"tenant": "other-tenant", "client_id": "other-app", "secret": "pw",
                                    "roles": ["ThreatHunting.Read.All"]})
    assert reply.ok

    token = token_for(sandbox, "graph", tenant="other-tenant", client_id="other-app", secret="pw")
    assert hunt(sandbox, "graph", token=token).status_code == 200


def test_a_malformed_app_over_http_is_a_400(sandbox: Sandbox) -> None:
    assert admin(sandbox, "apps", {"tenant": "t", "client_id": "c", "roles": "all"}).status_code == 400


def test_the_directory_path_is_a_404_or_the_extension_modules_answer(sandbox: Sandbox) -> None:
    import importlib.util

    reply = requests.get(sandbox.api_url + "/v1.0/servicePrincipals", timeout=10)
    if importlib.util.find_spec("sandbox.graph_directory") is None:
        assert reply.status_code == 404
    else:
        assert reply.headers["Content-Type"].startswith("application/json")
    assert sandbox.counters.calls_to("directory") == 1
