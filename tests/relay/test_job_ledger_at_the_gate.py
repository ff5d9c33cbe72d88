"""The job ledger at the quota gate, over the real relay (Azurite and the sandbox): a hunt that began before is marked
running only once the gate lets it call, so a copy the gate sends back again costs the ledger one write."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.core.hunt_request import decode_hunt_request
from shared.core.outcome import Cause
from shared.core.quota import Admit
from tests.adapters.test_job_ledger_begin import CountingTable
from tests.relay.conftest import RelayStack

QUERY = "DeviceInfo | take 1"


def gate_copy(relay, job: str) -> bytes:
    """The copy of `job` the quota gate sent back once (marked by the relay, as its own copies are)."""
    request = decode_hunt_request(json.dumps({"id": job, "query": QUERY, "api": "mde"}), message_id=job,
                                  default_api="mde", now=datetime.now(UTC))
    return replace(request, gate_waits=1).to_message(relay.mark).encode()


def test_a_copy_the_gate_sends_back_again_writes_the_ledger_once(relay_stack: RelayStack):
    relay = relay_stack.make(HUNT_QUOTA_WINDOWS="1/3600s")
    assert relay.gates is not None and relay.jobs is not None
    assert isinstance(relay.gates.admit("mde"), Admit)   # the hour's one call is spent
    job = "gate-copy-" + uuid.uuid4().hex[:8]
    counted = CountingTable(relay.jobs._table)
    relay.jobs._table = counted

    outcome = relay.handle(gate_copy(relay, job), message_id=job, dequeue_count=1)

    assert outcome.cause is Cause.GATE_WAIT
    assert counted.calls == ["upsert_entity"]   # the outcome's record; no "running" first
    record = relay.jobs.get(None, job)
    assert record is not None and record.status == "throttled"


def test_a_copy_the_gate_lets_call_is_marked_running_before_its_call(relay_stack: RelayStack,
                                                                      monkeypatch: pytest.MonkeyPatch):
    relay = relay_stack.make()
    assert relay.jobs is not None
    job = "gate-copy-" + uuid.uuid4().hex[:8]
    seen_at_call: list[str | None] = []
    count_call = relay_stack.sandbox.counters.count_call

    def recording(endpoint: str, status: int) -> None:
        if endpoint == "mde":
            record = relay.jobs.get(None, job)
            seen_at_call.append(None if record is None else record.status)
        count_call(endpoint, status)

    monkeypatch.setattr(relay_stack.sandbox.counters, "count_call", recording)

    outcome = relay.handle(gate_copy(relay, job), message_id=job, dequeue_count=1)

    assert outcome.cause is Cause.DELIVERED
    assert seen_at_call == ["running"]
    record = relay.jobs.get(None, job)
    assert record is not None and record.status == "delivered"
