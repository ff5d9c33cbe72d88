"""The circuit breaker per destination over the real stack: a webhook receiver that fails opens the circuit; the
hunts meanwhile run their query once and keep their results without calling the receiver; after the cool-off a
probe finds it recovered and every result is delivered once: no query re-run, no quota spent on redelivery. A 410
opens the circuit until an operator closes it. The circuit is shared by every instance (one table).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

from sandbox.webhook_receiver import WebhookReceiver
from shared.app.relay import Relay
from shared.core.outcome import Cause
from tests.relay.conftest import RelayStack, drain

QUERY = "DeviceInfo | take 2"


def settings(relay_stack: RelayStack, receiver: WebhookReceiver, **extra: str) -> dict[str, str]:
    return {"HUNT_DESTINATIONS": json.dumps({"hook": {"type": "webhook", "url": receiver.url + "/hook"}}),
            "HUNT_DEFAULT_DESTINATION": "hook", "HUNT_BREAKER_FAILURES": "2", "HUNT_BREAKER_WINDOW": "5m",
            "HUNT_BREAKER_COOL_OFF": "2s", **extra}


def enqueue(relay: Relay, count: int, tag: str) -> list[str]:
    jobs = [f"{tag}-{n}" for n in range(count)]
    for job in jobs:
        relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY}))
    return jobs


def receive_one(relay: Relay, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """The next message on the hunt queue, once its delay has passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in relay.hunt_queue.receive_messages(max_messages=1, visibility_timeout=5):
            return message
        time.sleep(0.2)
    raise TimeoutError("no message became visible")


def test_a_failing_webhook_opens_the_circuit_and_its_recovery_delivers_each_result_once_without_re_running(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    relay = relay_stack.make(**settings(relay_stack, webhook_receiver))
    webhook_receiver.replies = [503, 503]
    webhook_receiver.reply_headers = {"Retry-After": "0"}
    jobs = enqueue(relay, 5, "brk-" + uuid.uuid4().hex[:6])
    drained = drain(relay, concurrency=1)

    # Two failures opened it: every later first delivery was held (no POST) until the probe.
    # Two failed POSTs (the receiver's two 503s), then each job once: the POSTs after them are all answered 200.
    assert len(webhook_receiver.requests) == 2 + len(jobs)
    assert sorted(json.loads(r.body)["id"] for r in webhook_receiver.requests[2:]) == sorted(jobs)
    held = [o for o in drained.outcomes if o.cause is Cause.DELIVERY_RETRY and "circuit is open" in o.detail]
    assert len(held) >= 3
    # The query ran once per hunt and the quota gate was never asked again for a redelivery.
    assert relay_stack.sandbox.counters.calls_to("mde") == len(jobs)
    delivered = [o for o in drained.outcomes if o.cause is Cause.DELIVERED]
    assert sorted(o.job_id for o in delivered) == sorted(jobs)
    assert all(o.attempt is not None and o.attempt <= 2 for o in delivered)   # a held copy spends no attempt
    assert relay_stack.dead_letters() == []
    assert relay.breakers is not None
    [view] = relay.breakers.views()
    assert (view.key, view.state, view.failures) == ("home.hook", "closed", 0)


def test_410_opens_the_circuit_until_an_operator_closes_it_and_another_instance_holds_too(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    env = settings(relay_stack, webhook_receiver, HUNT_BREAKER_COOL_OFF="1s", HUNT_MAX_AGE="1h")
    first = relay_stack.make(**env)
    second = relay_stack.make(**env)   # another instance: same tables, its own process state
    webhook_receiver.replies = [410]
    tag = "gone-" + uuid.uuid4().hex[:6]
    gone = first.handle(json.dumps({"id": f"{tag}-a", "query": QUERY}).encode(), message_id="m1", dequeue_count=1)
    assert (gone.cause, gone.error_code) == (Cause.FAILED, "DeliveryRefused")
    held = second.handle(json.dumps({"id": f"{tag}-b", "query": QUERY}).encode(), message_id="m2",
                         dequeue_count=1)
    assert held.cause is Cause.DELIVERY_RETRY and "until an operator closes it" in held.detail
    assert len(webhook_receiver.requests) == 1
    assert second.breakers is not None
    [view] = second.breakers.views()
    assert view.state == "gone" and "410" in (view.reason or "")

    # The held copy keeps coming back without a call while the circuit stays open.
    copy = receive_one(second)
    again = second.handle(str(copy.content).encode(), message_id=copy.id, dequeue_count=1)
    assert again.cause is Cause.DELIVERY_RETRY and len(webhook_receiver.requests) == 1
    second.hunt_queue.delete_message(copy)

    env_all = {**relay_stack.env(), **env}
    listed = subprocess.run([sys.executable, "-m", "shared", "breaker"], env=env_all, capture_output=True,
                            text=True, timeout=60)
    assert json.loads(listed.stdout.splitlines()[0])["state"] == "gone"
    closed = subprocess.run([sys.executable, "-m", "shared", "breaker", "close", "home.hook"], env=env_all,
                            capture_output=True, text=True, timeout=60)
    assert closed.returncode == 0, closed.stderr
    unknown = subprocess.run([sys.executable, "-m", "shared", "breaker", "close", "home.nothing"], env=env_all,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and "no circuit" in unknown.stderr

    stats = drain(second)   # within the cache's few seconds the instance may hold once more, then delivers
    assert [o.cause for o in stats.outcomes][-1] is Cause.DELIVERED
    assert [json.loads(r.body)["id"] for r in webhook_receiver.requests[1:]] == [f"{tag}-b"]
    assert relay_stack.sandbox.counters.calls_to("mde") == 2
