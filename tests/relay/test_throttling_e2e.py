"""Throttling end to end: every 429 form ends with the hunt delivered after the reset; limits end a hunt that
cannot get through with a failure, never a loop."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.relay.conftest import RelayStack, drain

WINDOW = 4.0
QUERY = "DeviceInfo | take 1"


def at_window_start(seconds: float = WINDOW) -> None:
    """Wait for the start of an epoch-aligned window, so that two calls fall in the same one."""
    while time.time() % seconds > 0.3:
        time.sleep(0.05)


def enqueue(relay, job: str, api: str = "m365d") -> None:
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, "api": api}))


# (throttle_form, throttle_body, cpu_duration_format, kind, api): kind "calls" spends the call quota,
# "cpu" the CPU budget. Where the 429 states when to return, the hunt must get through on its second attempt.
FORMS = [
    ("header_and_body", "calls", "hh:mm:ss", "calls", "m365d", True),
    ("body_only", "calls", "hh:mm:ss", "calls", "m365d", True),
    ("body_only", "calls_for_key", "hh:mm:ss", "calls", "m365d", True),
    ("body_only", None, "hh:mm:ss", "cpu", "m365d", True),
    ("body_only", None, "seconds", "cpu", "m365d", True),
    ("body_only", None, "iso8601", "cpu", "m365d", True),
    ("body_only", None, "minutes", "cpu", "m365d", True),
    ("body_only", "graph", "hh:mm:ss", "calls", "graph", False),
    ("header_only", None, "hh:mm:ss", "calls", "mde", True),
    ("neither", None, "hh:mm:ss", "calls", "mde", False),
]


@pytest.mark.parametrize(("form", "wording", "duration", "kind", "api", "states_reset"), FORMS,
                         ids=[f"{f[0]}-{f[1] or f[3]}-{f[2]}" for f in FORMS])
def test_each_429_form_ends_with_the_hunt_delivered_after_the_reset(relay_stack: RelayStack, form, wording,
                                                                     duration, kind, api, states_reset):
    quota = relay_stack.sandbox.knobs.quota
    quota.throttle_form, quota.throttle_body, quota.cpu_duration_format = form, wording, duration
    if kind == "calls":
        quota.calls_per_window, quota.window_seconds = 1, WINDOW
    else:
        quota.cpu_budget_seconds, quota.cpu_seconds_per_call, quota.cpu_window_seconds = 1.0, 1.0, WINDOW
    relay = relay_stack.make()
    first, second = "first-" + uuid.uuid4().hex[:8], "second-" + uuid.uuid4().hex[:8]
    at_window_start()
    enqueue(relay, first, api)
    enqueue(relay, second, api)
    stats = drain(relay, concurrency=1)
    statuses = sorted(o.status for o in stats.outcomes)
    assert statuses.count("delivered") == 2 and statuses.count("requeued") >= 1
    assert relay_stack.sandbox.counters.throttled >= 1
    results = {name: relay_stack.read_json(relay_stack.results_container, f"{name}.json") for name in (first, second)}
    assert {r["status"] for r in results.values()} == {"succeeded"}
    if states_reset:
        # The relay waited at least as long as the service said: one 429, then through on the next attempt.
        assert relay_stack.sandbox.counters.throttled == 1
        assert max(r["attempts"] for r in results.values()) == 2


def test_max_attempts_ends_a_failing_hunt_with_a_failed_envelope_and_a_dead_letter(relay_stack: RelayStack):
    relay_stack.sandbox.knobs.faults.status, relay_stack.sandbox.knobs.faults.status_next = 503, 10
    relay = relay_stack.make(HUNT_MAX_ATTEMPTS="2")
    enqueue(relay, "always-503")
    drain(relay)
    failure = relay_stack.read_json(relay_stack.results_container, "always-503.failed.json")
    assert failure["error"]["code"] == "GaveUp"
    assert failure["error"]["message"].startswith("gave up after 2 attempts over ")
    assert "HTTP 503" in failure["error"]["message"]
    [record] = relay_stack.dead_letters()
    assert record["reason"] == "GaveUp"
    assert relay_stack.sandbox.counters.calls_to("m365d") == 2


def test_max_age_ends_a_throttled_hunt_instead_of_waiting_past_it(relay_stack: RelayStack):
    quota = relay_stack.sandbox.knobs.quota
    quota.calls_per_window, quota.window_seconds = 0, 600.0
    relay = relay_stack.make(HUNT_MAX_AGE="5s")
    enqueue(relay, "too-old")
    drain(relay)
    failure = relay_stack.read_json(relay_stack.results_container, "too-old.failed.json")
    assert failure["error"]["code"] == "GaveUp" and "HTTP 429" in failure["error"]["message"]
    assert relay_stack.sandbox.counters.calls_to("m365d") == 1
    assert relay.hunt_queue.get_queue_properties().approximate_message_count == 0


def test_with_the_quota_known_the_gate_paces_a_backlog_with_no_429(relay_stack: RelayStack):
    quota = relay_stack.sandbox.knobs.quota
    quota.calls_per_window, quota.window_seconds = 2, WINDOW
    relay = relay_stack.make(HUNT_QUOTA_WINDOWS=f"2/{int(WINDOW)}s")
    at_window_start()
    for n in range(5):
        enqueue(relay, f"paced-{n}-" + uuid.uuid4().hex[:6])
    stats = drain(relay, concurrency=4)
    assert relay_stack.sandbox.counters.calls_to("m365d", 200) == 5
    assert relay_stack.sandbox.counters.throttled == 0
    assert any(o.detail == "the shared call budget for this window is spent" for o in stats.outcomes)


def test_after_a_429_the_pause_holds_hunts_back_without_spending_calls(relay_stack: RelayStack):
    quota = relay_stack.sandbox.knobs.quota
    quota.calls_per_window, quota.window_seconds = 1, WINDOW
    relay = relay_stack.make()   # the relay's own budget is generous: only the pause protects the quota
    at_window_start()
    for n in range(4):
        enqueue(relay, f"gated-{n}-" + uuid.uuid4().hex[:6])
    stats = drain(relay, concurrency=1)
    held = [o for o in stats.outcomes if o.detail == "paused by a 429"]
    assert relay_stack.sandbox.counters.calls_to("m365d", 200) == 4
    assert held, "hunts dequeued during the pause should be deferred without a call"
    requeues = [o for o in stats.outcomes if o.status == "requeued"]
    assert relay_stack.sandbox.counters.throttled == len(requeues) - len(held)


def test_a_hunt_too_close_to_the_queue_limit_to_go_back_fails_once_instead_of_poisoning(relay_stack: RelayStack):
    relay_stack.sandbox.knobs.faults.status, relay_stack.sandbox.knobs.faults.status_next = 503, 1
    relay = relay_stack.make()
    body = {"id": "near-64k", "api": "m365d", "query": "DeviceInfo | take 1\n//" + "x" * 60_000, "context": {}}
    pad = 64 * 1024 - 20 - len(json.dumps(body, separators=(",", ":")).encode())
    body["context"] = {"p": "y" * pad}   # 20 bytes under the limit: no room for the relay's fields
    relay.hunt_queue.send_message(json.dumps(body, separators=(",", ":")))
    stats = drain(relay)
    assert [(o.status, o.detail) for o in stats.outcomes] == [("failed", "MessageTooLarge")]
    [record] = relay_stack.dead_letters()
    assert record["reason"] == "MessageTooLarge" and "over the queue's 65536-byte limit" in record["error"]["message"]
    assert relay_stack.read_json(relay_stack.results_container, "near-64k.failed.json")["error"]["code"] == \
        "MessageTooLarge"
    assert relay_stack.sandbox.counters.calls_to("m365d") == 1
