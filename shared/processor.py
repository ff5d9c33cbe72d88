"""The hunt processor: one queue message in, one outcome out. The same code runs under the Functions host and the
portable worker.

    decode -> resolve destination -> already delivered? -> query (raw or template) -> call the API
      -> classify -> deliver | re-enqueue with a delay | fail (failure envelope + dead-letter record)

Every path ends in an Outcome value and the queue message can then be completed: a message that can never
succeed is answered once (dead letter, and a failed envelope where a destination resolves), never thrown back
to the host to burn its dequeues. Exceptions escape only when storage itself fails (the host then retries the
message, which is safe: every sink is idempotent on the job id).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from azure.core.exceptions import AzureError

from shared import envelope
from shared.apis import APIS
from shared.classify import ErrorInfo, Success, Terminal, Throttled, Transient, classify
from shared.dead_letters import DeadLetters
from shared.destinations import Target, resolve_destination
from shared.errors import DeliveryRefused, DeliveryRetryable, InvalidHuntRequest
from shared.hunt_request import ID_PATTERN, MAX_CONTEXT_BYTES, HuntRequest, decode_hunt_request, message_json
from shared.hunting_client import ApiReply, ApiResult, ResultStream, StreamBroken, TransportFailure
from shared.quota_gate import Admit, Wait
from shared.result_formats import ResultSummary
from shared.settings import Settings
from shared.throttling import throttle_delay, transient_delay

logger = logging.getLogger(__name__)

Status = Literal["delivered", "failed", "requeued", "rejected", "duplicate"]


class Delivery(Protocol):
    @property
    def location(self) -> str: ...
    @property
    def summary(self) -> ResultSummary | None: ...


class Sink(Protocol):
    def already_delivered(self, request: HuntRequest) -> bool: ...
    def deliver_result(self, request: HuntRequest, stream: ResultStream,
                       clock: Callable[[], datetime]) -> Delivery: ...
    def deliver_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> Delivery: ...


class Gate(Protocol):
    """The fleet-wide quota gate (shared.quota_gate), per API."""

    def admit(self, api: str) -> Admit | Wait: ...
    def throttled(self, api: str, seconds: float) -> None: ...


class Runner(Protocol):
    def run(self, api: str, query: str, timespan: str | None = None) -> ApiResult: ...


@dataclass(frozen=True)
class MessageInfo:
    raw: bytes
    message_id: str
    dequeue_count: int | None = None


@dataclass(frozen=True)
class Outcome:
    job_id: str
    status: Status
    detail: str = ""
    api: str | None = None
    rows: int | None = None
    location: str | None = None
    delay: float | None = None


class HuntProcessor:
    def __init__(self, *, settings: Settings, client: Runner, sink_for: Callable[[Target], Sink],
                 dead_letters: DeadLetters, requeue: Callable[[str, int], None], gate: Gate | None,
                 render_template: Callable[[str, dict[str, Any]], str] | None,
                 clock: Callable[[], datetime], rand: Callable[[], float]) -> None:
        self._settings = settings
        self._client = client
        self._sink_for = sink_for
        self._dead_letters = dead_letters
        self._requeue = requeue
        self._gate = gate
        self._render_template = render_template
        self._clock = clock
        self._rand = rand

    def _decode(self, message: MessageInfo) -> HuntRequest:
        return decode_hunt_request(message.raw, message_id=message.message_id, default_api=self._settings.api,
                                   now=self._clock())

    def process(self, message: MessageInfo) -> Outcome:
        try:
            request = self._decode(message)
        except InvalidHuntRequest as error:
            return self._reject(message, error)
        logger.info("hunt %s: attempt %s on %s", request.id, request.attempt, request.api)
        try:
            target = resolve_destination(request.destination, self._settings)
        except DeliveryRefused as error:
            return self._fail(message, request, None, ErrorInfo("DestinationRefused", str(error)))
        sink = self._sink_for(target)
        if sink.already_delivered(request):
            logger.info("hunt %s: already delivered, completing the redelivered message", request.id)
            return Outcome(request.id, "duplicate", "already delivered", request.api)
        try:
            query = self._query_of(request)
        except (InvalidHuntRequest, KeyError, ValueError) as error:
            return self._fail(message, request, sink, ErrorInfo("InvalidTemplate", str(error)))
        if self._gate is not None:
            verdict = self._gate.admit(request.api)
            if isinstance(verdict, Wait):
                return self._defer(message, request, sink, verdict)
        reply = self._client.run(request.api, query, request.timespan)
        if isinstance(reply, TransportFailure):
            return self._retry(message, request, sink, reply.reason, None)
        if isinstance(reply, ApiReply):
            return self._answer(message, request, sink, reply)
        try:
            delivery = sink.deliver_result(request, reply, self._clock)
        except StreamBroken as error:
            return self._retry(message, request, sink, str(error), None)
        except DeliveryRefused as error:
            return self._fail(message, request, None, ErrorInfo("DeliveryRefused", str(error)))
        except DeliveryRetryable as error:
            # TODO(throttling): keep the result and retry the delivery only.
            return self._retry(message, request, sink, str(error), error.retry_after)
        finally:
            reply.close()
        rows = delivery.summary.row_count if delivery.summary else None
        logger.info("hunt %s: delivered %s rows to %s", request.id, rows, delivery.location)
        return Outcome(request.id, "delivered", "", request.api, rows, delivery.location)

    def process_poison(self, message: MessageInfo) -> Outcome:
        """A message the host (or worker) gave up on after max dequeues: persist it, answer it, never run it."""
        try:
            request = self._decode(message)
        except InvalidHuntRequest as invalid:
            return self._reject(message, invalid)
        error = ErrorInfo("Poison", f"the hunt could not be processed in {self._settings.max_dequeue_count} "
                                    "deliveries (the handler failed each time); it was not run again",
                          hint="check the relay's logs for this job id; send the hunt again once fixed")
        try:
            sink: Sink | None = self._sink_for(resolve_destination(request.destination, self._settings))
        except DeliveryRefused:
            sink = None
        return self._fail(message, request, sink, error, best_effort=True)

    def _query_of(self, request: HuntRequest) -> str:
        if request.query is not None:
            if not self._settings.allow_raw_queries:
                raise InvalidHuntRequest("query", "this deployment runs templates only (HUNT_ALLOW_RAW_QUERIES is "
                                         "false): send 'template' and 'parameters' instead")
            return request.query
        if self._render_template is None:
            raise InvalidHuntRequest("template", "templates are not available in this deployment")
        assert request.template is not None
        return self._render_template(request.template, dict(request.parameters))

    def _answer(self, message: MessageInfo, request: HuntRequest, sink: Sink, reply: ApiReply) -> Outcome:
        verdict = classify(reply.status, reply.body, APIS[request.api])
        if isinstance(verdict, Terminal):
            return self._fail(message, request, sink, verdict.error)
        if isinstance(verdict, Throttled):
            delay = throttle_delay(reply.headers, reply.body, attempt=request.attempt, now=self._clock(),
                                   rand=self._rand, max_delay=self._remaining_lifetime(request))
            logger.info("hunt %s: throttled by the %s API, back in %.1f s (from the %s)", request.id,
                        request.api, delay.seconds, delay.source)
            if self._gate is not None:
                self._gate.throttled(request.api, delay.seconds)
            return self._requeue_or_give_up(message, request, sink, f"HTTP 429 from the {request.api} API",
                                            delay.seconds)
        reason = verdict.reason if isinstance(verdict, Transient) else f"unexpected {verdict}"
        assert not isinstance(verdict, Success)
        return self._retry(message, request, sink, reason, None)

    def _defer(self, message: MessageInfo, request: HuntRequest, sink: Sink, wait: Wait) -> Outcome:
        """The gate says not now: the same attempt goes back on the queue; no call was spent."""
        age = ((self._clock() - (request.first_enqueued_at or self._clock())).total_seconds())
        if age + wait.seconds >= self._settings.max_age_seconds:
            error = ErrorInfo("GaveUp", f"gave up after {request.attempt} attempts over {_duration(age)}; "
                                        f"last error: {wait.reason}")
            return self._fail(message, request, sink, error)
        logger.info("hunt %s: %s, back in %.1f s", request.id, wait.reason, wait.seconds)
        self._requeue(request.to_message(), math.ceil(wait.seconds))
        return Outcome(request.id, "requeued", wait.reason, request.api, delay=wait.seconds)

    def _retry(self, message: MessageInfo, request: HuntRequest, sink: Sink, reason: str,
               retry_after: float | None) -> Outcome:
        delay = transient_delay(request.attempt, rand=self._rand, max_delay=self._remaining_lifetime(request))
        seconds = max(delay.seconds, retry_after or 0.0)
        logger.warning("hunt %s: transient failure (%s), back in %.1f s", request.id, reason, seconds)
        return self._requeue_or_give_up(message, request, sink, reason, seconds)

    def _remaining_lifetime(self, request: HuntRequest) -> float:
        first = request.first_enqueued_at or self._clock()
        return max(0.0, self._settings.max_age_seconds - (self._clock() - first).total_seconds())

    def _requeue_or_give_up(self, message: MessageInfo, request: HuntRequest, sink: Sink, reason: str,
                            delay: float) -> Outcome:
        first = request.first_enqueued_at or self._clock()
        age = (self._clock() - first).total_seconds()
        if request.attempt >= self._settings.max_attempts or age + delay >= self._settings.max_age_seconds:
            error = ErrorInfo("GaveUp", f"gave up after {request.attempt} attempts over {_duration(age)}; "
                                        f"last error: {reason}")
            return self._fail(message, request, sink, error)
        self._requeue(request.next_attempt(reason).to_message(), math.ceil(delay))
        return Outcome(request.id, "requeued", reason, request.api, delay=delay)

    def _fail(self, message: MessageInfo, request: HuntRequest, sink: Sink | None, error: ErrorInfo, *,
              best_effort: bool = False) -> Outcome:
        now = self._clock()
        logger.warning("hunt %s: failed (%s)", request.id, error.code)
        failed = envelope.failure(request, error, completed_at=now)
        # The record first: it must exist even when the destination itself is what keeps failing (poison).
        self._dead_letters.record(key=request.id, raw=message.raw, reason=error.code, error=error.as_dict(),
                                  queue=self._settings.queue, message_id=message.message_id,
                                  dequeue_count=message.dequeue_count, now=now,
                                  first_enqueued_at=request.first_enqueued_at)
        location = self._deliver_failure(sink, request.id, failed, best_effort=best_effort)
        return Outcome(request.id, "failed", error.code, request.api, location=location)

    def _reject(self, message: MessageInfo, error: InvalidHuntRequest) -> Outcome:
        """A message that is not a valid hunt: a dead-letter record, and a failure envelope if we can tell where."""
        now = self._clock()
        info = ErrorInfo("InvalidHuntRequest", str(error), hint="see the message format in the README and "
                         "schemas/hunt-request.v1.schema.json")
        job_id, context, destination = _salvage(message.raw)
        key = job_id or message.message_id
        logger.warning("hunt %s: rejected the message (%s)", key, error.field or "message")
        location = None
        try:
            sink = self._sink_for(resolve_destination(destination, self._settings))
            location = self._deliver_failure(sink, key, envelope.failure(None, info, completed_at=now, job_id=key,
                                                                         context=context))
        except DeliveryRefused:
            pass
        self._dead_letters.record(key=key, raw=message.raw, reason="InvalidHuntRequest", error=info.as_dict(),
                                  queue=self._settings.queue, message_id=message.message_id,
                                  dequeue_count=message.dequeue_count, now=now)
        return Outcome(key, "rejected", str(error), location=location)

    def _deliver_failure(self, sink: Sink | None, job_id: str, failed: dict[str, Any], *,
                         best_effort: bool = False) -> str | None:
        if sink is None:
            return None
        try:
            return sink.deliver_failure(job_id, failed).location
        except (DeliveryRefused, DeliveryRetryable) as error:
            # The dead-letter record still holds the failure; the destination could not take it.
            logger.warning("hunt %s: the failure envelope could not be delivered (%s)", job_id, type(error).__name__)
            return None
        except AzureError as error:
            if not best_effort:
                raise
            logger.warning("hunt %s: the failure envelope could not be written (%s); the dead-letter record holds it",
                           job_id, type(error).__name__)
            return None


def _salvage(raw: bytes) -> tuple[str | None, dict[str, Any], str | None]:
    """Best effort: the id, context and destination of an invalid message, when they themselves are valid."""
    try:
        body = message_json(raw)
    except InvalidHuntRequest:
        return None, {}, None
    raw_id, raw_context, raw_destination = body.get("id"), body.get("context"), body.get("destination")
    job_id = raw_id if isinstance(raw_id, str) and ID_PATTERN.match(raw_id) else None
    context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
    if len(json.dumps(context)) > MAX_CONTEXT_BYTES:
        context = {}
    destination = raw_destination if isinstance(raw_destination, str) else None
    return job_id, context, destination


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

