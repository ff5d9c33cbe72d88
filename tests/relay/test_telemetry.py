"""OpenTelemetry over the real stack: each outcome cause gives one `hunt` span with its exact attributes and the
child spans of its steps (gate, token, API call, delivery), and the metrics count it; no secret, token, query text
or result row reaches any exported attribute (and every exported attribute also goes through the suite's log
audit). The SDK's in-memory exporters stand in for Azure Monitor and OTLP.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sandbox.dataset import KNOWN_DEVICE_ID
from sandbox.webhook_receiver import WebhookReceiver
from shared.adapters import telemetry as telemetry_module
from shared.adapters.telemetry import METRIC_ATTRIBUTES, METRICS, SPAN_ATTRIBUTES, Telemetry, exporter_of
from shared.app.config import load_settings
from shared.app.relay import Relay
from shared.core.hunt_request import decode_hunt_request
from shared.core.outcome import Cause, Outcome
from tests.log_audit import LEAKS
from tests.relay.conftest import RelayStack

QUERY = "DeviceProcessEvents | where DeviceId == '" + KNOWN_DEVICE_ID + "' | take 3"
audit_log = logging.getLogger("tests.telemetry.exported")


@dataclass
class Exported:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    telemetry: Telemetry

    def hunt_spans(self) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == "hunt"]

    def children(self, parent: ReadableSpan) -> list[str]:
        assert parent.context is not None
        return [span.name for span in self.spans.get_finished_spans()
                if span.parent is not None and span.parent.span_id == parent.context.span_id]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            value = getattr(point, "value", None)
                            found.append((dict(point.attributes or {}), value if value is not None else point))
        return found

    def counted(self, name: str, **where: Any) -> int:
        return sum(value for attributes, value in self.points(name)
                   if all(attributes.get(k) == v for k, v in where.items()))


def every_exported_value(exported: Exported) -> list[tuple[str, str]]:
    values = [(f"span {span.name} {key}", str(value)) for span in exported.spans.get_finished_spans()
              for key, value in (span.attributes or {}).items()]
    values += [(f"span {span.name} status", str(span.status.description)) for span in
               exported.spans.get_finished_spans()]
    data = exported.metrics.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    values += [(f"metric {metric.name} {key}", str(value))
                               for key, value in (point.attributes or {}).items()]
    return values


@pytest.fixture
def exported(relay_stack: RelayStack) -> Iterator[Exported]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    result = Exported(spans, reader, Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]),
                                               queue=relay_stack.queue))
    yield result
    # The suite's log audit (tests/log_audit.py) reads every exported attribute too.
    for where, value in every_exported_value(result):
        audit_log.debug("exported %s = %s", where, value)


def make(relay_stack: RelayStack, exported: Exported, **extra: str) -> Relay:
    relay = Relay(load_settings(relay_stack.env("client_secret", **extra)), telemetry=exported.telemetry,
                  rand=lambda: 0.0)
    relay.ensure_resources()
    return relay


def hunt(job: str, **fields: Any) -> bytes:
    return json.dumps({"id": job, "query": QUERY, **fields}).encode()


def handle(relay: Relay, raw: bytes, message_id: str = "m-1") -> Outcome:
    return relay.handle(raw, message_id=message_id, dequeue_count=1)


def test_a_delivered_hunt_is_one_span_with_its_exact_attributes_and_a_child_per_step(
        relay_stack: RelayStack, exported: Exported):
    relay = make(relay_stack, exported)
    job = "tel-ok-" + uuid.uuid4().hex[:8]
    outcome = handle(relay, hunt(job), "m-ok")
    assert outcome.cause is Cause.DELIVERED
    [span] = exported.hunt_spans()
    assert outcome.bytes is not None and outcome.bytes > 0
    assert dict(span.attributes or {}) == {
        "hunt.job_id": job, "hunt.tenant": "home", "hunt.cause": "delivered", "hunt.status": "delivered",
        "hunt.api": "mde", "hunt.attempt": 1, "hunt.rows": 3, "hunt.bytes": outcome.bytes,
        "messaging.message.id": "m-ok", "messaging.destination.name": relay_stack.queue,
        "messaging.message.delivery_count": 1}
    assert exported.children(span) == ["gate", "token", "api_call", "delivery"]
    steps = {s.name: dict(s.attributes or {}) for s in exported.spans.get_finished_spans() if s.name != "hunt"}
    assert steps["gate"] == {"hunt.api": "mde", "hunt.gate.verdict": "admit"}
    assert steps["token"] == {"hunt.tenant": "home"}
    assert steps["api_call"] == {"hunt.api": "mde", "http.response.status_code": 200}
    assert steps["delivery"] == {"hunt.destination.kind": "blob", "hunt.destination": "default",
                                 "hunt.bytes": outcome.bytes, "hunt.rows": 3}
    # Children sit inside their hunt's span.
    for child in exported.spans.get_finished_spans():
        assert span.start_time is not None and span.end_time is not None and child.start_time is not None
        assert span.start_time <= child.start_time and (child.end_time or 0) <= span.end_time
    assert exported.counted("hunt_relay.hunts", **{"hunt.cause": "delivered", "hunt.api": "mde",
                                                   "hunt.tenant": "home", "hunt.status": "delivered"}) == 1
    [(attributes, rows)] = exported.points("hunt_relay.result.rows")
    assert attributes == {"hunt.api": "mde", "hunt.tenant": "home"} and rows.sum == 3 and rows.count == 1
    [(_, size)] = exported.points("hunt_relay.result.bytes")
    assert size.sum == outcome.bytes
    [(_, latency)] = exported.points("hunt_relay.api.duration")
    assert latency.count == 1 and latency.sum > 0
    [(attributes, duration)] = exported.points("hunt_relay.hunt.duration")
    assert attributes["hunt.status"] == "delivered" and duration.count == 1


def test_every_cause_is_counted_and_spanned_with_its_cause_and_error(
        relay_stack: RelayStack, exported: Exported, webhook_receiver: WebhookReceiver):
    sandbox = relay_stack.sandbox
    relay = make(relay_stack, exported, HUNT_QUOTA_WINDOWS="3/60s", HUNT_DESTINATIONS=json.dumps({
        "results": {"type": "blob", "container": relay_stack.results_container},
        "hook": {"type": "webhook", "url": webhook_receiver.url + "/hook"}}), HUNT_DEFAULT_DESTINATION="results")
    tag = uuid.uuid4().hex[:6]
    causes: dict[Cause, Outcome] = {}

    def run(cause: Cause, raw: bytes, poison: bool = False) -> None:
        outcome = relay.handle_poison(raw, message_id="m", dequeue_count=6) if poison else handle(relay, raw)
        assert outcome.cause is cause, (cause, outcome)
        causes[cause] = outcome

    run(Cause.DELIVERED, hunt(f"d-{tag}"))
    run(Cause.DUPLICATE, hunt(f"d-{tag}"))
    sandbox.knobs.faults.status_next = 1
    run(Cause.TRANSIENT, hunt(f"t-{tag}"))
    webhook_receiver.replies = [503]
    run(Cause.DELIVERY_RETRY, hunt(f"r-{tag}", destination="hook"))
    run(Cause.GATE_WAIT, hunt(f"g-{tag}"))   # the gate's 3 calls a minute are spent
    run(Cause.REJECTED, b"not a hunt")
    run(Cause.POISON, hunt(f"p-{tag}"), poison=True)
    request = decode_hunt_request(hunt(f"c-{tag}"), message_id="m", default_api="mde", now=datetime.now(UTC))
    assert relay.jobs is not None
    relay.jobs.submit(request, "mde")
    relay.jobs.cancel(None, request.id)
    run(Cause.CANCELLED, hunt(f"c-{tag}"))

    relay2 = make(relay_stack, exported, HUNT_QUOTA_WINDOWS="1000/60s")
    outcome = handle(relay2, json.dumps({"id": f"f-{tag}", "query": "NoSuchTable | take 1"}).encode())
    assert outcome.cause is Cause.FAILED
    causes[Cause.FAILED] = outcome
    sandbox.knobs.quota.calls_per_window = 0   # the next call: a 429 (which pauses this relay's gate)
    outcome = handle(relay2, hunt(f"q-{tag}"))
    assert outcome.cause is Cause.THROTTLED
    causes[Cause.THROTTLED] = outcome

    spans = {str((span.attributes or {})["hunt.job_id"]) + ":" + str((span.attributes or {})["hunt.cause"]): span
             for span in exported.hunt_spans()}
    for cause, outcome in causes.items():
        span = spans[f"{outcome.job_id}:{cause.value}"]
        attributes = dict(span.attributes or {})
        assert attributes["hunt.status"] == outcome.status
        assert attributes.get("error.type") == outcome.error_code
        assert set(attributes) <= SPAN_ATTRIBUTES
        assert exported.counted("hunt_relay.hunts", **{"hunt.cause": cause.value}) >= 1, cause
        failed = outcome.status in ("failed", "rejected")
        assert (span.status.status_code.name == "ERROR") is failed, cause
    assert spans[f"f-{tag}:failed"].status.description == causes[Cause.FAILED].error_code
    assert dict(spans[f"g-{tag}:gate_wait"].attributes or {})["hunt.delay_seconds"] > 0
    assert exported.children(spans[f"c-{tag}:cancelled"]) == []   # stopped before the gate: no step at all
    assert "delivery" in exported.children(spans[f"r-{tag}:delivery_retry"])
    assert exported.counted("hunt_relay.throttled", **{"hunt.api": "mde", "hunt.tenant": "home"}) == 1
    assert exported.counted("hunt_relay.gate.waits", **{"hunt.api": "mde", "hunt.tenant": "home"}) == 1
    # Final outcomes (not requeues) have a time from first enqueue.
    durations = {attributes["hunt.status"] for attributes, _ in exported.points("hunt_relay.hunt.duration")}
    assert durations == {"delivered", "duplicate", "failed", "cancelled"}


def test_no_secret_token_query_or_row_in_any_exported_attribute(relay_stack: RelayStack, exported: Exported,
                                                                 webhook_receiver: WebhookReceiver):
    secret = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Njc4OTA="
    relay = make(relay_stack, exported, HOOK_SECRET=secret, HUNT_DESTINATIONS=json.dumps({
        "results": {"type": "blob", "container": relay_stack.results_container},
        "hook": {"type": "webhook", "url": webhook_receiver.url + "/hook?token=url-secret-123",
                 "secret_setting": "HOOK_SECRET"}}), HUNT_DEFAULT_DESTINATION="results")
    tag = uuid.uuid4().hex[:6]
    assert handle(relay, hunt(f"s1-{tag}")).cause is Cause.DELIVERED
    assert handle(relay, hunt(f"s2-{tag}", destination="hook")).cause is Cause.DELIVERED
    assert handle(relay, json.dumps({"id": f"s3-{tag}", "query": "NoSuchTable | take 1"}).encode()).status == \
        "failed"
    values = every_exported_value(exported)
    assert len(values) > 40
    forbidden = [QUERY, KNOWN_DEVICE_ID, "NoSuchTable", secret, "url-secret-123", "sandbox-secret",
                 webhook_receiver.url]
    for where, value in values:
        for text in forbidden:
            assert text not in value, (where, text)
        for what, pattern in LEAKS:
            assert not pattern.search(value), (where, what)
    for span in exported.spans.get_finished_spans():
        assert set(span.attributes or {}) <= SPAN_ATTRIBUTES, span.name
    data = exported.metrics.get_metrics_data()
    names = set()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                names.add(metric.name)
                for point in metric.data.data_points:
                    assert set(point.attributes or {}) <= METRIC_ATTRIBUTES, metric.name
    assert names <= {metric.name for metric in METRICS}


def test_the_gauges_read_queue_depth_and_open_circuits(relay_stack: RelayStack, exported: Exported):
    relay = make(relay_stack, exported)
    relay.hunt_queue.send_message(hunt("waiting-" + uuid.uuid4().hex[:6]).decode())
    assert relay.breakers is not None
    relay.breakers.gone("home.hook", "webhook hook answered 410 Gone")
    depth = {attributes["messaging.destination.name"]: value
             for attributes, value in exported.points("hunt_relay.queue.depth")}
    assert depth == {relay_stack.queue: 1, relay_stack.queue + "-poison": 0}
    assert exported.points("hunt_relay.breaker.open") == [({"hunt.destination": "home.hook"}, 1)]
    assert exported.points("hunt_relay.quota.calls_left") == [
        ({"hunt.api": "mde", "hunt.tenant": "home", "hunt.quota.window": "60s"}, 1000)]
    assert handle(relay, hunt("counted-" + uuid.uuid4().hex[:6])).cause is Cause.DELIVERED
    assert exported.points("hunt_relay.quota.calls_left")[0][1] == 999


def test_the_exporter_is_chosen_by_the_environment_and_off_without_one():
    assert exporter_of({}) == "off"
    assert exporter_of({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == "otlp"
    assert exporter_of({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x",
                        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == "azure_monitor"
    assert telemetry_module.telemetry_from_environment({}, queue="hunts") is None


def test_without_telemetry_nothing_is_wrapped_or_timed(relay_stack: RelayStack):
    relay = relay_stack.make()
    assert relay.telemetry is None and relay.processor._client is relay.client
    outcome = relay.handle(hunt("plain-" + uuid.uuid4().hex[:6]), message_id="m", dequeue_count=1)
    assert outcome.cause is Cause.DELIVERED and outcome.timing is None
