"""Quotas: the pure accounting and wording, and the 429s a real client sees in each configured form."""

from __future__ import annotations

import json
import re

import pytest

from sandbox.knobs import QuotaKnobs
from sandbox.quota import QuotaBook, Throttle, duration_text, throttle_message, timespan_text
from sandbox.server import Sandbox
from tests.sandbox.sandbox_client import hunt, sleep_past_window, token_for, wait_for_fresh_window


@pytest.mark.parametrize(("seconds", "text"), [
    (60, "00:01:00"), (3600, "01:00:00"), (900, "00:15:00"), (86_400, "1.00:00:00"), (1.5, "00:00:01.5000000"),
    (8, "00:00:08"),
])
def test_a_window_is_written_as_a_dotnet_timespan(seconds: float, text: str) -> None:
    assert timespan_text(seconds) == text


@pytest.mark.parametrize(("form", "text"), [
    ("hh:mm:ss", "00:02:05"), ("seconds", "125 seconds"), ("minutes", "3 minutes"), ("iso8601", "PT125S"),
])
def test_the_cpu_duration_is_written_in_each_form_seen(form: str, text: str) -> None:
    assert duration_text(125, form) == text


@pytest.mark.parametrize(("throttle", "wording", "message"), [
    (Throttle("calls", 45, 60, 8.2), "calls", "API calls quota exceeded! maximum allowed 45 per 00:01:00"),
    (Throttle("calls", 1500, 3600, 8.2), "calls", "API calls quota exceeded! maximum allowed 1500 per 01:00:00"),
    (Throttle("calls", 30, 60, 7.01), "calls_for_key",
     "API calls quota exceeded! Maximum allowed 30 per 00:01:00 for the key Destination+TenantID+AppID. "
     "You can send requests again in 8 seconds."),
    (Throttle("cpu", 600, 3600, 65), "calls",
     "You have exceeded processing resources allocated to this tenant. You can run queries again in 00:01:05."),
])
def test_each_throttle_message_reads_as_the_service_writes_it(throttle: Throttle, wording: str, message: str) -> None:
    assert throttle_message(throttle, wording, "hh:mm:ss") == message


def test_the_book_admits_up_to_the_limit_per_tenant_and_window() -> None:
    book, knobs = QuotaBook(), QuotaKnobs(calls_per_window=2, window_seconds=60)

    assert book.admit("a", 120.0, knobs) is None
    assert book.admit("a", 130.0, knobs) is None
    throttle = book.admit("a", 150.5, knobs)
    assert throttle is not None and throttle.kind == "calls" and throttle.retry_after == 30
    assert book.admit("b", 150.5, knobs) is None          # another tenant has its own quota
    assert book.admit("a", 180.0, knobs) is None          # the epoch-aligned window reset at 180 s


def test_a_refused_call_does_not_count_against_the_quota() -> None:
    book, knobs = QuotaBook(), QuotaKnobs(calls_per_window=1, window_seconds=60)
    book.admit("a", 0.0, knobs)
    for _ in range(5):
        assert book.admit("a", 1.0, knobs) is not None

    knobs.calls_per_window = 2
    assert book.admit("a", 2.0, knobs) is None


def test_the_cpu_budget_blocks_calls_until_the_next_cpu_window() -> None:
    book, knobs = QuotaBook(), QuotaKnobs(cpu_budget_seconds=10, cpu_window_seconds=900)
    book.charge_cpu("a", 10.0, 100.0, knobs)

    throttle = book.admit("a", 100.0, knobs)
    assert throttle is not None and throttle.kind == "cpu" and throttle.retry_after == 800
    assert book.admit("a", 900.0, knobs) is None


# --- over HTTP ---------------------------------------------------------------------------------------------------

CALLS_MESSAGE = re.compile(r"^API calls quota exceeded! maximum allowed 1 per 00:01:00$")
KEY_MESSAGE = re.compile(r"^API calls quota exceeded! Maximum allowed 1 per 00:01:00 for the key "
                         r"Destination\+TenantID\+AppID\. You can send requests again in (\d+) seconds\.$")


def exhaust(sandbox: Sandbox, api: str, calls: int = 1, window: float = 60.0) -> str:
    """Sets the quota to `calls` per `window` and spends it; returns the token used."""
    sandbox.knobs.quota.calls_per_window = calls
    sandbox.knobs.quota.window_seconds = window
    token = token_for(sandbox, api)
    wait_for_fresh_window(window, needed=min(window / 2, 5.0))
    for _ in range(calls):
        assert hunt(sandbox, api, token=token).status_code == 200
    return token


@pytest.mark.parametrize("api", ["mde", "m365d"])
def test_over_quota_gets_429_with_retry_after_and_the_calls_body(sandbox: Sandbox, api: str) -> None:
    token = exhaust(sandbox, api)

    response = hunt(sandbox, api, token=token)

    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "429"
    assert CALLS_MESSAGE.match(error["message"])
    assert sandbox.counters.throttled == 1


def test_graph_over_quota_gets_its_generic_too_many_requests(sandbox: Sandbox) -> None:
    token = exhaust(sandbox, "graph")

    response = hunt(sandbox, "graph", token=token)

    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("TooManyRequests", "Too many requests.")
    assert "innerError" in error


def test_the_for_the_key_body_states_the_real_seconds_left(sandbox: Sandbox) -> None:
    sandbox.knobs.quota.throttle_body = "calls_for_key"
    token = exhaust(sandbox, "mde")

    response = hunt(sandbox, "mde", token=token)

    match = KEY_MESSAGE.match(response.json()["error"]["message"])
    assert match is not None
    assert int(match.group(1)) == int(response.headers["Retry-After"])


@pytest.mark.parametrize(("form", "has_header", "has_body"), [
    ("body_only", False, True), ("header_only", True, False), ("neither", False, False),
])
def test_the_429_carries_the_header_and_body_the_knob_chooses(
    sandbox: Sandbox, form: str, has_header: bool, has_body: bool
) -> None:
    sandbox.knobs.quota.throttle_form = form  # type: ignore[assignment]
    token = exhaust(sandbox, "mde")

    response = hunt(sandbox, "mde", token=token)

    assert response.status_code == 429
    assert ("Retry-After" in response.headers) is has_header
    assert bool(response.content) is has_body
    if has_body:
        assert CALLS_MESSAGE.match(json.loads(response.content)["error"]["message"])


@pytest.mark.parametrize(("duration_format", "pattern"), [
    ("hh:mm:ss", r"\d\d:\d\d:\d\d"), ("seconds", r"\d+ seconds"), ("minutes", r"\d+ minutes"),
    ("iso8601", r"PT\d+S"),
])
def test_over_the_cpu_budget_gets_429_with_the_cpu_message(
    sandbox: Sandbox, duration_format: str, pattern: str
) -> None:
    quota = sandbox.knobs.quota
    quota.cpu_budget_seconds, quota.cpu_seconds_per_call = 1.0, 1.0
    quota.cpu_duration_format = duration_format  # type: ignore[assignment]
    token = token_for(sandbox, "m365d")
    wait_for_fresh_window(quota.cpu_window_seconds, needed=5.0)
    assert hunt(sandbox, "m365d", token=token).status_code == 200

    response = hunt(sandbox, "m365d", token=token)

    assert response.status_code == 429
    assert re.fullmatch("You have exceeded processing resources allocated to this tenant. "
                        f"You can run queries again in {pattern}.", response.json()["error"]["message"])


def test_the_engines_measured_time_can_be_what_is_charged(sandbox: Sandbox) -> None:
    quota = sandbox.knobs.quota
    quota.cpu_budget_seconds, quota.cpu_seconds_per_call = 1e-9, None
    token = token_for(sandbox, "mde")
    wait_for_fresh_window(quota.cpu_window_seconds, needed=5.0)
    assert hunt(sandbox, "mde", token=token).status_code == 200

    assert hunt(sandbox, "mde", token=token).status_code == 429


def test_the_quota_comes_back_when_the_window_resets(sandbox: Sandbox) -> None:
    token = exhaust(sandbox, "mde", calls=2, window=2.0)
    refused = hunt(sandbox, "mde", token=token)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] in {"1", "2"}

    sleep_past_window(2.0)

    assert hunt(sandbox, "mde", token=token).status_code == 200
