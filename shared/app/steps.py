"""A hunt's timed steps, recorded while telemetry is on: the relay wraps the processor's collaborators (the quota
gate, the API client, the credential, each sink) in thin timers, so that the processor itself holds no telemetry
call. Each wrapper appends a Step (shared.core.outcome) to the trail of the message being handled; the relay puts
the trail into the Outcome's `timing`, and the telemetry observer (shared.adapters.telemetry) turns it into child
spans. With telemetry off nothing is wrapped and nothing is recorded.

    gate       QuotaGates.admit           verdict admit | wait, the wait's seconds
    token      a credential's get_token   the tenant (never the token)
    api_call   HuntingClient.run          the API, the HTTP status (the rows stream on in `delivery`)
    delivery   a sink's send / deliver    the destination's kind and name (never a URL), bytes, the answer

The trail lives in a context variable: one per thread, and each handled message runs on one thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential

from shared.adapters.hunting_client import ApiReply, ApiResult, SignInRefused, TransportFailure
from shared.app.processor import Gate, Runner
from shared.core.hunt_request import HuntRequest
from shared.core.outcome import AttributeValue, Step
from shared.core.quota import Admit, Wait
from shared.core.rows import RowStream
from shared.core.tenants import TenantConfig
from shared.delivery.base import Delivered, MessageSink, NotNow, PreparedBody, Refused, SendResult, Sink, StreamSink

_trail: ContextVar[list[Step] | None] = ContextVar("hunt_relay_trail", default=None)


@contextmanager
def recording() -> Iterator[list[Step]]:
    """Steps recorded inside the block, in the order they ended."""
    steps: list[Step] = []
    token = _trail.set(steps)
    try:
        yield steps
    finally:
        _trail.reset(token)


def _record(name: str, start_ns: int, attributes: dict[str, AttributeValue]) -> None:
    steps = _trail.get()
    if steps is not None:
        steps.append(Step(name, start_ns, time.time_ns(), attributes))


class TimedGate:
    """The quota gate (shared.app.processor.Gate), each admission a `gate` step."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def admit(self, api: str, tenant: TenantConfig | None = None) -> Admit | Wait:
        start = time.time_ns()
        verdict = self._gate.admit(api, tenant)
        attributes: dict[str, AttributeValue] = {"hunt.api": api, "hunt.gate.verdict": "admit"}
        if isinstance(verdict, Wait):
            attributes.update({"hunt.gate.verdict": "wait", "hunt.gate.wait_seconds": round(verdict.seconds, 3)})
        _record("gate", start, attributes)
        return verdict

    def throttled(self, api: str, seconds: float, tenant: TenantConfig | None = None) -> None:
        self._gate.throttled(api, seconds, tenant)

    def spent(self, api: str, seconds: float, tenant: TenantConfig | None = None, *, reserved: float = 0.0,
              learn: bool = True) -> None:
        self._gate.spent(api, seconds, tenant, reserved=reserved, learn=learn)


class TimedRunner:
    """The API client (shared.app.processor.Runner), each call an `api_call` step up to the response's head."""

    def __init__(self, client: Runner, latency: Callable[[float, str, str | None, int | None], None]) -> None:
        self._client = client
        self._latency = latency

    def run(self, api: str, query: str, timespan: str | None = None,
            tenant: TenantConfig | None = None) -> ApiResult:
        start = time.time_ns()
        result = self._client.run(api, query, timespan, tenant)
        attributes: dict[str, AttributeValue] = {"hunt.api": api}
        status: int | None = None
        if isinstance(result, ApiReply):
            status = result.status
        elif isinstance(result, SignInRefused):
            attributes["error.type"] = result.error.code
        elif isinstance(result, TransportFailure):
            attributes["error.type"] = "transport"
        else:   # the rows, streaming
            status = 200
        if status is not None:
            attributes["http.response.status_code"] = status
        _record("api_call", start, attributes)
        self._latency((time.time_ns() - start) / 1e9, api, None if tenant is None else tenant.name, status)
        return result


class TimedCredential:
    """A TokenCredential whose every get_token is a `token` step (a cached token takes microseconds)."""

    def __init__(self, credential: TokenCredential, tenant: str | None) -> None:
        self._credential = credential
        self._tenant = tenant

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        start = time.time_ns()
        try:
            return self._credential.get_token(*scopes, **kwargs)
        finally:
            _record("token", start, {"hunt.tenant": self._tenant or "home"})


def timed_credentials(credentials: Callable[[TenantConfig | None], TokenCredential]
                      ) -> Callable[[TenantConfig | None], TokenCredential]:
    """Wraps the per-tenant credential factory (shared.adapters.credentials.TenantCredentials); one wrapper per
    credential, so that the credential's own token cache is kept."""
    wrapped: dict[str | None, TimedCredential] = {}

    def credential_for(tenant: TenantConfig | None) -> TokenCredential:
        key = None if tenant is None else tenant.name
        inner = credentials(tenant)
        timed = wrapped.get(key)
        if timed is None or timed._credential is not inner:
            timed = wrapped[key] = TimedCredential(inner, key)
        return timed

    return credential_for


def _answer(sent: SendResult) -> str:
    return "delivered" if isinstance(sent, Delivered) else "not_now" if isinstance(sent, NotNow) else "refused"


class TimedMessageSink:
    """A message sink (shared.delivery.base) whose sends are `delivery` steps."""

    def __init__(self, inner: MessageSink, kind: str, name: str) -> None:
        self._inner = inner
        self._attributes: dict[str, AttributeValue] = {"hunt.destination.kind": kind, "hunt.destination": name}

    @property
    def location(self) -> str:
        return self._inner.location

    def prepare_result(self, request: HuntRequest, stream: RowStream,
                       clock: Callable[[], datetime]) -> PreparedBody:
        start = time.time_ns()
        prepared = self._inner.prepare_result(request, stream, clock)
        _record("render", start, {**self._attributes, "hunt.bytes": len(prepared.body)})
        return prepared

    def prepare_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> bytes:
        return self._inner.prepare_failure(job_id, failed_envelope)

    def send(self, job_id: str, body: bytes) -> SendResult:
        start = time.time_ns()
        sent = self._inner.send(job_id, body)
        attributes = {**self._attributes, "hunt.bytes": len(body), "hunt.delivery.answer": _answer(sent)}
        status = sent.status if isinstance(sent, NotNow | Refused) else None
        if status is not None:
            attributes["http.response.status_code"] = status
        _record("delivery", start, attributes)
        return sent

    def renewed(self, body: bytes) -> bytes:
        return self._inner.renewed(body)


class TimedStreamSink:
    """A stream sink (shared.delivery.base) whose writes are `delivery` steps (the rows stream from the API as
    they are written, so the step holds the transfer)."""

    def __init__(self, inner: StreamSink, kind: str, name: str) -> None:
        self._inner = inner
        self._attributes: dict[str, AttributeValue] = {"hunt.destination.kind": kind, "hunt.destination": name}

    def already_delivered(self, request: HuntRequest) -> bool:
        return self._inner.already_delivered(request)

    def deliver_result(self, request: HuntRequest, stream: RowStream, clock: Callable[[], datetime]) -> Delivered:
        start = time.time_ns()
        attributes = dict(self._attributes)
        try:
            delivered = self._inner.deliver_result(request, stream, clock)
        except Exception as error:
            attributes["error.type"] = type(error).__name__
            _record("delivery", start, attributes)
            raise
        if delivered.bytes is not None:
            attributes["hunt.bytes"] = delivered.bytes
        if delivered.rows is not None:
            attributes["hunt.rows"] = delivered.rows
        _record("delivery", start, attributes)
        return delivered

    def deliver_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> Delivered:
        start = time.time_ns()
        delivered = self._inner.deliver_failure(job_id, failed_envelope)
        _record("delivery", start, {**self._attributes, "hunt.delivery.kind": "failure"})
        return delivered


def timed_sink(sink: Sink, kind: str, name: str) -> Sink:
    if isinstance(sink, MessageSink):
        return TimedMessageSink(sink, kind, name)
    return TimedStreamSink(sink, kind, name)
