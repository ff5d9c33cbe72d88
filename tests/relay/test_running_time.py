"""Running-time pacing over the real stack (issue [fleet-perf]): the sandbox charges each query by its cost model
and answers only after that long; the relay meters what each call spent and its quota gate defers the next hunt
before the running-time budget is spent, so the service never answers the running-time 429. When the service's
budget is tighter than the relay's, its 429 ("... run queries again in HH:MM:SS") pauses the tenant's API until
then. mde's Stats.ExecutionTime settles what the call was charged."""

from __future__ import annotations

import json
import uuid

import pytest

from shared.core.outcome import Cause
from tests.relay.conftest import RelayStack

QUERY = "DeviceInfo | take 1"


def hunt(relay, job: str):  # type: ignore[no-untyped-def]
    return relay.handle(json.dumps({"id": job, "query": QUERY}).encode(), message_id=job, dequeue_count=1)


@pytest.fixture
def costly(relay_stack: RelayStack) -> RelayStack:
    quota = relay_stack.sandbox.knobs.quota
    quota.cpu_seconds_per_call = 0.4      # every call is charged 0.4 s of running time
    quota.cpu_latency_ratio = 1.0         # and answers after that long, as a real query would
    quota.cpu_window_seconds = 3600.0
    quota.cpu_extra_windows = []
    return relay_stack


def test_the_gate_defers_a_hunt_before_the_running_time_budget_is_spent(costly: RelayStack):
    costly.sandbox.knobs.quota.cpu_budget_seconds = 1.0   # the service: 1 s an hour
    relay = costly.make(HUNT_RUNTIME_BUDGET="1s/1h")
    tag = uuid.uuid4().hex[:6]
    first, second, third = (hunt(relay, f"rt-{tag}-{n}") for n in range(3))
    assert (first.cause, second.cause) == (Cause.DELIVERED, Cause.DELIVERED)
    # 0.4 s spent twice, estimated 0.4 s more: over 1 s, so the third waits for the window without a call.
    assert third.cause is Cause.GATE_WAIT and "running-time budget" in third.detail
    assert third.delay is not None and third.delay > 60
    counters = costly.sandbox.counters
    assert counters.calls_to("mde") == 2
    assert sum(counters.tenant_running_time_throttled.values()) == 0
    charged = sum(counters.tenant_running_seconds.values())
    assert charged == pytest.approx(0.8, abs=0.01)


def test_a_service_budget_tighter_than_the_relays_gives_the_429_that_pauses_until_its_time(costly: RelayStack):
    costly.sandbox.knobs.quota.cpu_budget_seconds = 0.3   # the first call spends it all
    relay = costly.make(HUNT_RUNTIME_BUDGET="10m/1h")
    tag = uuid.uuid4().hex[:6]
    assert hunt(relay, f"rt429-{tag}-a").cause is Cause.DELIVERED
    throttled = hunt(relay, f"rt429-{tag}-b")
    assert throttled.cause is Cause.THROTTLED
    assert sum(costly.sandbox.counters.tenant_running_time_throttled.values()) == 1
    assert relay.gates is not None
    [usage] = relay.gates.usage()
    assert usage.paused_until is not None
    # The service said when ("run queries again in HH:MM:SS": the hour's end); the gate holds every hunt till then.
    waited = hunt(relay, f"rt429-{tag}-c")
    assert waited.cause is Cause.GATE_WAIT and waited.detail == "paused by a 429"
    assert abs((usage.paused_until - relay.clock()).total_seconds() - (waited.delay or 0)) < 3


def test_stats_execution_time_settles_the_charge(costly: RelayStack):
    quota = costly.sandbox.knobs.quota
    quota.cpu_latency_ratio = 0.0          # the answer comes at once, but Stats says 0.4 s ran
    quota.cpu_budget_seconds = 100.0
    relay = costly.make(HUNT_RUNTIME_BUDGET="1s/1h")
    tag = uuid.uuid4().hex[:6]
    outcomes = [hunt(relay, f"rts-{tag}-{n}") for n in range(4)]
    # The wall clock saw milliseconds; the stated 0.4 s each is what counted: two calls, then the wait.
    assert [o.cause for o in outcomes] == [Cause.DELIVERED, Cause.DELIVERED, Cause.GATE_WAIT, Cause.GATE_WAIT]
    assert costly.sandbox.counters.calls_to("mde") == 2
