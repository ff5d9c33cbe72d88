"""OpenTelemetry for the relay: one observer that turns each handled message's Outcome into a span (with a child
span per timed step, shared.app.steps) and into metrics. Nothing else in the relay calls OpenTelemetry.

Where it goes, chosen by the environment, as OpenTelemetry's own variables say:

    APPLICATIONINSIGHTS_CONNECTION_STRING set   Azure Monitor, through azure-monitor-opentelemetry (the distro's
                                                automatic instrumentations and its log export are off: requests'
                                                spans would carry webhook URLs, and the Functions host ships logs)
    OTEL_EXPORTER_OTLP_ENDPOINT set             OTLP over HTTP (protobuf), to that collector
    neither                                     off: no observer, no wrapper, nothing recorded

`hunt.error_code` repeats `error.type`: Azure Monitor's exporter keeps the standard `error.type` out of a span's
custom dimensions, where the workbook reads it.

What is exported: the attributes listed in SPAN_ATTRIBUTES and METRIC_ATTRIBUTES, nothing else (the observer
builds every attribute itself). Never secrets, tokens, result rows or the query text: a hunt is named by its job
id, tenant, API and cause; a destination by its configured name, never its URL.

    metric                         kind        unit  attributes
    hunt_relay.hunts               counter     1     hunt.status, hunt.cause, hunt.api, hunt.tenant
    hunt_relay.throttled           counter     1     hunt.api, hunt.tenant (the API's 429s)
    hunt_relay.gate.waits          counter     1     hunt.api, hunt.tenant (the fleet gate said not now)
    hunt_relay.hunt.duration       histogram   s     hunt.status, hunt.api, hunt.tenant (first enqueue to its end)
    hunt_relay.api.duration        histogram   s     hunt.api, hunt.tenant, http.response.status_code
    hunt_relay.result.rows         histogram   1     hunt.api, hunt.tenant
    hunt_relay.result.bytes        histogram   By    hunt.api, hunt.tenant
    hunt_relay.quota.calls_left    gauge       1     hunt.api, hunt.tenant, hunt.quota.window
    hunt_relay.queue.depth         gauge       1     messaging.destination.name
    hunt_relay.breaker.open        gauge       1     hunt.destination (1 open, 0 closed)

The workbook (infra/app/workbook.json) charts these names; its contract test reads METRICS.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from shared.core.outcome import AttributeValue, Cause, MessageInfo, Outcome

logger = logging.getLogger(__name__)

INSTRUMENTATION = "hunt_relay"


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str   # counter | histogram | gauge
    unit: str
    description: str


METRICS: tuple[Metric, ...] = (
    Metric("hunt_relay.hunts", "counter", "1", "handled queue messages, by status and cause"),
    Metric("hunt_relay.throttled", "counter", "1", "429 answers from a hunting API"),
    Metric("hunt_relay.gate.waits", "counter", "1", "hunts the fleet's quota gate sent back to wait"),
    Metric("hunt_relay.hunt.duration", "histogram", "s", "time from a hunt's first enqueue to its end"),
    Metric("hunt_relay.api.duration", "histogram", "s", "a hunting API call, up to its response's head"),
    Metric("hunt_relay.result.rows", "histogram", "1", "rows of a delivered result"),
    Metric("hunt_relay.result.bytes", "histogram", "By", "bytes of a delivered result"),
    Metric("hunt_relay.quota.calls_left", "gauge", "1", "calls left in the current quota window"),
    Metric("hunt_relay.queue.depth", "gauge", "1", "messages on the hunt queue and its poison queue"),
    Metric("hunt_relay.breaker.open", "gauge", "1", "a destination's circuit breaker: 1 open, 0 closed"),
)

SPAN_ATTRIBUTES = frozenset({
    "hunt.job_id", "hunt.tenant", "hunt.api", "hunt.cause", "hunt.status", "hunt.attempt", "hunt.rows",
    "hunt.bytes", "hunt.delay_seconds", "hunt.error_code", "error.type", "messaging.message.id",
    "messaging.destination.name", "messaging.message.delivery_count",
    # the steps' (shared.app.steps)
    "hunt.gate.verdict", "hunt.gate.wait_seconds", "http.response.status_code", "hunt.destination",
    "hunt.destination.kind", "hunt.delivery.answer", "hunt.delivery.kind", "hunt.breaker",
})
METRIC_ATTRIBUTES = frozenset({"hunt.status", "hunt.cause", "hunt.api", "hunt.tenant", "http.response.status_code",
                               "hunt.quota.window", "messaging.destination.name", "hunt.destination"})

FINAL_STATUSES = frozenset({"delivered", "failed", "rejected", "duplicate", "cancelled"})
FAILED_STATUSES = frozenset({"failed", "rejected"})

GaugeSource = Callable[[], Iterable[tuple[int | float, Mapping[str, AttributeValue]]]]


class Telemetry:
    """The relay's instruments over a tracer and a meter provider (the SDK's in tests, with in-memory readers)."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider, *, queue: str,
                 exporter: str = "custom") -> None:
        self.exporter = exporter
        self._tracer = tracer_provider.get_tracer(INSTRUMENTATION)
        self._meter = meter_provider.get_meter(INSTRUMENTATION)
        self._queue = queue
        by_name = {m.name: m for m in METRICS}

        def counter(name: str) -> Any:
            return self._meter.create_counter(name, unit=by_name[name].unit, description=by_name[name].description)

        def histogram(name: str) -> Any:
            return self._meter.create_histogram(name, unit=by_name[name].unit,
                                                description=by_name[name].description)

        self._hunts = counter("hunt_relay.hunts")
        self._throttled = counter("hunt_relay.throttled")
        self._gate_waits = counter("hunt_relay.gate.waits")
        self._duration = histogram("hunt_relay.hunt.duration")
        self._api_duration = histogram("hunt_relay.api.duration")
        self._rows = histogram("hunt_relay.result.rows")
        self._bytes = histogram("hunt_relay.result.bytes")

    def watch(self, name: str, source: GaugeSource) -> None:
        """An observable gauge read at each export (`source` gives value and attributes pairs; one that fails
        is logged and reports nothing that round)."""
        metric = next(m for m in METRICS if m.name == name and m.kind == "gauge")

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            try:
                return [Observation(value, dict(attributes)) for value, attributes in source()]
            except Exception as error:
                logger.warning("telemetry: the gauge %s could not be read (%s)", name, type(error).__name__)
                return []

        self._meter.create_observable_gauge(name, callbacks=[observe], unit=metric.unit,
                                            description=metric.description)

    def api_latency(self, seconds: float, api: str, tenant: str | None, status: int | None) -> None:
        attributes: dict[str, AttributeValue] = {"hunt.api": api, "hunt.tenant": tenant or "home"}
        if status is not None:
            attributes["http.response.status_code"] = status
        self._api_duration.record(seconds, attributes)

    def observer(self) -> TelemetryObserver:
        return TelemetryObserver(self)

    # --- what the observer records --------------------------------------------------------------------------

    def _span(self, outcome: Outcome, attributes: dict[str, AttributeValue]) -> None:
        timing = outcome.timing
        if timing is None:
            return
        span = self._tracer.start_span("hunt", kind=SpanKind.CONSUMER, start_time=timing.start_ns,
                                       attributes=attributes)
        parent = trace.set_span_in_context(span)
        for step in timing.steps:
            child = self._tracer.start_span(step.name, context=parent, start_time=step.start_ns,
                                            attributes=dict(step.attributes))
            child.end(end_time=step.end_ns)
        if outcome.status in FAILED_STATUSES or outcome.cause is Cause.POISON:
            span.set_status(Status(StatusCode.ERROR, outcome.error_code or outcome.cause.value))
        span.end(end_time=timing.end_ns)

    def _count(self, outcome: Outcome, now: datetime) -> None:
        tenant = outcome.tenant or "home"
        api = outcome.api or "none"
        self._hunts.add(1, {"hunt.status": outcome.status, "hunt.cause": outcome.cause.value, "hunt.api": api,
                            "hunt.tenant": tenant})
        where = {"hunt.api": api, "hunt.tenant": tenant}
        if outcome.cause is Cause.THROTTLED:
            self._throttled.add(1, where)
        elif outcome.cause is Cause.GATE_WAIT:
            self._gate_waits.add(1, where)
        if outcome.status in FINAL_STATUSES and outcome.first_enqueued_at is not None:
            self._duration.record(max(0.0, (now - outcome.first_enqueued_at).total_seconds()),
                                  {"hunt.status": outcome.status, **where})
        if outcome.cause is Cause.DELIVERED:
            if outcome.rows is not None:
                self._rows.record(outcome.rows, where)
            if outcome.bytes is not None:
                self._bytes.record(outcome.bytes, where)

    def record(self, outcome: Outcome, message: MessageInfo, now: datetime) -> None:
        attributes: dict[str, AttributeValue] = {
            "hunt.job_id": outcome.job_id, "hunt.tenant": outcome.tenant or "home", "hunt.cause": outcome.cause.value,
            "hunt.status": outcome.status, "messaging.message.id": message.message_id,
            "messaging.destination.name": self._queue,
        }
        optional: dict[str, AttributeValue | None] = {
            "hunt.api": outcome.api, "hunt.attempt": outcome.attempt, "hunt.rows": outcome.rows,
            "hunt.bytes": outcome.bytes, "error.type": outcome.error_code, "hunt.error_code": outcome.error_code,
            "hunt.delay_seconds": None if outcome.delay is None else round(outcome.delay, 3),
            "messaging.message.delivery_count": message.dequeue_count,
        }
        attributes.update({key: value for key, value in optional.items() if value is not None})
        self._span(outcome, attributes)
        self._count(outcome, now)


class TelemetryObserver:
    """An Observer (shared.core.outcome): a span and metrics per handled message."""

    def __init__(self, telemetry: Telemetry, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._telemetry = telemetry
        self._clock = clock

    def __call__(self, outcome: Outcome, message: MessageInfo) -> None:
        self._telemetry.record(outcome, message, self._clock())


# --- configuration from the environment -------------------------------------------------------------------------

def exporter_of(environ: Mapping[str, str]) -> str:
    """Which exporter the environment chooses: azure_monitor, otlp or off."""
    if environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return "azure_monitor"
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return "off"


@functools.cache
def _providers(exporter: str) -> tuple[TracerProvider, MeterProvider]:
    """The process's providers, configured once (OpenTelemetry's global providers can be set only once)."""
    if exporter == "azure_monitor":
        from azure.monitor.opentelemetry import configure_azure_monitor
        from azure.monitor.opentelemetry._constants import _ALL_SUPPORTED_INSTRUMENTED_LIBRARIES

        configure_azure_monitor(
            instrumentation_options={name: {"enabled": False} for name in _ALL_SUPPORTED_INSTRUMENTED_LIBRARIES},
            disable_logging=True, enable_live_metrics=False)
        return trace.get_tracer_provider(), metrics.get_meter_provider()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "hunt-relay"})
    tracer_provider = SdkTracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = SdkMeterProvider(resource=resource,
                                      metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())])
    return tracer_provider, meter_provider


def telemetry_from_environment(environ: Mapping[str, str], *, queue: str) -> Telemetry | None:
    """The relay's telemetry as the environment configures it; None when it is off."""
    exporter = exporter_of(environ)
    if exporter == "off":
        return None
    tracer_provider, meter_provider = _providers(exporter)
    logger.info("telemetry: exporting spans and metrics to %s", exporter.replace("_", " "))
    return Telemetry(tracer_provider, meter_provider, queue=queue, exporter=exporter)
