"""The sandbox accepts what Microsoft Graph accepts, so that real clients work against it unmodified: both names
of the action, body properties in any case, every timespan form, Graph's error envelope on every port, the v1 token
endpoint; and it plays the retirement of the legacy APIs in each form the relay must recognise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from sandbox.server import Sandbox
from tests.sandbox.sandbox_client import token_for

QUERY = "DeviceInfo | project DeviceName | take 2"
NAMESPACED = "/v1.0/security/microsoft.graph.security.runHuntingQuery"


def graph(sandbox: Sandbox, body: dict[str, object], path: str = "/v1.0/security/runHuntingQuery") -> requests.Response:
    return requests.post(sandbox.api_url + path, json=body, timeout=30,
                         headers={"Authorization": f"Bearer {token_for(sandbox, 'graph')}"})


@pytest.mark.parametrize("path", ["/v1.0/security/runHuntingQuery", NAMESPACED])
@pytest.mark.parametrize("body", [{"Query": QUERY}, {"query": QUERY}, {"QUERY": QUERY, "timespan": "P1D"},
                                  {"query": QUERY, "Timespan": "P30D"}])
def test_both_names_of_the_action_and_properties_in_any_case(sandbox: Sandbox, path: str, body: dict[str, object]):
    reply = graph(sandbox, body, path)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["results"]) == 2


def test_a_single_date_time_timespan_means_from_then_until_now(sandbox: Sandbox):
    recent = "DeviceProcessEvents | where Timestamp > ago(29d) | summarize n = count()"
    since = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    two_days = graph(sandbox, {"query": recent, "timespan": since}).json()["results"][0]["n"]
    as_duration = graph(sandbox, {"query": recent, "timespan": "P2D"}).json()["results"][0]["n"]
    everything = graph(sandbox, {"query": recent}).json()["results"][0]["n"]
    assert 0 < two_days < everything
    assert abs(two_days - as_duration) <= max(2, as_duration // 100)   # the two "now"s differ by milliseconds


@pytest.mark.parametrize("port", ["http", "https"])
def test_an_unknown_path_gets_graphs_error_envelope_on_every_port(sandbox: Sandbox, port: str):
    base = sandbox.api_url if port == "http" else sandbox.api_tls_url
    reply = requests.get(base + "/v1.0/security/nothing", timeout=10, verify=sandbox.ca_path)
    error = reply.json()["error"]
    assert reply.status_code == 404
    assert set(error) >= {"code", "message", "innerError"} and {"date", "request-id"} <= set(error["innerError"])


def test_the_v1_token_endpoint_issues_a_token_for_the_resource(sandbox: Sandbox):
    reply = requests.post(f"{sandbox.authority}/sandbox-tenant/oauth2/token", timeout=10, verify=sandbox.ca_path,
                          data={"grant_type": "client_credentials", "client_id": "sandbox-client",
                                "client_secret": "sandbox-secret", "resource": "https://graph.microsoft.com"})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["resource"] == "https://graph.microsoft.com" and answer["expires_in"].isdigit()
    hunt = requests.post(sandbox.api_url + "/v1.0/security/runHuntingQuery", json={"Query": QUERY}, timeout=30,
                         headers={"Authorization": f"Bearer {answer['access_token']}"})
    assert hunt.status_code == 200, hunt.text


@pytest.mark.parametrize(("form", "status", "says"), [
    ("gone", 410, "retired"), ("not_found", 404, "does not exist"), ("code", 400, "ApiRetired"),
    ("message", 403, "deprecated")])
def test_a_retired_legacy_api_answers_in_the_form_its_knob_gives(sandbox: Sandbox, form: str, status: int, says: str):
    sandbox.knobs.retired_apis = ["mde"]
    sandbox.knobs.retired_form = form   # type: ignore[assignment]
    reply = requests.post(sandbox.api_url + "/api/advancedqueries/run", json={"Query": QUERY}, timeout=30,
                          headers={"Authorization": f"Bearer {token_for(sandbox, 'mde')}"})
    assert reply.status_code == status and says in reply.text
    other = requests.post(sandbox.api_url + "/api/advancedhunting/run", json={"Query": QUERY}, timeout=30,
                          headers={"Authorization": f"Bearer {token_for(sandbox, 'm365d')}"})
    assert other.status_code == 200


def test_the_retirement_knobs_refuse_unknown_values_through_the_admin_path(sandbox: Sandbox):
    ok = requests.post(sandbox.api_url + "/_sandbox/knobs", json={"retired_apis": ["m365d"]}, timeout=10)
    bad = requests.post(sandbox.api_url + "/_sandbox/knobs", json={"retired_apis": ["sentinel"]}, timeout=10)
    assert ok.status_code == 200 and sandbox.knobs.retired_apis == ["m365d"]
    assert bad.status_code == 400
