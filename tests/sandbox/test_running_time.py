"""Running time: the cost model each call is charged by (sandbox.knobs), budgets over several windows and per
tenant, the running-time 429, Stats.ExecutionTime and the counters benches read."""

from __future__ import annotations

import math
import re
import time
from typing import Any

import pytest
import requests

from sandbox.knobs import KnobError, Knobs, QuotaKnobs, merge_knobs
from sandbox.quota import QuotaBook, running_time
from sandbox.server import Sandbox
from tests.sandbox.sandbox_client import hunt, token_for, wait_for_fresh_window

CHEAP = "AlertInfo | take 1"
EXPENSIVE = "DeviceProcessEvents | summarize n = count() by FileName | top 3 by n"
JOINED = "DeviceProcessEvents | join kind=inner (DeviceInfo | take 1) on DeviceId | take 2"
RUNNING_TIME_MESSAGE = re.compile(r"^You have exceeded processing resources allocated to this tenant\. "
                                  r"You can run queries again in (\d\d):(\d\d):(\d\d)\.$")
CONTOSO, FABRIKAM = "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7002"
ROLES = {"mde": "AdvancedQuery.Read.All", "m365d": "AdvancedHunting.Read.All", "graph": "ThreatHunting.Read.All"}


def cost_model(quota: QuotaKnobs, *, per_call: float | None = 0.05, scanned: float = 1.0, returned: float = 0.0,
               budget: float = 600.0, window: float = 3600.0) -> QuotaKnobs:
    quota.cpu_seconds_per_call, quota.cpu_seconds_per_1k_rows_scanned = per_call, scanned
    quota.cpu_seconds_per_1k_rows_returned = returned
    quota.cpu_budget_seconds, quota.cpu_window_seconds, quota.cpu_extra_windows = budget, window, []
    return quota


def tid_of(sandbox: Sandbox, token: str) -> str:
    return str(sandbox.issuer.verify(token)["tid"])


def minted(sandbox: Sandbox, tenant: str, api: str) -> str:
    from sandbox.tokens import APIS

    token, _ = sandbox.issuer.mint(audience=APIS[api].audience, tenant=tenant, client_id="bench-app",
                                   roles=[ROLES[api]], lifetime_seconds=600)
    return token


# --- the cost model, pure -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("per_call", "per_1k_scanned", "per_1k_returned", "scanned", "returned", "measured",
                          "charged"), [
    (0.01, 0.0, 0.0, 20_000, 5, 0.3, 0.01),              # the default: a fixed charge per call
    (0.05, 1.0, 0.0, 20_000, 5, 0.3, 20.05),             # plus one second per thousand rows scanned
    (0.05, 1.0, 2.0, 2_000, 500, 0.3, 3.05),             # plus two per thousand returned
    (None, 0.0, 0.0, 20_000, 5, 0.3, 0.3),               # the engine's measured time instead of the fixed part
    (None, 0.5, 0.0, 4_000, 5, 0.25, 2.25),
    (0.0, 0.0, 1.0, 123, 100_000, 0.3, 100.0),
])
def test_a_call_is_charged_its_fixed_part_plus_its_rows_at_their_rates(
    per_call: float | None, per_1k_scanned: float, per_1k_returned: float, scanned: int, returned: int,
    measured: float, charged: float,
) -> None:
    knobs = QuotaKnobs(cpu_seconds_per_call=per_call, cpu_seconds_per_1k_rows_scanned=per_1k_scanned,
                       cpu_seconds_per_1k_rows_returned=per_1k_returned)

    assert running_time(knobs, rows_scanned=scanned, rows_returned=returned, measured=measured) == \
        pytest.approx(charged)


def test_the_default_budgets_are_mde_s_ten_minutes_an_hour_and_three_hours_a_day() -> None:
    knobs = QuotaKnobs()
    assert (knobs.cpu_budget_seconds, knobs.cpu_window_seconds, knobs.cpu_extra_windows) == (
        600.0, 3600.0, [[10_800.0, 86_400.0]])


# --- budgets over several windows ---------------------------------------------------------------------------------

def test_each_window_has_its_own_budget_and_a_spent_one_blocks_until_it_resets() -> None:
    book = QuotaBook()
    knobs = QuotaKnobs(cpu_budget_seconds=10, cpu_window_seconds=60, cpu_extra_windows=[[25, 3600]])
    day = 7200.0   # an hour's boundary, and a minute's

    book.charge_cpu("a", 10.0, day + 5, knobs)
    spent_minute = book.admit("a", day + 20, knobs)
    assert spent_minute is not None and (spent_minute.kind, spent_minute.limit) == ("cpu", 10)
    assert spent_minute.retry_after == 40                       # until the minute resets
    assert book.admit("a", day + 60, knobs) is None             # the next minute has its budget again
    book.charge_cpu("a", 10.0, day + 61, knobs)
    book.charge_cpu("a", 6.0, day + 125, knobs)                 # 26 s in the hour: its budget of 25 is spent

    spent_hour = book.admit("a", day + 190, knobs)              # a fresh minute, a spent hour
    assert spent_hour is not None and (spent_hour.limit, spent_hour.window_seconds) == (25, 3600)
    assert spent_hour.retry_after == 3600 - 190
    assert book.cpu_used("a", day + 190, 3600) == pytest.approx(26.0)
    assert book.cpu_used("a", day + 190, 60) == 0.0
    assert book.admit("a", day + 3600, knobs) is None


def test_with_two_windows_spent_the_throttle_lasts_until_the_later_reset() -> None:
    book = QuotaBook()
    knobs = QuotaKnobs(cpu_budget_seconds=10, cpu_window_seconds=60, cpu_extra_windows=[[10, 900]])
    book.charge_cpu("a", 12.0, 1800.0 + 30, knobs)

    throttle = book.admit("a", 1800.0 + 50, knobs)

    assert throttle is not None and throttle.window_seconds == 900 and throttle.retry_after == 850


def test_a_tenant_s_charges_never_count_against_another_s() -> None:
    book, knobs = QuotaBook(), QuotaKnobs(cpu_budget_seconds=1, cpu_window_seconds=60, cpu_extra_windows=[])
    book.charge_cpu("a", 5.0, 10.0, knobs)

    assert book.admit("a", 11.0, knobs) is not None
    assert book.admit("b", 11.0, knobs) is None


@pytest.mark.parametrize("update", [
    {"quota": {"cpu_extra_windows": [[10, 0]]}},
    {"quota": {"cpu_extra_windows": [[10]]}},
    {"quota": {"cpu_extra_windows": [10, 900]}},
    {"quota": {"cpu_seconds_per_1k_rows_scanned": -1}},
    {"quota": {"cpu_window_seconds": 0}},
    {"tenant_quotas": {CONTOSO: {"cpu_extra_windows": [["10", 900]]}}},
])
def test_a_wrong_running_time_knob_is_refused(update: dict[str, Any]) -> None:
    knobs = Knobs()
    with pytest.raises(KnobError):
        merge_knobs(knobs, update)
    assert knobs == Knobs()


def test_the_cost_model_and_windows_are_knobs_over_http_per_tenant(sandbox: Sandbox) -> None:
    reply = requests.post(f"{sandbox.api_url}/_sandbox/knobs", timeout=10, json={"tenant_quotas": {CONTOSO: {
        "cpu_seconds_per_1k_rows_scanned": 2, "cpu_extra_windows": [[30, 120], [100, 900]],
        "cpu_latency_ratio": 0.5}}})

    assert reply.status_code == 200, reply.text
    quota = sandbox.knobs.quota_for(CONTOSO)
    assert (quota.cpu_seconds_per_1k_rows_scanned, quota.cpu_extra_windows, quota.cpu_latency_ratio) == (
        2.0, [[30.0, 120.0], [100.0, 900.0]], 0.5)
    assert sandbox.knobs.quota.cpu_seconds_per_1k_rows_scanned == 0.0   # the other tenants' quota is untouched


# --- over HTTP ----------------------------------------------------------------------------------------------------

def test_rows_scanned_are_the_rows_of_the_tables_the_query_reads(sandbox: Sandbox) -> None:
    cost_model(sandbox.knobs.quota, per_call=0.0, scanned=1.0)
    table_rows = sandbox.engine.table_rows
    token = token_for(sandbox, "m365d")

    charged = {query: hunt(sandbox, "m365d", query, token=token).json()["Stats"]["ExecutionTime"]
               for query in (CHEAP, EXPENSIVE, JOINED)}

    assert charged == pytest.approx({
        CHEAP: table_rows["AlertInfo"] / 1000,
        EXPENSIVE: table_rows["DeviceProcessEvents"] / 1000,
        JOINED: (table_rows["DeviceProcessEvents"] + table_rows["DeviceInfo"]) / 1000,
    })
    assert charged[EXPENSIVE] > 100 * charged[CHEAP]


@pytest.mark.parametrize("api", ["mde", "m365d"])
def test_execution_time_is_the_running_time_charged(sandbox: Sandbox, api: str) -> None:
    cost_model(sandbox.knobs.quota, per_call=0.05, scanned=1.0, returned=10.0)
    token = token_for(sandbox, api)

    body = hunt(sandbox, api, "DeviceProcessEvents | take 7", token=token).json()

    expected = 0.05 + sandbox.engine.table_rows["DeviceProcessEvents"] / 1000 + 7 * 10.0 / 1000
    assert list(body) == ["Stats", "Schema", "Results"] and len(body["Results"]) == 7
    assert body["Stats"]["ExecutionTime"] == pytest.approx(expected)
    assert sandbox.counters.running_seconds_by_tenant(api) == {tid_of(sandbox, token): pytest.approx(expected)}
    assert body["Stats"]["resource_usage"]["cpu"]["total cpu"].startswith("00:00:20.")


def test_the_measured_time_is_what_execution_time_and_the_counters_say(sandbox: Sandbox) -> None:
    cost_model(sandbox.knobs.quota, per_call=None, scanned=0.0)
    token = token_for(sandbox, "m365d")

    seconds = hunt(sandbox, "m365d", EXPENSIVE, token=token).json()["Stats"]["ExecutionTime"]

    assert seconds > 0
    assert sandbox.counters.running_seconds_by_tenant("m365d") == {
        tid_of(sandbox, token): pytest.approx(seconds, abs=1e-6)}


def test_graph_returns_no_statistics_but_is_charged_alike(sandbox: Sandbox) -> None:
    cost_model(sandbox.knobs.quota, per_call=0.05, scanned=1.0)
    token = token_for(sandbox, "graph")

    body = hunt(sandbox, "graph", EXPENSIVE, token=token).json()

    assert list(body) == ["@odata.context", "schema", "results"]
    assert sandbox.counters.running_seconds_by_tenant("graph") == {
        tid_of(sandbox, token): pytest.approx(0.05 + sandbox.engine.table_rows["DeviceProcessEvents"] / 1000)}


def test_a_call_the_engine_refuses_costs_the_fixed_part_only(sandbox: Sandbox) -> None:
    cost_model(sandbox.knobs.quota, per_call=0.05, scanned=1.0)
    token = token_for(sandbox, "m365d")

    assert hunt(sandbox, "m365d", "DeviceProcessEvents | where", token=token).status_code == 400

    assert sandbox.counters.running_seconds_by_tenant() == {tid_of(sandbox, token): pytest.approx(0.05)}


@pytest.mark.parametrize("api", ["m365d", "graph"])
def test_a_spent_budget_gets_the_running_time_429_until_its_window_resets(sandbox: Sandbox, api: str) -> None:
    window = 3600.0
    cost_model(sandbox.knobs.quota, per_call=0.05, scanned=1.0, budget=15.0, window=window)
    token = token_for(sandbox, api)
    wait_for_fresh_window(window, needed=30.0)
    assert hunt(sandbox, api, EXPENSIVE, token=token).status_code == 200   # 20.05 s: past the budget of 15

    refused = hunt(sandbox, api, CHEAP, token=token)
    left = window - time.time() % window

    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert math.ceil(left) <= retry_after <= math.ceil(left) + 2
    error = refused.json()["error"]
    match = RUNNING_TIME_MESSAGE.match(error["message"])
    assert match is not None, error
    hours, minutes, seconds = map(int, match.groups())
    assert hours * 3600 + minutes * 60 + seconds == retry_after
    if api == "graph":
        assert error["code"] == "TooManyRequests" and "innerError" in error
    state = requests.get(f"{sandbox.api_url}/_sandbox/state", timeout=10).json()["counters"]
    key = f"{api} {tid_of(sandbox, token)}"
    assert state["tenant_running_time_throttled"] == {key: 1} and state["tenant_throttled"] == {key: 1}
    assert state["tenant_running_seconds"] == {key: pytest.approx(20.05)}


def test_graph_s_generic_wording_can_still_be_asked_for(sandbox: Sandbox) -> None:
    quota = cost_model(sandbox.knobs.quota, per_call=1.0, scanned=0.0, budget=1.0)
    quota.throttle_body = "graph"
    token = token_for(sandbox, "graph")
    wait_for_fresh_window(quota.cpu_window_seconds, needed=30.0)
    hunt(sandbox, "graph", CHEAP, token=token)

    refused = hunt(sandbox, "graph", CHEAP, token=token)

    assert refused.status_code == 429 and refused.json()["error"]["message"] == "Too many requests."


def test_each_tenant_is_charged_against_its_own_budget(sandbox: Sandbox) -> None:
    for tenant, seed in ((CONTOSO, 101), (FABRIKAM, 202)):
        sandbox.add_tenant(tenant, seed=seed, rows=2_000)
    sandbox.knobs.tenant_quotas[CONTOSO] = cost_model(QuotaKnobs(), per_call=0.05, scanned=1.0, budget=1.0)
    sandbox.knobs.tenant_quotas[FABRIKAM] = cost_model(QuotaKnobs(), per_call=0.05, scanned=1.0, budget=100.0)
    wait_for_fresh_window(3600.0, needed=30.0)
    contoso, fabrikam = minted(sandbox, CONTOSO, "graph"), minted(sandbox, FABRIKAM, "graph")

    assert [hunt(sandbox, "graph", EXPENSIVE, token=contoso).status_code for _ in range(2)] == [200, 429]
    assert [hunt(sandbox, "graph", EXPENSIVE, token=fabrikam).status_code for _ in range(3)] == [200, 200, 200]

    engine = sandbox.engine_for(CONTOSO)
    assert engine is not None
    expensive = 0.05 + engine.table_rows["DeviceProcessEvents"] / 1000
    assert sandbox.counters.running_seconds_by_tenant("graph") == {
        CONTOSO: pytest.approx(expensive), FABRIKAM: pytest.approx(3 * expensive)}
    assert sandbox.quota.cpu_used(CONTOSO, time.time(), 3600.0) == pytest.approx(expensive)


def test_the_admin_state_tells_each_dataset_s_rows_per_table(sandbox: Sandbox) -> None:
    sandbox.add_tenant(CONTOSO, seed=101, rows=2_000)

    rows = requests.get(f"{sandbox.api_url}/_sandbox/state", timeout=10).json()["table_rows"]

    assert rows["home"] == sandbox.engine.table_rows and rows["home"]["DeviceProcessEvents"] == sandbox.rows
    assert rows[CONTOSO]["DeviceProcessEvents"] == 2_000
