"""Graph first, over the real stack: legacy hunts run on Graph once their API retires (each form in which a retired
endpoint answers), the retirement is remembered fleet-wide, and a routed hunt's envelope is a native Graph hunt's
plus `requested_api` and `warnings`."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from shared.app.config import load_settings
from shared.app.relay import Relay
from shared.core.routing import RETIREMENT
from tests.relay.conftest import RelayStack, drain

QUERY = "DeviceInfo | project DeviceName, OSPlatform | order by DeviceName asc | take 3"
FORMS = ("gone", "not_found", "code", "message")


def relay_at(relay_stack: RelayStack, mode: str, *, now: Any = None) -> Relay:
    env = relay_stack.env(HUNT_LEGACY_APIS=mode)
    relay = Relay(load_settings(env), clock=now) if now is not None else Relay(load_settings(env))
    relay.ensure_resources()
    return relay


def hunt(relay: Relay, relay_stack: RelayStack, api: str) -> dict[str, Any]:
    job = f"{api}-" + uuid.uuid4().hex[:8]
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, "api": api}))
    [outcome] = drain(relay).outcomes
    assert outcome.status == "delivered", outcome
    return relay_stack.read_json(relay_stack.results_container, f"{job}.json")  # type: ignore[no-any-return]


def comparable(envelope: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in envelope.items() if k not in ("id", "submitted_at", "completed_at", "stats")}


@pytest.mark.parametrize("form", FORMS)
def test_a_legacy_hunt_whose_api_answers_as_retired_runs_on_graph_and_the_fleet_remembers(
        relay_stack: RelayStack, form: str):
    relay_stack.sandbox.knobs.retired_apis = ["mde"]
    relay_stack.sandbox.knobs.retired_form = form
    routed = hunt(relay_at(relay_stack, "auto"), relay_stack, "mde")
    native = hunt(relay_at(relay_stack, "auto"), relay_stack, "graph")
    assert (routed["api"], routed["requested_api"]) == ("graph", "mde")
    assert routed["warnings"] == ["the mde API answered as retired; the hunt ran on Microsoft Graph"]
    assert routed["attempts"] == 1   # re-run on Graph at once, without spending an attempt
    assert comparable({k: v for k, v in routed.items() if k not in ("requested_api", "warnings")}) == \
        comparable(native)
    calls = relay_stack.sandbox.counters
    assert calls.calls_to("mde") == 1
    again = hunt(relay_at(relay_stack, "auto"), relay_stack, "mde")   # another instance: no call to learn it
    assert again["api"] == "graph" and calls.calls_to("mde") == 1 and calls.calls_to("graph", 200) == 3


def test_after_the_date_a_legacy_hunt_runs_on_graph_without_asking_the_legacy_api(relay_stack: RelayStack):
    after = relay_at(relay_stack, "auto", now=lambda: RETIREMENT + timedelta(minutes=1))
    envelope = hunt(after, relay_stack, "m365d")
    assert (envelope["api"], envelope["requested_api"]) == ("graph", "m365d")
    assert "was retired on 2027-02-01" in envelope["warnings"][0]
    assert relay_stack.sandbox.counters.calls_to("m365d") == 0


def test_before_the_date_auto_runs_a_legacy_hunt_on_its_own_api(relay_stack: RelayStack):
    before = relay_at(relay_stack, "auto", now=lambda: RETIREMENT - timedelta(days=1))
    envelope = hunt(before, relay_stack, "mde")
    assert envelope["api"] == "mde" and "requested_api" not in envelope and "warnings" not in envelope


def test_graph_mode_never_asks_a_legacy_api(relay_stack: RelayStack):
    envelope = hunt(relay_at(relay_stack, "graph"), relay_stack, "mde")
    assert (envelope["api"], envelope["requested_api"]) == ("graph", "mde")
    assert relay_stack.sandbox.counters.calls_to("mde") == 0


def test_legacy_mode_keeps_the_named_api_and_a_retired_answer_is_a_failure(relay_stack: RelayStack):
    relay_stack.sandbox.knobs.retired_apis = ["mde"]
    relay = relay_at(relay_stack, "legacy")
    relay.hunt_queue.send_message(json.dumps({"id": "legacy-" + uuid.uuid4().hex[:8], "query": QUERY, "api": "mde"}))
    [outcome] = drain(relay).outcomes
    assert outcome.status == "failed" and relay_stack.sandbox.counters.calls_to("graph") == 0


def test_graph_is_the_default_api(relay_stack: RelayStack):
    env = relay_stack.env()
    del env["HUNT_API"]
    assert load_settings(env).api == "graph"
