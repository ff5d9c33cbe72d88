"""The hunt processor: one queue message in, one outcome out. The same code runs under the Functions host and the
portable worker.

    decode -> resolve destination -> already delivered? -> query (raw or template) -> call the API
      -> classify -> deliver | re-enqueue with a delay | fail (failure envelope + dead-letter record)

A destination that answers "not now" to a result (a webhook's 5xx or 429, a queue that did not take the message)
gets a delivery-only retry (and so does a failure envelope: shared.app.endings): the rendered body is kept
(shared.delivery.pending) and only then a copy marked `pending_delivery` is enqueued, after the destination's
Retry-After or else the transient backoff. Such a copy skips the gate and the API: it sends the kept body again to
the hunt's own destination (same `webhook-id`, signed afresh). The limits (HUNT_MAX_ATTEMPTS, HUNT_MAX_AGE) and a
410 end it with a dead-letter record naming the kept body (no failure envelope to a destination that refuses); a
missing body ends it with a failure.

Every path ends in an Outcome value (shared.app.endings) and the queue message can then be completed: a message that
can never succeed is answered once (dead letter, and a failed envelope where a destination resolves), never thrown
back to the host to burn its dequeues. Exceptions escape only when storage itself fails (the host then retries
the message, which is safe: every sink is idempotent on the job id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from azure.core.exceptions import AzureError

from shared.adapters.dead_letters import DeadLetters
from shared.adapters.hunting_client import ApiReply, ApiResult, ResultStream, StreamBroken, TransportFailure
from shared.adapters.quota_table import Admit, Wait
from shared.app.endings import HuntEndings, MessageInfo, Outcome
from shared.core.apis import APIS
from shared.core.classify import ErrorInfo, Success, Terminal, Throttled, Transient, classify
from shared.core.delays import throttle_delay, transient_delay
from shared.core.errors import DeliveryRefused, DeliveryRetryable, InvalidHuntRequest
from shared.core.hunt_request import HuntRequest, decode_hunt_request
from shared.core.relay_mark import MessageMark
from shared.core.result_formats import ResultSummary
from shared.core.settings import Settings
from shared.delivery.pending import Kept, PendingConflict, PendingDeliveries, PreparedBody, Resendable, Sent
from shared.delivery.targets import Target, resolve_destination

logger = logging.getLogger(__name__)


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
    """The fleet-wide quota gate (shared.adapters.quota_table), per API."""

    def admit(self, api: str) -> Admit | Wait: ...
    def throttled(self, api: str, seconds: float) -> None: ...


class Runner(Protocol):
    def run(self, api: str, query: str, timespan: str | None = None) -> ApiResult: ...


class HuntProcessor:
    def __init__(self, *, settings: Settings, client: Runner, sink_for: Callable[[Target], Sink],
                 dead_letters: DeadLetters, requeue: Callable[[str, int], None], gate: Gate | None,
                 render_template: Callable[[str, dict[str, Any]], str] | None,
                 clock: Callable[[], datetime], rand: Callable[[], float], mark: MessageMark | None = None,
                 pending: PendingDeliveries | None = None) -> None:
        self._settings = settings
        self._mark = mark
        self._client = client
        self._sink_for = sink_for
        self._gate = gate
        self._render_template = render_template
        self._clock = clock
        self._rand = rand
        self._pending = pending   # None: no delivery-only retries; a result not taken re-runs the hunt
        self._end = HuntEndings(settings=settings, dead_letters=dead_letters, requeue=requeue, clock=clock,
                                rand=rand, mark=mark, pending=pending)

    def _decode(self, message: MessageInfo) -> HuntRequest:
        return decode_hunt_request(message.raw, message_id=message.message_id, default_api=self._settings.api,
                                   now=self._clock(), mark=self._mark)

    def _sink_named(self, destination: str | None) -> Sink:
        return self._sink_for(resolve_destination(destination, self._settings))

    def process(self, message: MessageInfo) -> Outcome:
        try:
            request = self._decode(message)
        except InvalidHuntRequest as error:
            return self._end.reject(message, error, self._sink_named)
        logger.info("hunt %s: attempt %s on %s", request.id, request.attempt, request.api)
        if request.dropped:
            logger.warning("hunt %s: the message set relay-kept fields without the relay's mark (%s); they were "
                           "dropped and the hunt runs as a fresh one", request.id, ", ".join(request.dropped))
        try:
            sink = self._sink_named(request.destination)
        except DeliveryRefused as error:
            return self._end.fail(message, request, None, ErrorInfo("DestinationRefused", str(error)))
        if request.pending_delivery is not None:
            return self._redeliver(message, request, sink)
        if sink.already_delivered(request):
            logger.info("hunt %s: already delivered, completing the redelivered message", request.id)
            return Outcome(request.id, "duplicate", "already delivered", request.api)
        try:
            query = self._query_of(request)
        except (InvalidHuntRequest, KeyError, ValueError) as error:
            return self._end.fail(message, request, sink, ErrorInfo("InvalidTemplate", str(error)))
        if self._gate is not None:
            verdict = self._gate.admit(request.api)
            if isinstance(verdict, Wait):
                # The same attempt goes back on the queue: no call was spent.
                return self._end.defer(message, request, sink, verdict.reason, verdict.seconds)
        reply = self._client.run(request.api, query, request.timespan)
        if isinstance(reply, TransportFailure):
            return self._retry(message, request, sink, reply.reason, None)
        if isinstance(reply, ApiReply):
            return self._answer(message, request, sink, reply)
        try:
            if self._pending is not None and isinstance(sink, Resendable):
                return self._deliver_once(message, request, sink, sink.prepare_result(request, reply, self._clock))
            delivery = sink.deliver_result(request, reply, self._clock)
        except StreamBroken as error:
            return self._retry(message, request, sink, str(error), None)
        except DeliveryRefused as error:
            return self._end.fail(message, request, None, ErrorInfo("DeliveryRefused", str(error)))
        except DeliveryRetryable as error:
            return self._retry(message, request, sink, str(error), error.retry_after)
        finally:
            reply.close()
        rows = delivery.summary.row_count if delivery.summary else None
        logger.info("hunt %s: delivered %s rows to %s", request.id, rows, delivery.location)
        return Outcome(request.id, "delivered", "", request.api, rows, delivery.location)

    def process_poison(self, message: MessageInfo) -> Outcome:
        """A message the host (or worker) gave up on after max dequeues: persist it, answer it, never run it.
        Only a storage failure escapes: whatever else goes wrong, the raw bytes are recorded and the message is
        complete (a poison handler that raised would meet the same message again, forever)."""
        try:
            return self._process_poison(message)
        except AzureError:
            raise
        except Exception as error:
            logger.error("message %s: the poison handler failed (%s); recording the raw message", message.message_id,
                         type(error).__name__)
            return self._end.record_unreadable(message, type(error).__name__)

    def _process_poison(self, message: MessageInfo) -> Outcome:
        try:
            request = self._decode(message)
        except InvalidHuntRequest as invalid:
            return self._end.reject(message, invalid, self._sink_named)
        error = ErrorInfo("Poison", f"the hunt could not be processed in {self._settings.max_dequeue_count} "
                                    "deliveries (the handler failed each time); it was not run again",
                          hint="check the relay's logs for this job id; send the hunt again once fixed")
        try:
            sink: Sink | None = self._sink_named(request.destination)
        except DeliveryRefused:
            sink = None
        return self._end.fail(message, request, sink, error, best_effort=True)

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
            return self._end.fail(message, request, sink, verdict.error)
        if isinstance(verdict, Throttled):
            delay = throttle_delay(reply.headers, reply.body, attempt=request.attempt, now=self._clock(),
                                   rand=self._rand, max_delay=self._end.remaining_lifetime(request))
            logger.info("hunt %s: throttled by the %s API, back in %.1f s (from the %s)", request.id,
                        request.api, delay.seconds, delay.source)
            if self._gate is not None:
                self._gate.throttled(request.api, delay.seconds)
            return self._end.requeue_or_give_up(message, request, sink, f"HTTP 429 from the {request.api} API",
                                                delay.seconds)
        reason = verdict.reason if isinstance(verdict, Transient) else f"unexpected {verdict}"
        assert not isinstance(verdict, Success)
        return self._retry(message, request, sink, reason, None)

    def _retry(self, message: MessageInfo, request: HuntRequest, sink: Sink, reason: str,
               retry_after: float | None) -> Outcome:
        delay = transient_delay(request.attempt, rand=self._rand, max_delay=self._end.remaining_lifetime(request))
        seconds = max(delay.seconds, retry_after or 0.0)
        logger.warning("hunt %s: transient failure (%s), back in %.1f s", request.id, reason, seconds)
        return self._end.requeue_or_give_up(message, request, sink, reason, seconds)

    def _deliver_once(self, message: MessageInfo, request: HuntRequest, sink: Resendable,
                      prepared: PreparedBody) -> Outcome:
        """Sends a freshly prepared result; on "not now", keeps it and re-enqueues a delivery-only copy."""
        assert self._pending is not None
        rows = prepared.summary.row_count if prepared.summary else None
        try:
            sink.send(request.id, prepared.body)
        except DeliveryRetryable as error:
            try:
                self._pending.keep(request, prepared.body, rows)   # before the copy: a crash may duplicate, never lose
            except PendingConflict:
                # The dead-letter record is this request's answer: its destination just refused to take anything.
                return self._end.fail(message, request, None, ErrorInfo(
                    "Conflict", f"another request under the job id {request.id} waits for its delivery; this one "
                    "was not kept and the first is untouched", hint="give every distinct hunt its own id"),
                    record_key=f"{request.id}.conflict.{request.digest()[:16]}")
            return self._retry_delivery(message, request, str(error), error.retry_after)
        logger.info("hunt %s: delivered %s rows to %s", request.id, rows, sink.location)
        return Outcome(request.id, "delivered", "", request.api, rows, sink.location)

    def _redeliver(self, message: MessageInfo, request: HuntRequest, sink: Sink) -> Outcome:
        """A delivery-only copy: no gate, no API call; the kept body goes again to the hunt's own destination."""
        if self._pending is None or not isinstance(sink, Resendable):
            return self._end.fail(message, request, sink, ErrorInfo(
                "PendingDeliveryMissing", "the message asks for a delivery-only retry, which this destination "
                "does not take; the hunt was not run", hint="send the hunt again without 'pending_delivery'"))
        kept = self._pending.load(request)
        if isinstance(kept, Sent):
            logger.info("hunt %s: the kept body was delivered already (%s); completing the copy", request.id,
                        kept.at)
            return Outcome(request.id, "duplicate", "delivered on an earlier try", request.api)
        if not isinstance(kept, Kept):
            # Same webhook-id as the result: a receiver that already has it drops this failure as a duplicate.
            return self._end.fail(message, request, sink, ErrorInfo(
                "PendingDeliveryMissing", kept.reason, hint="if the destination has not received this job, send "
                "the hunt again without 'pending_delivery'"))
        logger.info("hunt %s: delivery-only retry, attempt %s", request.id, request.attempt)
        try:
            sink.send(request.id, sink.renewed(kept.body))
        except DeliveryRefused as error:
            return self._end.fail(message, request, None, ErrorInfo("DeliveryRefused", str(error),
                                                                    hint=self._kept_hint(request)))
        except DeliveryRetryable as error:
            return self._retry_delivery(message, request, str(error), error.retry_after)
        self._pending.mark_sent(request, self._clock())
        logger.info("hunt %s: delivered %s rows to %s on a delivery-only retry", request.id, kept.rows,
                    sink.location)
        return Outcome(request.id, "delivered", "delivery-only retry", request.api, kept.rows, sink.location)

    def _retry_delivery(self, message: MessageInfo, request: HuntRequest, reason: str,
                        retry_after: float | None) -> Outcome:
        """The destination's Retry-After when it gave one, else the transient backoff; then the usual limits."""
        delay = self._end.delivery_delay(request, retry_after)
        logger.warning("hunt %s: the destination did not take the result (%s), delivery only in %.1f s",
                       request.id, reason, delay)
        return self._end.requeue_or_give_up(message, request, None, reason, delay,
                                            copy=request.delivery_only(), hint=self._kept_hint(request))

    def _kept_hint(self, request: HuntRequest) -> str | None:
        if self._pending is None:
            return None
        return (f"the undelivered result is kept at {self._pending.location(request)}; fix the destination, "
                "then deliver it from there or send the hunt again")
