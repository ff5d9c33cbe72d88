"""How a hunt ends, other than delivered: the Outcome value the processor returns, and the three endings that
touch storage.

    requeue_or_give_up   a copy back on the queue after a delay (attempt + 1), or, past HUNT_MAX_ATTEMPTS or
                         HUNT_MAX_AGE, "GaveUp": the failure below
    defer                the same attempt back on the queue (the quota gate said not now; no call was spent)
    fail                 a dead-letter record first (it must exist even when the destination is what keeps
                         failing), then a failure envelope to the destination when there is one; a destination
                         that answers "not now" (a webhook's 5xx or 429) gets it again as a delivery only, like a
                         result (shared.delivery.pending), while the hunt has attempts and age left
    reject               a message that is not a valid hunt: a dead-letter record, and a failure envelope if the
                         message's id and destination can be salvaged

Exceptions escape only when storage itself fails (the host then retries the message).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from azure.core.exceptions import AzureError

from shared.adapters.dead_letters import DeadLetters
from shared.core import envelope
from shared.core.classify import ErrorInfo
from shared.core.delays import transient_delay
from shared.core.errors import DeliveryRefused, DeliveryRetryable, InvalidHuntRequest
from shared.core.hunt_request import ID_PATTERN, MAX_CONTEXT_BYTES, MAX_MESSAGE_BYTES, HuntRequest, message_json
from shared.core.relay_mark import MessageMark
from shared.core.settings import Settings
from shared.core.strict_json import dumps
from shared.delivery.pending import PendingConflict, PendingDeliveries, Resendable

logger = logging.getLogger(__name__)

Status = Literal["delivered", "failed", "requeued", "rejected", "duplicate"]


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


class FailedDelivery(Protocol):
    @property
    def location(self) -> str: ...


class FailureSink(Protocol):
    def deliver_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> FailedDelivery: ...


class HuntEndings:
    def __init__(self, *, settings: Settings, dead_letters: DeadLetters, requeue: Callable[[str, int], None],
                 clock: Callable[[], datetime], rand: Callable[[], float], mark: MessageMark | None,
                 pending: PendingDeliveries | None = None) -> None:
        self._settings = settings
        self._mark = mark
        self._dead_letters = dead_letters
        self._requeue = requeue
        self._clock = clock
        self._rand = rand
        self._pending = pending   # None: a failure envelope the destination did not take is not retried

    def age(self, request: HuntRequest) -> float:
        return (self._clock() - (request.first_enqueued_at or self._clock())).total_seconds()

    def remaining_lifetime(self, request: HuntRequest) -> float:
        return max(0.0, self._settings.max_age_seconds - self.age(request))

    def out_of_retries(self, request: HuntRequest, delay: float) -> bool:
        """HUNT_MAX_ATTEMPTS reached, or HUNT_MAX_AGE passed by the time a copy delayed `delay` s would run."""
        return request.attempt >= self._settings.max_attempts or \
            self.age(request) + delay >= self._settings.max_age_seconds

    def delivery_delay(self, request: HuntRequest, retry_after: float | None) -> float:
        """Before a delivery-only retry: the destination's Retry-After when it gave one, else the transient
        backoff."""
        if retry_after is not None:
            return retry_after
        return transient_delay(request.attempt, rand=self._rand, max_delay=self.remaining_lifetime(request)).seconds

    def requeue_or_give_up(self, message: MessageInfo, request: HuntRequest, sink: FailureSink | None, reason: str,
                           delay: float, *, copy: HuntRequest | None = None, hint: str | None = None) -> Outcome:
        """`copy` (default: the request itself) goes back with attempt + 1; `hint` joins a GaveUp error."""
        age = self.age(request)
        if self.out_of_retries(request, delay):
            error = ErrorInfo("GaveUp", f"gave up after {request.attempt} attempts over {_duration(age)}; "
                                        f"last error: {reason}", hint=hint)
            return self.fail(message, request, sink, error)
        text = (copy or request).next_attempt(reason).to_message(self._mark)
        return self._put_back(message, request, sink, text, reason, delay)

    def _put_back(self, message: MessageInfo, request: HuntRequest, sink: FailureSink | None, text: str,
                  reason: str, delay: float) -> Outcome:
        """Enqueue the copy; a copy the queue would refuse (over 64 KiB with the relay's fields) fails the hunt
        once, clearly, instead of failing the handler until the message is poisoned."""
        size = _message_bytes(text)
        if size > MAX_MESSAGE_BYTES:
            return self.fail(message, request, sink, ErrorInfo(
                "MessageTooLarge", f"the hunt had to go back on the queue ({reason}), but its copy with the relay's "
                                   f"own fields is {size} bytes, over the queue's {MAX_MESSAGE_BYTES}-byte limit",
                hint="keep hunt messages at least 1 KiB under 64 KiB (a shorter query or context)"))
        self._requeue(text, math.ceil(delay))
        return Outcome(request.id, "requeued", reason, request.api, delay=delay)

    def defer(self, message: MessageInfo, request: HuntRequest, sink: FailureSink | None, reason: str,
              delay: float) -> Outcome:
        age = self.age(request)
        if age + delay >= self._settings.max_age_seconds:
            error = ErrorInfo("GaveUp", f"gave up after {request.attempt} attempts over {_duration(age)}; "
                                        f"last error: {reason}")
            return self.fail(message, request, sink, error)
        logger.info("hunt %s: %s, back in %.1f s", request.id, reason, delay)
        return self._put_back(message, request, sink, request.to_message(self._mark), reason, delay)

    def fail(self, message: MessageInfo, request: HuntRequest, sink: FailureSink | None, error: ErrorInfo, *,
             best_effort: bool = False, record_key: str | None = None) -> Outcome:
        """`record_key` (default: the job id) names the dead-letter record: another request under a job's id
        records its failure apart, so that the job's own record stays free."""
        now = self._clock()
        logger.warning("hunt %s: failed (%s)", request.id, error.code)
        failed = envelope.failure(request, error, completed_at=now)
        # The record first: it must exist even when the destination itself is what keeps failing (poison).
        self._dead_letters.record(key=record_key or request.id, raw=message.raw, reason=error.code,
                                  error=error.as_dict(),
                                  queue=self._settings.queue, message_id=message.message_id,
                                  dequeue_count=message.dequeue_count, now=now,
                                  first_enqueued_at=request.first_enqueued_at)
        location = self._deliver_failure(sink, request.id, failed, best_effort=best_effort, request=request)
        return Outcome(request.id, "failed", error.code, request.api, location=location)

    def record_unreadable(self, message: MessageInfo, cause: str) -> Outcome:
        """The last answer to a message nothing else could handle: its raw bytes in a dead-letter record."""
        error = ErrorInfo("Unreadable", f"the message could not be handled ({cause}); its raw bytes are recorded",
                          hint="check the relay's logs for this message id; send the hunt again once fixed")
        self._dead_letters.record(key=message.message_id, raw=message.raw, reason=error.code, error=error.as_dict(),
                                  queue=self._settings.queue, message_id=message.message_id,
                                  dequeue_count=message.dequeue_count, now=self._clock())
        return Outcome(message.message_id, "failed", error.code)

    def reject(self, message: MessageInfo, error: InvalidHuntRequest,
               sink_for: Callable[[str | None], FailureSink]) -> Outcome:
        """`sink_for(destination)` finds the message's destination, or raises DeliveryRefused."""
        now = self._clock()
        info = ErrorInfo("InvalidHuntRequest", str(error), hint="see the message format in the README and "
                         "schemas/hunt-request.v1.schema.json")
        job_id, context, destination = _salvage(message.raw)
        key = job_id or message.message_id
        logger.warning("hunt %s: rejected the message (%s)", key, error.field or "message")
        location = None
        with contextlib.suppress(DeliveryRefused):   # no destination to tell: the record below is the answer
            location = self._deliver_failure(sink_for(destination), key, envelope.failure(
                None, info, completed_at=now, job_id=key, context=context))
        self._dead_letters.record(key=key, raw=message.raw, reason="InvalidHuntRequest", error=info.as_dict(),
                                  queue=self._settings.queue, message_id=message.message_id,
                                  dequeue_count=message.dequeue_count, now=now)
        return Outcome(key, "rejected", str(error), location=location)

    def _deliver_failure(self, sink: FailureSink | None, job_id: str, failed: dict[str, Any], *,
                         best_effort: bool = False, request: HuntRequest | None = None) -> str | None:
        """Where the failure envelope went; None when it did not (the dead-letter record holds it) or when it
        waits for a delivery-only retry."""
        if sink is None:
            return None
        try:
            if request is not None and self._pending is not None and isinstance(sink, Resendable):
                body = sink.prepare_failure(job_id, failed)
                try:
                    sink.send(job_id, body)
                except DeliveryRetryable as error:
                    self._retry_failure_delivery(request, body, error)
                    return None
                return sink.location
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

    def _retry_failure_delivery(self, request: HuntRequest, body: bytes, error: DeliveryRetryable) -> None:
        """Keeps the failure envelope and enqueues a delivery-only copy, within the hunt's own limits: a hunt that
        gave up for having no attempts or age left has none left for this either (its dead-letter record stays
        the answer)."""
        assert self._pending is not None
        delay = self.delivery_delay(request, error.retry_after)
        copy = request.delivery_only().next_attempt(str(error)).to_message(self._mark)
        if self.out_of_retries(request, delay) or _message_bytes(copy) > MAX_MESSAGE_BYTES:
            logger.warning("hunt %s: the destination did not take the failure envelope (%s) and the hunt has no "
                           "retry left; the dead-letter record holds it", request.id, error)
            return
        try:
            self._pending.keep(request, body, None)   # before the copy: a crash may duplicate, never lose
        except PendingConflict:
            logger.warning("hunt %s: another request under this job id waits for its delivery; the dead-letter "
                           "record holds this failure", request.id)
            return
        self._requeue(copy, math.ceil(delay))
        logger.warning("hunt %s: the destination did not take the failure envelope (%s), delivery only in %.1f s",
                       request.id, error, delay)


def _message_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _salvage(raw: bytes) -> tuple[str | None, dict[str, Any], str | None]:
    """Best effort: the id, context and destination of an invalid message, when they themselves are valid."""
    try:
        body = message_json(raw)
    except InvalidHuntRequest:
        return None, {}, None
    raw_id, raw_context, raw_destination = body.get("id"), body.get("context"), body.get("destination")
    job_id = raw_id if isinstance(raw_id, str) and ID_PATTERN.fullmatch(raw_id) else None
    context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
    if len(dumps(context)) > MAX_CONTEXT_BYTES:
        context = {}
    destination = raw_destination if isinstance(raw_destination, str) else None
    return job_id, context, destination


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
