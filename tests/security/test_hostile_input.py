"""Hostile queue messages: whatever bytes arrive, the processor ends in a delivered hunt or a dead-letter record,
never an uncaught exception (property test, 10,000 examples), and a sample of them does the same over the real
local stack.

The property runs the real processor with in-memory adapters (the processor's own dependencies are injected:
a client that answers with an empty result, sinks and a dead-letter store that record what they get), so that
10,000 examples take seconds; the integration sample below uses Azurite and the sandbox.
"""

from __future__ import annotations

import base64
import io
import json
import random
from datetime import UTC, datetime
from typing import Any

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.adapters.hunting_client import ResultStream
from shared.app.config import load_settings
from shared.app.processor import HuntProcessor
from shared.core.apis import APIS
from shared.core.outcome import MessageInfo
from shared.core.result_formats import render
from shared.delivery.base import Delivered
from tests.relay.conftest import RelayStack, drain

SETTINGS = load_settings({"AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5",
                          "HUNT_WEBHOOK_ALLOWED_HOSTS": "hooks.example.com"})
NOW = datetime(2026, 11, 23, tzinfo=UTC)


class EmptyResultClient:
    def run(self, api: str, query: str, timespan: str | None = None, tenant: object = None) -> ResultStream:
        response = requests.Response()
        response.status_code = 200
        response.raw = io.BytesIO(b'{"Schema": [{"Name": "x", "Type": "Int64"}], "Results": [{"x": 1}]}')
        return ResultStream(response, APIS[api])


class RecordingSink:
    def __init__(self) -> None:
        self.delivered: list[str] = []

    def already_delivered(self, request: Any) -> bool:
        return False

    def deliver_result(self, request: Any, stream: ResultStream, clock: Any) -> Any:
        out = io.BytesIO()
        summary = render(out, request.format, {"id": request.id, "status": "succeeded", "api": request.api},
                         stream, clock)
        self.delivered.append(request.id)
        return Delivered("memory", summary)

    def deliver_failure(self, job_id: str, failed: dict[str, Any]) -> Any:
        json.dumps(failed)  # a failure envelope must always be serializable
        return Delivered("memory")


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, **record: Any) -> str:
        json.dumps(record["error"])
        self.records.append(record)
        return "memory"


def processor(sink: RecordingSink, dead: RecordingDeadLetters) -> HuntProcessor:
    return HuntProcessor(settings=SETTINGS, client=EmptyResultClient(), sink_for=lambda target: sink,
                         dead_letters=dead, requeue=lambda message, delay: None, gate=None,  # type: ignore[arg-type]
                         render_template=None, clock=lambda: NOW, rand=random.random)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
FIELDS = ["query", "Query", "id", "api", "timespan", "destination", "format", "context", "template", "parameters",
          "attempt", "first_enqueued_at", "version", "last_error", "pending_delivery", "extra"]
plausible = st.dictionaries(st.sampled_from(FIELDS), json_values | st.sampled_from(
    ["mde", "m365d", "graph", "json", "csv", "ndjson", "P7D", "DeviceInfo | take 1", "job-1",
     "https://hooks.example.com/x", "https://evil.example/x", "../../x", "default"]), max_size=8)
messages = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=2048).map(lambda t: t.encode("utf-8", "surrogatepass")),
    plausible.map(lambda d: json.dumps(d).encode()),
    plausible.map(lambda d: base64.b64encode(json.dumps(d).encode())),
    st.integers(1, 200).map(lambda n: ("[" * n + "]" * n).encode()),
    st.just(b"{" + b" " * 70_000 + b"}"),
)


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_any_bytes_end_delivered_or_dead_lettered_never_as_an_exception(raw: bytes):
    sink, dead = RecordingSink(), RecordingDeadLetters()
    outcome = processor(sink, dead).process(MessageInfo(raw, "queue-msg-1", 1))
    if outcome.status == "delivered":
        assert sink.delivered == [outcome.job_id] and dead.records == []
    else:
        assert outcome.status in ("rejected", "failed")
        assert len(dead.records) == 1 and dead.records[0]["raw"] == raw


HOSTILE = [
    b"\x00\xff\xfe garbage",
    b"{" * 5000,
    b'{"query": "DeviceInfo", "id": "../../../etc/passwd"}',
    b'{"query": "DeviceInfo", "id": "a\\u0000b"}',
    json.dumps({"query": "x" * 62_000}).encode(),   # over the 60 KiB query limit, under the queue's 64 KiB
    json.dumps({"query": "DeviceInfo | take 1", "context": {"a": "b" * 9000}}).encode(),
    json.dumps({"query": "DeviceInfo | take 1", "destination": "http://169.254.169.254/metadata"}).encode(),
    base64.b64encode(b"\x80\x81 not utf-8"),
    b"{\"query\": \"\\ud800\"}",
]


def test_hostile_messages_are_dead_lettered_after_one_dequeue_over_the_real_stack(relay_stack: RelayStack):
    relay = relay_stack.make()
    # Queue storage carries text that is valid in XML: binary arrives base64-encoded, as producers send it.
    for raw in HOSTILE:
        text = raw.decode("utf-8", "replace")
        plain = "\ufffd" not in text and all(c >= " " for c in text)
        relay.hunt_queue.send_message(text if plain else base64.b64encode(raw).decode())
    stats = drain(relay)
    assert stats.failed_handler == 0 and stats.poisoned == 0
    assert len(stats.outcomes) == len(HOSTILE)
    assert {o.status for o in stats.outcomes} <= {"rejected", "failed"}
    records = relay_stack.dead_letters()
    assert len(records) == len(HOSTILE) and {r["dequeue_count"] for r in records} == {1}
    assert relay_stack.sandbox.counters.calls_to("mde") == 0
