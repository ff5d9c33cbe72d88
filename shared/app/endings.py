"""How a hunt ends, other than delivered: the endings that touch storage. The retry decision itself is the core's
(shared.core.retry_policy); this module carries it out.

    requeue     the decided copy back on the queue, invisible for the decided delay
    fail        a dead-letter record first (it must exist even when the destination is what keeps failing), then
                a failure envelope to the destination when there is one. A message sink that answers "not now"
                gets the envelope again as a delivery only, like a result (shared.delivery.pending), while the
                hunt has attempts and age left
    reject      a message that is not a valid hunt: a dead-letter record, and a failure envelope if the message's
                id and destination can be salvaged
    unreadable  the last answer to a message nothing else could handle: its raw bytes in a dead-letter record

Exceptions escape only when storage itself fails (the host then retries the message).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError

from shared.adapters.dead_letters import DeadLetters
from shared.core import envelope
from shared.core.classify import ErrorInfo
from shared.core.errors import InvalidHuntRequest, PendingConflict
from shared.core.hunt_request import ID_PATTERN, MAX_CONTEXT_BYTES, HuntRequest, message_json
from shared.core.outcome import Cause, MessageInfo, Outcome
from shared.core.retry_policy import DestinationNotNow, GiveUp, Limits, Requeue, decide
from shared.core.strict_json import dumps
from shared.delivery.base import Delivered, MessageSink, NotNow, Refused, Sink
from shared.delivery.pending import PendingDeliveries
from shared.delivery.targets import Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One hunt on its way: the queue message, the request it holds, and the sink of its destination (None when
    the destination could not be resolved, or must not be told)."""

    message: MessageInfo
    request: HuntRequest
    sink: Sink | None
    ran_on: HuntRequest | None = None   # the hunt as it ran, when another API ran it (shared.core.routing)

    @property
    def id(self) -> str:
        return self.request.id

    @property
    def ran(self) -> HuntRequest:
        """The hunt as it runs and is delivered; copies put back on the queue are of `request`."""
        return self.ran_on or self.request

    def ran_as(self, ran: HuntRequest) -> Job:
        return self if ran is self.request else replace(self, ran_on=ran)

    def without_sink(self) -> Job:
        return replace(self, sink=None)


class HuntEndings:
    def __init__(self, *, queue_name: str, limits: Limits, dead_letters: DeadLetters,
                 requeue: Callable[[str, float], None], clock: Callable[[], datetime], rand: Callable[[], float],
                 encode: Callable[[HuntRequest], str], pending: PendingDeliveries | None = None) -> None:
        self._queue_name = queue_name
        self._limits = limits
        self._dead_letters = dead_letters
        self._requeue = requeue
        self._clock = clock
        self._rand = rand
        self._encode = encode
        self._pending = pending   # None: a failure envelope the destination did not take is not retried

    def requeue(self, job: Job, decision: Requeue, cause: Cause, reason: str) -> Outcome:
        self._requeue(decision.text, decision.delay)
        return Outcome(job.id, cause, reason, job.request.api, delay=decision.delay)

    def fail(self, job: Job, error: ErrorInfo, *, best_effort: bool = False, record_key: str | None = None,
             cause: Cause = Cause.FAILED) -> Outcome:
        """`record_key` (default: the job id) names the dead-letter record: another request under a job's id
        records its failure apart, so that the job's own record stays free."""
        now = self._clock()
        logger.warning("hunt %s: failed (%s)", job.id, error.code)
        failed = envelope.failure(job.ran, error, completed_at=now)
        # The record first: it must exist even when the destination itself is what keeps failing (poison).
        self._dead_letters.record(key=record_key or job.id, tenant=job.request.tenant, raw=job.message.raw,
                                  reason=error.code,
                                  error=error.as_dict(), queue=self._queue_name, message_id=job.message.message_id,
                                  dequeue_count=job.message.dequeue_count, now=now,
                                  first_enqueued_at=job.request.first_enqueued_at)
        location = self._deliver_failure(job.sink, job.id, failed, best_effort=best_effort, request=job.request)
        return Outcome(job.id, cause, error.code, job.ran.api, location=location, error_code=error.code)

    def unreadable(self, message: MessageInfo, cause: str) -> Outcome:
        error = ErrorInfo("Unreadable", f"the message could not be handled ({cause}); its raw bytes are recorded",
                          hint="check the relay's logs for this message id; send the hunt again once fixed")
        self._dead_letters.record(key=message.message_id, raw=message.raw, reason=error.code, error=error.as_dict(),
                                  queue=self._queue_name, message_id=message.message_id,
                                  dequeue_count=message.dequeue_count, now=self._clock())
        return Outcome(message.message_id, Cause.POISON, error.code, error_code=error.code)

    def reject(self, message: MessageInfo, error: InvalidHuntRequest,
               sink_for: Callable[[str | None, str | None], Target | Refused], build: Callable[[Target], Sink], *,
               tenant_of: Callable[[object], str | None], best_effort: bool = False) -> Outcome:
        """`sink_for(destination, tenant)` resolves the message's destination, when it names a usable one of a
        known tenant; `tenant_of(value)` is the relay's tenant the message's `tenant` value names (None: the home
        scope). With `best_effort` (the poison handler) a storage error on the way there leaves the record as the
        answer."""
        now = self._clock()
        info = ErrorInfo("InvalidHuntRequest", str(error), hint="see the message format in the README and "
                         "schemas/hunt-request.v1.schema.json")
        job_id, context, destination, raw_tenant = _salvage(message.raw)
        tenant = tenant_of(raw_tenant)
        key = job_id or message.message_id
        logger.warning("hunt %s: rejected the message (%s)", key, error.field or "message")
        # The record first, as in `fail`: it must exist even when the destination is what fails.
        self._dead_letters.record(key=key, raw=message.raw, reason="InvalidHuntRequest", error=info.as_dict(),
                                  queue=self._queue_name, message_id=message.message_id,
                                  dequeue_count=message.dequeue_count, now=now, tenant=tenant)
        target = sink_for(destination, tenant) if tenant is not None or raw_tenant is None \
            else Refused("the message names an unknown tenant")
        location = None
        if isinstance(target, Target):   # else no destination to tell: the record is the answer
            failed = envelope.failure(None, info, completed_at=now, job_id=key, context=context, tenant=tenant)
            location = self._deliver_failure(build(target), key, failed, best_effort=best_effort)
        return Outcome(key, Cause.REJECTED, str(error), location=location, error_code="InvalidHuntRequest")

    def _deliver_failure(self, sink: Sink | None, job_id: str, failed: dict[str, Any], *,
                         best_effort: bool = False, request: HuntRequest | None = None) -> str | None:
        """Where the failure envelope went; None when it did not (the dead-letter record holds it) or when it
        waits for a delivery-only retry."""
        if sink is None:
            return None
        try:
            if isinstance(sink, MessageSink):
                body = sink.prepare_failure(job_id, failed)
                sent = sink.send(job_id, body)
                if isinstance(sent, NotNow) and request is not None and self._pending is not None:
                    self._retry_failure_delivery(request, body, sent)
                    return None
                if not isinstance(sent, Delivered):
                    # The dead-letter record still holds the failure; the destination could not take it.
                    logger.warning("hunt %s: the failure envelope could not be delivered (%s)", job_id,
                                   type(sent).__name__)
                    return None
                return sent.location
            return sink.deliver_failure(job_id, failed).location
        except AzureError as error:
            if not best_effort:
                raise
            logger.warning("hunt %s: the failure envelope could not be written (%s); the dead-letter record holds it",
                           job_id, type(error).__name__)
            return None

    def _retry_failure_delivery(self, request: HuntRequest, body: bytes, sent: NotNow) -> None:
        """Keeps the failure envelope and enqueues a delivery-only copy, within the hunt's own limits: a hunt that
        gave up for having no attempts or age left has none left for this either (its dead-letter record stays
        the answer)."""
        assert self._pending is not None
        decision = decide(DestinationNotNow(sent.reason, sent.retry_after, sent.held), request, self._limits,
                          now=self._clock(), rand=self._rand, encode=self._encode)
        if isinstance(decision, GiveUp):
            logger.warning("hunt %s: the destination did not take the failure envelope (%s) and the hunt has no "
                           "retry left; the dead-letter record holds it", request.id, sent.reason)
            return
        try:   # before the copy: a crash may duplicate, never lose; and never over a result that waits
            self._pending.keep(request, body, None, over_waiting=False)
        except PendingConflict:
            logger.warning("hunt %s: a body under this job id waits for its delivery; the dead-letter record holds "
                           "this failure", request.id)
            return
        self._requeue(decision.text, decision.delay)
        logger.warning("hunt %s: the destination did not take the failure envelope (%s), delivery only in %.1f s",
                       request.id, sent.reason, decision.delay)


def _salvage(raw: bytes) -> tuple[str | None, dict[str, Any], str | None, object]:
    """Best effort: the id, context and destination of an invalid message, when they themselves are valid, and its
    `tenant` value as it is (None when absent)."""
    try:
        body = message_json(raw)
    except InvalidHuntRequest:
        return None, {}, None, None
    raw_id, raw_context, raw_destination = body.get("id"), body.get("context"), body.get("destination")
    job_id = raw_id if isinstance(raw_id, str) and ID_PATTERN.fullmatch(raw_id) else None
    context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
    if len(dumps(context)) > MAX_CONTEXT_BYTES:
        context = {}
    destination = raw_destination if isinstance(raw_destination, str) else None
    return job_id, context, destination, body.get("tenant")
