"""The three hunting endpoints over real HTTP with real tokens: shapes, errors, auth, row cap, observation."""

from __future__ import annotations

import json
import re
import uuid

import pytest
import requests

from sandbox.hunting import Api
from sandbox.server import Sandbox
from tests.sandbox.sandbox_client import PATHS, SEED_QUERY, SEED_QUERY_APPDATA, SMALL_QUERY, hunt, token_for

DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
ERROR_KEYS = {"code", "message", "target"}


def expected_rows(sandbox: Sandbox, query: str, api: Api, timespan: str | None = None) -> list[object]:
    return [json.loads(row) for row in sandbox.engine.run(query, api, timespan=timespan).rows]


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= ERROR_KEYS
    assert error["code"] == code
    uuid.UUID(error["target"])
    return error


@pytest.mark.parametrize("query", [SEED_QUERY, SEED_QUERY_APPDATA])
def test_the_seed_queries_return_rows_from_mde_in_its_shape(sandbox: Sandbox, query: str) -> None:
    response = hunt(sandbox, "mde", query)

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["Stats", "Schema", "Results"]   # Stats as m365d's (see sandbox.hunting_api)
    assert "ExecutionTime" in body["Stats"]
    assert body["Schema"][:3] == [{"Name": "Timestamp", "Type": "DateTime"}, {"Name": "FileName", "Type": "String"},
                                  {"Name": "InitiatingProcessFileName", "Type": "String"}]
    assert len(body["Results"]) == 2
    assert body["Results"] == expected_rows(sandbox, query, "mde")
    assert all(DATETIME.match(row["Timestamp"]) for row in body["Results"])
    assert all(row["InitiatingProcessFileName"].lower() == "powershell.exe" for row in body["Results"])


@pytest.mark.parametrize("query", [SEED_QUERY, SEED_QUERY_APPDATA])
def test_the_seed_queries_return_rows_from_m365d_with_stats(sandbox: Sandbox, query: str) -> None:
    response = hunt(sandbox, "m365d", query)

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["Stats", "Schema", "Results"]
    assert "ExecutionTime" in body["Stats"]
    assert {"Name": "Timestamp", "Type": "DateTime"} in body["Schema"]
    assert body["Results"] == expected_rows(sandbox, query, "m365d")
    assert len(body["Results"]) == 2


@pytest.mark.parametrize("query", [SEED_QUERY, SEED_QUERY_APPDATA])
def test_the_seed_queries_return_rows_from_graph_in_its_shape(sandbox: Sandbox, query: str) -> None:
    response = hunt(sandbox, "graph", query)

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["@odata.context", "schema", "results"]
    assert body["@odata.context"].endswith("#microsoft.graph.security.huntingQueryResults")
    assert {"name": "Timestamp", "type": "DateTime"} in body["schema"]
    assert body["results"] == expected_rows(sandbox, query, "graph")
    assert len(body["results"]) == 2


def test_graph_honours_the_timespan(sandbox: Sandbox) -> None:
    query = "DeviceProcessEvents | summarize Rows = count()"
    narrow = hunt(sandbox, "graph", query, Timespan="PT1H").json()["results"]
    wide = hunt(sandbox, "graph", query, Timespan="P30D").json()["results"]

    assert narrow == expected_rows(sandbox, query, "graph", timespan="PT1H")
    assert wide == expected_rows(sandbox, query, "graph", timespan="P30D")
    assert narrow != wide


def test_the_shorter_of_the_query_s_time_filter_and_the_timespan_wins(sandbox: Sandbox) -> None:
    count = "| summarize Rows = count()"
    rows = {name: hunt(sandbox, "graph", f"DeviceProcessEvents {where} {count}", Timespan=timespan).json()["results"]
            for name, where, timespan in [("query 1d, timespan 7d", "| where Timestamp > ago(1d)", "P7D"),
                                          ("query 7d, timespan 1d", "| where Timestamp > ago(7d)", "P1D"),
                                          ("1d", "", "P1D")]}

    assert rows["query 1d, timespan 7d"] == rows["query 7d, timespan 1d"] == rows["1d"]
    assert rows["1d"][0]["Rows"] > 0


@pytest.mark.parametrize("api", ["mde", "m365d", "graph"])
def test_a_result_over_the_size_cap_is_the_service_s_400(sandbox: Sandbox, api: Api) -> None:
    query = "DeviceProcessEvents | project Timestamp, DeviceName, ProcessCommandLine"
    sandbox.knobs.max_result_mb = 0.25

    refused = hunt(sandbox, api, query)
    sandbox.knobs.max_result_mb = 50
    accepted = hunt(sandbox, api, query)

    assert refused.status_code == 400
    assert "exceeded the allowed result size" in refused.json()["error"]["message"]
    assert accepted.status_code == 200


def test_the_result_size_cap_is_a_command_line_option() -> None:
    from sandbox.__main__ import parse_args

    assert parse_args([]).max_result_mb == 50.0
    assert parse_args(["--max-result-mb", "2.5"]).max_result_mb == 2.5


def test_results_are_cut_at_the_row_cap(sandbox: Sandbox) -> None:
    sandbox.knobs.row_cap = 7

    response = hunt(sandbox, "m365d", "DeviceProcessEvents | project DeviceId")

    assert len(response.json()["Results"]) == 7


def test_a_large_result_is_streamed_in_chunks(sandbox: Sandbox) -> None:
    # 20,000 whole rows are 58 MB, over the 50 MB result-size cap: a few columns still make a multi-MB body
    response = hunt(sandbox, "mde", "DeviceProcessEvents | project Timestamp, DeviceName, ProcessCommandLine, SHA256")

    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert len(response.json()["Results"]) == 20_000


@pytest.mark.parametrize("api", ["mde", "m365d", "graph"])
def test_a_syntax_error_gets_the_services_400_envelope(sandbox: Sandbox, api: str) -> None:
    assert_error(hunt(sandbox, api, "DeviceProcessEvents | where | take"), 400, "BadRequest")


@pytest.mark.parametrize("api", ["mde", "m365d", "graph"])
def test_an_unknown_table_gets_a_400(sandbox: Sandbox, api: str) -> None:
    assert_error(hunt(sandbox, api, "NoSuchTable | take 1"), 400, "BadRequest")


def test_mde_refuses_a_non_device_table_that_m365d_serves(sandbox: Sandbox) -> None:
    assert_error(hunt(sandbox, "mde", "EmailEvents | take 1"), 400, "BadRequest")
    assert hunt(sandbox, "m365d", "EmailEvents | take 1").status_code == 200


def test_a_missing_query_is_a_missing_required_parameter(sandbox: Sandbox) -> None:
    response = requests.post(sandbox.api_url + PATHS["mde"], json={"query": "the name is case-sensitive"},
                             headers={"Authorization": "Bearer " + token_for(sandbox, "mde")}, timeout=10)
    assert_error(response, 400, "MissingRequiredParameter")


def test_a_body_that_is_not_json_is_an_invalid_request_body(sandbox: Sandbox) -> None:
    response = requests.post(sandbox.api_url + PATHS["m365d"], data=b"{not json",
                             headers={"Authorization": "Bearer " + token_for(sandbox, "m365d")}, timeout=10)
    assert_error(response, 400, "InvalidRequestBody")


@pytest.mark.parametrize("api", ["mde", "m365d", "graph"])
def test_no_bearer_token_is_a_401(sandbox: Sandbox, api: str) -> None:
    response = requests.post(sandbox.api_url + PATHS[api], json={"Query": SMALL_QUERY}, timeout=10)
    assert_error(response, 401, "Unauthorized")


def test_a_token_with_a_bad_signature_is_a_401(sandbox: Sandbox) -> None:
    header, payload, _ = token_for(sandbox, "mde").split(".")
    assert_error(hunt(sandbox, "mde", token=f"{header}.{payload}.c2lnbmF0dXJl"), 401, "Unauthorized")


def test_an_expired_token_is_a_401(sandbox: Sandbox) -> None:
    token, _ = sandbox.issuer.mint(audience="https://api.securitycenter.microsoft.com", tenant="sandbox-tenant",
                                   client_id="sandbox-client", roles=["AdvancedQuery.Read.All"],
                                   lifetime_seconds=60, now=1_000_000)
    error = assert_error(hunt(sandbox, "mde", token=token), 401, "Unauthorized")
    assert "expired" in error["message"]


@pytest.mark.parametrize(("api", "other", "role"), [
    ("mde", "graph", "AdvancedQuery.Read.All"),
    ("m365d", "mde", "AdvancedHunting.Read.All"),
    ("graph", "m365d", "ThreatHunting.Read.All"),
])
def test_a_token_for_another_apis_audience_is_a_403_naming_the_role(
    sandbox: Sandbox, api: str, other: str, role: str
) -> None:
    error = assert_error(hunt(sandbox, api, token=token_for(sandbox, other)), 403, "Forbidden")
    assert f"API required roles: {role}" in error["message"]


def test_a_token_without_the_apis_role_is_a_403_naming_the_role(sandbox: Sandbox) -> None:
    sandbox.add_app("sandbox-tenant", "graph-only", "pw", ["ThreatHunting.Read.All"])
    token = token_for(sandbox, "mde", client_id="graph-only", secret="pw")

    error = assert_error(hunt(sandbox, "mde", token=token), 403, "Forbidden")
    assert error["message"] == ("Missing application roles. API required roles: AdvancedQuery.Read.All, "
                                "application roles")


def test_the_exact_request_body_is_recorded(sandbox: Sandbox) -> None:
    raw = '{"Query":  "DeviceInfo | take 1",\n "Extra": "é"}'.encode()
    requests.post(sandbox.api_url + PATHS["mde"], data=raw, timeout=10,
                  headers={"Authorization": "Bearer " + token_for(sandbox, "mde")})

    assert [body.raw for body in sandbox.counters.request_bodies] == [raw]
    assert sandbox.counters.bodies_for("mde") == [raw.decode()]


def test_calls_are_counted_per_endpoint_and_status(sandbox: Sandbox) -> None:
    hunt(sandbox, "graph")
    hunt(sandbox, "graph", "NoSuchTable")

    assert sandbox.counters.calls_to("graph", 200) == 1
    assert sandbox.counters.calls_to("graph", 400) == 1
    assert sandbox.counters.calls_to("graph") == 2
    assert sandbox.counters.calls_to("mde") == 0


def test_a_session_reuses_one_connection_and_separate_requests_do_not(sandbox: Sandbox) -> None:
    token = token_for(sandbox, "mde")     # from the https authority: not on the counted port
    with requests.Session() as session:
        for _ in range(4):
            assert hunt(sandbox, "mde", token=token, session=session).status_code == 200
    assert sandbox.counters.connections_accepted == 1

    for _ in range(3):
        hunt(sandbox, "mde", token=token)
    assert sandbox.counters.connections_accepted == 4


def test_an_unknown_path_is_a_404(sandbox: Sandbox) -> None:
    assert requests.get(sandbox.api_url + "/api/nothing", timeout=10).status_code == 404
