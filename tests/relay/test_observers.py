"""Outcomes as events: every handled message's Outcome, with its typed cause, reaches each observer once, after its
fate is decided (the copy is on the queue, the record is written); an observer that fails changes nothing."""

from __future__ import annotations

import json
import uuid

from shared.app.config import load_settings
from shared.app.observers import CauseCounts
from shared.app.relay import Relay
from shared.core.outcome import Cause, MessageInfo, Outcome
from tests.relay.conftest import RecordingObserver, RelayStack


class Broken:
    def __call__(self, outcome: Outcome, message: MessageInfo) -> None:
        raise RuntimeError("an observer's own bug")


def test_each_observer_sees_each_outcome_once_with_its_cause_after_its_fate_is_decided(relay_stack: RelayStack):
    seen = RecordingObserver()
    counts = CauseCounts()
    queued_when_seen: list[int] = []

    def queue_length(outcome: Outcome, message: MessageInfo) -> None:
        queued_when_seen.append(relay.hunt_queue.get_queue_properties().approximate_message_count)

    relay = Relay(load_settings(relay_stack.env()), rand=lambda: 0.0,
                  observers=[Broken(), seen, counts, queue_length])
    relay.ensure_resources()
    relay_stack.sandbox.knobs.faults.status_next = 1   # the first call: a 503
    job = "observed-" + uuid.uuid4().hex[:8]
    raw = json.dumps({"id": job, "query": "DeviceInfo | take 1"}).encode()
    first = relay.handle(raw, message_id="m1", dequeue_count=1)
    rejected = relay.handle(b"not a hunt", message_id="m2", dequeue_count=1)
    assert (first.cause, first.status, rejected.cause) == (Cause.TRANSIENT, "requeued", Cause.REJECTED)
    [copy] = relay.hunt_queue.receive_messages(max_messages=1)
    delivered = relay.handle(str(copy.content).encode(), message_id=copy.id, dequeue_count=1)
    assert delivered.cause == Cause.DELIVERED and delivered.rows == 1
    assert seen.outcomes == [first, rejected, delivered]
    assert counts.snapshot() == {Cause.TRANSIENT: 1, Cause.REJECTED: 1, Cause.DELIVERED: 1}
    assert queued_when_seen[0] == 1   # the copy was already on the queue when the observers heard of it
