"""Each fault knob, as a real `requests` client (or the real credential) observes it."""

from __future__ import annotations

import time

import pytest
import requests
from azure.identity import ManagedIdentityCredential

from sandbox.server import Sandbox
from tests.sandbox.sandbox_client import hunt, token_for

STATUS_CODES = {500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_the_next_n_calls_get_the_chosen_5xx(sandbox: Sandbox, status: int) -> None:
    sandbox.knobs.faults.status, sandbox.knobs.faults.status_next = status, 2
    token = token_for(sandbox, "mde")

    statuses = [hunt(sandbox, "mde", token=token) for _ in range(3)]

    assert [r.status_code for r in statuses] == [status, status, 200]
    assert statuses[0].json()["error"]["code"] == STATUS_CODES[status]
    assert sandbox.counters.calls_to("mde", status) == 2


def test_graph_says_unknown_error_for_its_500(sandbox: Sandbox) -> None:
    sandbox.knobs.faults.status, sandbox.knobs.faults.status_next = 500, 1

    assert hunt(sandbox, "graph").json()["error"]["code"] == "UnknownError"


def test_a_fault_rate_is_drawn_from_the_seeded_rng_and_repeats_after_reset(sandbox: Sandbox) -> None:
    def run() -> list[int]:
        sandbox.knobs.quota.calls_per_window = 1000
        sandbox.knobs.faults.status, sandbox.knobs.faults.status_rate = 502, 0.5
        token = token_for(sandbox, "m365d")
        return [hunt(sandbox, "m365d", token=token).status_code for _ in range(12)]

    first = run()
    sandbox.reset()
    second = run()

    assert set(first) == {200, 502}
    assert second == first


def test_a_fault_scoped_to_one_endpoint_leaves_the_others_alone(sandbox: Sandbox) -> None:
    sandbox.knobs.faults.endpoint, sandbox.knobs.faults.status_next = "graph", 1

    assert hunt(sandbox, "mde").status_code == 200
    assert hunt(sandbox, "m365d").status_code == 200
    assert hunt(sandbox, "graph").status_code == 503


def test_a_reset_in_the_middle_of_a_small_body_breaks_the_clients_read(sandbox: Sandbox) -> None:
    sandbox.knobs.faults.reset_next = 1
    token = token_for(sandbox, "mde")

    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        hunt(sandbox, "mde", "DeviceProcessEvents | take 1", token=token)
    assert hunt(sandbox, "mde", token=token).status_code == 200


def test_a_reset_cuts_a_chunked_body_too(sandbox: Sandbox) -> None:
    sandbox.knobs.faults.reset_next = 1

    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        hunt(sandbox, "m365d", "DeviceProcessEvents | take 500")


def test_a_stalled_body_trips_the_clients_read_timeout(sandbox: Sandbox) -> None:
    sandbox.knobs.faults.stall_next, sandbox.knobs.faults.stall_seconds = 1, 3.0
    token = token_for(sandbox, "graph")

    # The headers arrived, so requests reports the timeout while reading the body (as a ConnectionError).
    with pytest.raises(requests.exceptions.ConnectionError, match="timed out"):
        hunt(sandbox, "graph", "DeviceProcessEvents | take 500", token=token, timeout=0.5)
    assert hunt(sandbox, "graph", token=token).status_code == 200


def test_added_latency_trips_a_short_timeout_before_any_byte(sandbox: Sandbox) -> None:
    token = token_for(sandbox, "mde")
    sandbox.knobs.faults.latency_seconds = 2.0

    with pytest.raises(requests.exceptions.ReadTimeout):
        hunt(sandbox, "mde", token=token, timeout=0.3)

    sandbox.knobs.faults.latency_seconds = 0.0
    assert hunt(sandbox, "mde", token=token, timeout=5).status_code == 200
    # The delayed call still completes on the server: wait for it so that it does not land in the next test.
    deadline = time.monotonic() + 10
    while sandbox.counters.calls_to("mde") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox.counters.calls_to("mde", 200) == 2


@pytest.mark.parametrize(("kind", "text"), [
    ("result_size", "Query execution has exceeded the allowed result size"),
    ("preempted", "The query execution was preempted"),
])
def test_the_next_query_gets_the_services_own_size_error(sandbox: Sandbox, kind: str, text: str) -> None:
    sandbox.knobs.faults.size_error, sandbox.knobs.faults.size_error_next = kind, 1  # type: ignore[assignment]
    token = token_for(sandbox, "m365d")

    refused = hunt(sandbox, "m365d", token=token)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "BadRequest"
    assert text in refused.json()["error"]["message"]
    assert hunt(sandbox, "m365d", token=token).status_code == 200


def test_a_5xx_on_the_identity_endpoint_is_retried_by_the_credential(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sandbox.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "sandbox")
    sandbox.knobs.faults.endpoint, sandbox.knobs.faults.status, sandbox.knobs.faults.status_next = "msi", 500, 1

    assert ManagedIdentityCredential().get_token("https://graph.microsoft.com/.default").token
    assert sandbox.counters.calls_to("msi", 500) == 1
    assert sandbox.counters.calls_to("msi", 200) == 1
