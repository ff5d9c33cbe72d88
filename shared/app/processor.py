"""The hunt processor: one queue message in, one Outcome out. The same code runs under the Functions host and the
portable worker. It asks the core and tells the adapters:

    decode -> resolve the destination -> already delivered? -> query (raw or template) -> the quota gate
      -> call the API -> classify -> deliver | retry (shared.core.retry_policy.decide) | fail

A message sink (webhook, queue) that answers NotNow to a result gets a delivery-only retry: the rendered body is
kept (shared.delivery.pending) and only then a copy marked `pending_delivery` is enqueued. Such a copy skips the
gate and the API: it sends the kept body again to the hunt's own destination (same `webhook-id`, signed afresh).
The limits (HUNT_MAX_ATTEMPTS, HUNT_MAX_AGE) and a Refused end it with a dead-letter record naming the kept body
(no failure envelope to a destination that refuses); a missing body ends it with a failure.

Every path ends in an Outcome (shared.core.outcome) and the queue message can then be completed: a message that
can never succeed is answered once (dead letter, and a failed envelope where a destination resolves), never thrown
back to the host to burn its dequeues. Exceptions escape only when storage itself fails (the host then retries
the message, which is safe: every sink is idempotent on the job id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from azure.core.exceptions import AzureError

from shared.adapters.dead_letters import DeadLetters
from shared.adapters.hunting_client import (
    ApiReply,
    ApiResult,
    ResultStream,
    RunningTime,
    SignInRefused,
    TransportFailure,
)
from shared.adapters.split_parts import SplitParts
from shared.app.endings import HuntEndings, Job
from shared.app.split_hunts import Continue, PartBroken, PartRefused, SplitHunts, SplitStep
from shared.core.apis import APIS
from shared.core.classify import ErrorInfo, Success, Terminal, Throttled, Transient, classify
from shared.core.errors import DeliveryRefused, InvalidHuntRequest, PendingConflict, StreamBroken
from shared.core.hunt_request import HuntRequest, decode_hunt_request, message_json
from shared.core.job_states import Begun
from shared.core.outcome import Cause, MessageInfo, Outcome
from shared.core.quota import Admit, Wait
from shared.core.relay_mark import MessageMark
from shared.core.retry_policy import Cause as RetryCause
from shared.core.retry_policy import (
    DestinationNotNow,
    GateWait,
    GiveUp,
    Limits,
    SplitContinues,
    TransientFault,
    decide,
)
from shared.core.retry_policy import Throttled as ThrottledCause
from shared.core.routing import is_retired_answer, retired_warning, route, split_warning
from shared.core.rows import RowStream
from shared.core.settings import Settings
from shared.core.splitting import SPLIT_HINT, refusal
from shared.core.tenants import TenantConfig, check_tenant
from shared.delivery.base import Delivered, MessageSink, NotNow, Refused, Sink, StreamSink
from shared.delivery.pending import Kept, PendingDeliveries, Sent
from shared.delivery.targets import Target, resolve_destination

logger = logging.getLogger(__name__)

_OUTCOME_OF: dict[type, Cause] = {ThrottledCause: Cause.THROTTLED, TransientFault: Cause.TRANSIENT,
                                  GateWait: Cause.GATE_WAIT, DestinationNotNow: Cause.DELIVERY_RETRY,
                                  SplitContinues: Cause.SPLIT_CONTINUES}


class Gate(Protocol):
    """The fleet-wide quota gate (shared.adapters.quota_table), per API and tenant."""

    def admit(self, api: str, tenant: TenantConfig | None = None) -> Admit | Wait: ...
    def throttled(self, api: str, seconds: float, tenant: TenantConfig | None = None) -> None: ...
    def spent(self, api: str, seconds: float, tenant: TenantConfig | None = None, *,
              reserved: float = 0.0, learn: bool = True) -> None: ...


class Runner(Protocol):
    def run(self, api: str, query: str, timespan: str | None = None,
            tenant: TenantConfig | None = None) -> ApiResult: ...


class Jobs(Protocol):
    """The job ledger (shared.adapters.job_ledger): told each hunt begins; says whether it saw the job before."""

    def begin(self, request: HuntRequest) -> Begun: ...


class Retired(Protocol):
    """Which legacy APIs the fleet has seen answer as retired (shared.adapters.retirements)."""

    def known(self) -> frozenset[str]: ...
    def mark(self, api: str) -> None: ...


class HuntProcessor:
    def __init__(self, *, settings: Settings, client: Runner, sink_for: Callable[[Target], Sink],
                 dead_letters: DeadLetters, requeue: Callable[[str, float], None], gate: Gate | None,
                 render_template: Callable[[str, dict[str, Any]], str] | None,
                 clock: Callable[[], datetime], rand: Callable[[], float], mark: MessageMark | None = None,
                 pending: PendingDeliveries | None = None, retired: Retired | None = None,
                 split_parts: SplitParts | None = None, jobs: Jobs | None = None) -> None:
        self._settings = settings
        self._jobs = jobs
        self._splits = SplitHunts(split_parts, self._call, row_cap=settings.row_cap,
                                  split_min_seconds=settings.split_min_seconds,
                                  max_parts=settings.split_max_parts) if split_parts is not None else None
        self._retired = retired
        self._client = client
        self._sink_for = sink_for
        self._gate = gate
        self._render_template = render_template
        self._clock = clock
        self._rand = rand
        self._mark = mark
        self._pending = pending   # None: no delivery-only retries; a result not taken re-runs the hunt
        self._limits = Limits(max_attempts=settings.max_attempts, max_age_seconds=settings.max_age_seconds)
        self._end = HuntEndings(queue_name=settings.queue, limits=self._limits, dead_letters=dead_letters,
                                requeue=requeue, clock=clock, rand=rand, encode=self._encode, pending=pending)

    def _encode(self, request: HuntRequest) -> str:
        return request.to_message(self._mark)

    def _decode(self, message: MessageInfo) -> HuntRequest:
        request = decode_hunt_request(
            message.raw, message_id=message.message_id, default_api=self._settings.api, now=self._clock(),
            mark=self._mark, default_tenant=self._settings.default_tenant,
            tenant_apis={name: t.api for name, t in self._settings.tenants.items() if t.api is not None})
        check_tenant(request.tenant, self._settings.tenants)
        return request

    def _tenant(self, request: HuntRequest) -> TenantConfig | None:
        return None if request.tenant is None else self._settings.tenants[request.tenant]

    def _target(self, destination: str | None, tenant: str | None = None) -> Target | Refused:
        if tenant is None and self._settings.tenants:
            return Refused("the message names no tenant of this relay: no destination is told")
        return resolve_destination(destination, self._settings,
                                   None if tenant is None else self._settings.tenants.get(tenant))

    def _tenant_named(self, value: object) -> str | None:
        """The relay's tenant a message that is not a valid hunt belongs to: the one it names, when that is one of
        the relay's, or the default tenant when it names none; None otherwise (the home scope)."""
        if value is None:
            return self._settings.default_tenant
        return value if isinstance(value, str) and value in self._settings.tenants else None

    def process(self, message: MessageInfo) -> Outcome:
        """The message's Outcome, carrying the hunt's tenant (the observers key jobs by it)."""
        try:
            request = self._decode(message)
        except InvalidHuntRequest as error:
            rejected = self._end.reject(message, error, self._target, self._sink_for, tenant_of=self._tenant_named)
            if self._settings.tenants:   # the cold path: the message is read again for the tenant it names
                return replace(rejected, tenant=self._tenant_named(_tenant_field(message.raw)))
            return rejected
        outcome = self._run(message, request)
        return replace(outcome, tenant=request.tenant, attempt=request.attempt,
                       first_enqueued_at=request.first_enqueued_at)

    def _run(self, message: MessageInfo, request: HuntRequest) -> Outcome:
        logger.info("hunt %s: attempt %s on %s", request.id, request.attempt, request.api)
        # A hunt that began before (it cannot have been cancelled since) is marked running once the quota gate
        # lets it call: a copy the gate sends back again costs the ledger one write, the outcome's, not two.
        begin_at_call = self._jobs is not None and request.began_before and not request.split \
            and request.pending_delivery is None
        begun = Begun.SEEN if begin_at_call or self._jobs is None else self._jobs.begin(request)
        if begun is Begun.CANCELLED:
            logger.info("hunt %s: cancelled before it ran; completing the message", request.id)
            return Outcome(request.id, Cause.CANCELLED, "cancelled before it ran", request.api, tenant=request.tenant)
        if request.dropped:
            logger.warning("hunt %s: the message set relay-kept fields without the relay's mark (%s); they were "
                           "dropped and the hunt runs as a fresh one", request.id, ", ".join(request.dropped))
        target = self._target(request.destination, request.tenant)
        if isinstance(target, Refused):
            return self._end.fail(Job(message, request, None), ErrorInfo("DestinationRefused", target.reason))
        job = Job(message, request, self._sink_for(target))
        if request.pending_delivery is not None:
            return self._redeliver(job)
        # A job the ledger sees for the first time cannot have been delivered: only a job seen before is looked for
        if begun is Begun.SEEN and isinstance(job.sink, StreamSink) and job.sink.already_delivered(request):
            logger.info("hunt %s: already delivered, completing the redelivered message", request.id)
            if request.split and self._splits is not None:   # a worker that died between delivery and clean-up
                self._splits.finished(request)
            return Outcome(request.id, Cause.DUPLICATE, "already delivered", request.api)
        try:
            query = self._query_of(request)
        except InvalidHuntRequest as error:
            return self._end.fail(job, ErrorInfo("InvalidTemplate", str(error)))
        ran = self._route(request)
        if request.split:
            return self._split_hunt(job, ran, query)
        reply = self._call(ran, query, begin=request if begin_at_call else None)
        if isinstance(reply, Wait):   # the same attempt goes back on the queue: no call was spent
            return self._retry(job, GateWait(reply.seconds, reply.reason))
        if isinstance(reply, ApiReply) and self._retired_now(ran, reply):
            ran = request.ran_on("graph", retired_warning(ran.api))   # re-run on Graph: no attempt is spent
            reply = self._call(ran, query)
            if isinstance(reply, Wait):
                return self._retry(job, GateWait(reply.seconds, reply.reason))
        job = job.ran_as(ran)
        if isinstance(reply, SignInRefused):
            return self._end.fail(job, reply.error)
        if isinstance(reply, TransportFailure):
            return self._retry(job, TransientFault(reply.reason))
        if isinstance(reply, ApiReply):
            return self._answer(job, reply)
        try:
            return self._deliver_or_retry(job, reply)
        finally:
            reply.close()
            self._settle_running_time(ran, reply)

    def process_poison(self, message: MessageInfo) -> Outcome:
        """A message the host (or worker) gave up on after max dequeues: persist it, answer it, never run it.
        Only a storage failure escapes: whatever else goes wrong, the raw bytes are recorded and the message is
        complete (a poison handler that raised would meet the same message again, forever)."""
        try:
            outcome = self._process_poison(message)
        except AzureError:
            raise
        except Exception as error:
            logger.error("message %s: the poison handler failed (%s); recording the raw message", message.message_id,
                         type(error).__name__)
            outcome = self._end.unreadable(message, type(error).__name__)
        if outcome.tenant is None and self._settings.tenants:
            return replace(outcome, tenant=self._tenant_named(_tenant_field(message.raw)))
        return outcome

    def _split_hunt(self, job: Job, ran: HuntRequest, query: str) -> Outcome:
        """A hunt with `split`: its parts run (shared.app.split_hunts), then one result is delivered."""
        refused = refusal(query)
        if refused is not None:
            return self._end.fail(job.ran_as(ran), ErrorInfo("SplitRefused", refused, hint=SPLIT_HINT))
        if ran.api != "graph":   # only Graph takes a Timespan, which is what a part is
            if self._settings.legacy_apis == "legacy":
                return self._end.fail(job, ErrorInfo(
                    "SplitNeedsGraph", f"a split hunt runs its parts with Graph's timespan, which the {ran.api} API "
                    "does not take, and HUNT_LEGACY_APIS=legacy keeps this hunt on it",
                    hint="send the hunt with api 'graph', or without 'split'"))
            ran = job.request.ran_on("graph", (*ran.warnings, split_warning(job.request.api)))
        job = job.ran_as(ran)
        if self._splits is None:
            return self._end.fail(job, ErrorInfo("SplitUnavailable", "this relay was built without storage for "
                                                 "split parts", hint="send the hunt without 'split'"))
        outcome = self._split_step(job, self._splits.run(ran, query))
        if outcome.cause in (Cause.DELIVERED, Cause.DELIVERY_RETRY, Cause.FAILED):
            self._splits.finished(job.request)   # answered, or its body kept: the parts are not needed again
        return outcome

    def _split_step(self, job: Job, step: SplitStep) -> Outcome:
        if isinstance(step, Wait):
            return self._retry(job, GateWait(step.seconds, step.reason))
        if isinstance(step, SignInRefused):
            return self._end.fail(job, step.error)
        if isinstance(step, PartRefused):
            return self._end.fail(job, ErrorInfo("SplitRefused", step.reason, hint=SPLIT_HINT))
        if isinstance(step, TransportFailure | PartBroken):
            return self._retry(job, TransientFault(step.reason))
        if isinstance(step, Continue):
            return self._retry(job, SplitContinues(step.reason))
        if isinstance(step, ApiReply):
            return self._answer(job, step)
        return self._deliver_or_retry(job, step)

    def _deliver_or_retry(self, job: Job, stream: RowStream) -> Outcome:
        """The result to the destination; a stream that breaks on the way is retried, and a result too big for
        its destination when no link can be signed is a failure."""
        try:
            return self._deliver(job, stream)
        except StreamBroken as error:
            return self._retry(job, TransientFault(str(error)))
        except DeliveryRefused as error:
            return self._end.fail(job.without_sink(), ErrorInfo("DeliveryRefused", str(error)))

    def _route(self, request: HuntRequest) -> HuntRequest:
        """The hunt as it runs: on the API it names, or on Graph (shared.core.routing)."""
        if request.api == "graph" or self._settings.legacy_apis == "legacy":
            return request
        retired = self._retired.known() if self._retired is not None and self._settings.legacy_apis == "auto" \
            else frozenset()
        chosen = route(request.api, self._settings.legacy_apis, now=self._clock(), retired=retired)
        return request.ran_on(chosen.api, chosen.warnings)

    def _call(self, ran: HuntRequest, query: str, *, begin: HuntRequest | None = None) -> ApiResult | Wait:
        """One call through the fleet's quota gate, on the API the hunt runs on; `begin`: the hunt to mark running
        in the job ledger once the gate lets it call. Its running time is told to the gate: its own wall clock up
        to the answer's head (from the request sent: ResultStream.answered_in), or, from mde and m365d, the
        Stats.ExecutionTime their answer states (read with the rows: the charge waits on the stream until
        `_settle_running_time`)."""
        tenant = self._tenant(ran)
        verdict = Admit() if self._gate is None else self._gate.admit(ran.api, tenant)
        if isinstance(verdict, Wait):
            return verdict
        if begin is not None and self._jobs is not None:
            self._jobs.begin(begin)
        if self._gate is None:
            return self._client.run(ran.api, query, ran.timespan, tenant)
        started = time.monotonic()
        result = self._client.run(ran.api, query, ran.timespan, tenant)
        wall = result.answered_in if isinstance(result, ResultStream) else time.monotonic() - started
        if ran.api != "graph" and isinstance(result, ResultStream):
            result.running_time = RunningTime(wall, verdict.reserved)
        else:
            self._gate.spent(ran.api, wall, tenant, reserved=verdict.reserved,
                             learn=isinstance(result, ResultStream))
        return result

    def _settle_running_time(self, ran: HuntRequest, stream: RowStream) -> None:
        """The charge a stream carries, once its rows (and so its Stats) have gone by."""
        running = getattr(stream, "running_time", None)
        if self._gate is None or not isinstance(running, RunningTime):
            return
        executed = (stream.stats or {}).get("ExecutionTime")
        seconds = float(executed) if isinstance(executed, int | float) and executed >= 0 else running.wall_seconds
        self._gate.spent(ran.api, seconds, self._tenant(ran), reserved=running.reserved)

    def _retired_now(self, ran: HuntRequest, reply: ApiReply) -> bool:
        """A legacy API answered as retired, under HUNT_LEGACY_APIS=auto: remembered fleet-wide."""
        if ran.api == "graph" or self._settings.legacy_apis != "auto" or not is_retired_answer(reply.status,
                                                                                                 reply.body):
            return False
        if self._retired is not None:
            self._retired.mark(ran.api)
        logger.warning("hunt %s: the %s API answered as retired (HTTP %s); running it on Microsoft Graph", ran.id,
                       ran.api, reply.status)
        return True

    def _process_poison(self, message: MessageInfo) -> Outcome:
        try:
            request = self._decode(message)
        except InvalidHuntRequest as invalid:
            return self._end.reject(message, invalid, self._target, self._sink_for, tenant_of=self._tenant_named,
                                    best_effort=True)
        error = ErrorInfo("Poison", f"the hunt could not be processed in {self._settings.max_dequeue_count} "
                                    "deliveries (the handler failed each time); it was not run again",
                          hint="check the relay's logs for this job id; send the hunt again once fixed")
        target = self._target(request.destination, request.tenant)
        sink = self._sink_for(target) if isinstance(target, Target) else None
        outcome = self._end.fail(Job(message, request, sink), error, best_effort=True, cause=Cause.POISON)
        if request.split and self._splits is not None:
            self._splits.finished(request)
        return outcome

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

    def _answer(self, job: Job, reply: ApiReply) -> Outcome:
        verdict = classify(reply.status, reply.body, APIS[job.ran.api])
        if isinstance(verdict, Terminal):
            return self._end.fail(job, verdict.error)
        if isinstance(verdict, Throttled):
            return self._retry(job, ThrottledCause(reply.headers, reply.body, f"HTTP 429 from the {job.ran.api} "
                                                                               "API"))
        assert not isinstance(verdict, Success)
        return self._retry(job, TransientFault(verdict.reason if isinstance(verdict, Transient)
                                               else f"unexpected {verdict}"))

    def _retry(self, job: Job, cause: RetryCause, hint: str | None = None) -> Outcome:
        """The core decides (requeue after how long, as what copy, or give up); this carries it out."""
        decision = decide(cause, job.request, self._limits, now=self._clock(), rand=self._rand, encode=self._encode,
                          hint=hint)
        if isinstance(cause, ThrottledCause) and self._gate is not None and decision.pause is not None:
            # every instance pauses for this tenant, whatever this hunt does
            self._gate.throttled(job.ran.api, decision.pause, self._tenant(job.ran))
        if isinstance(decision, GiveUp):
            # A destination that said "not now" is not sent the failure too: the record is the answer.
            return self._end.fail(job.without_sink() if isinstance(cause, DestinationNotNow) else job, decision.error)
        logger.info("hunt %s: %s (%s), back in %.1f s (from the %s)", job.id, _OUTCOME_OF[type(cause)], cause.reason,
                    decision.delay, decision.source)
        return self._end.requeue(job, decision, _OUTCOME_OF[type(cause)], cause.reason)

    def _deliver(self, job: Job, stream: RowStream) -> Outcome:
        request, sink = job.ran, job.sink
        assert sink is not None
        if not isinstance(sink, MessageSink):
            delivered = sink.deliver_result(request, stream, self._clock)
            return self._delivered(job, delivered.rows, delivered.location, size=delivered.bytes)
        prepared = sink.prepare_result(request, stream, self._clock)
        rows = prepared.summary.row_count if prepared.summary else None
        sent = sink.send(request.id, prepared.body)
        if isinstance(sent, Delivered):
            return self._delivered(job, rows, sent.location, size=len(prepared.body))
        if isinstance(sent, Refused):
            return self._end.fail(job.without_sink(), ErrorInfo("DeliveryRefused", sent.reason))
        if self._pending is None:
            return self._retry(job, TransientFault(sent.reason, sent.retry_after))
        try:
            self._pending.keep(job.request, prepared.body, rows)   # before the copy: a crash may duplicate, never lose
        except PendingConflict:
            # The dead-letter record is this request's answer: its destination just refused to take anything.
            return self._end.fail(job.without_sink(), ErrorInfo(
                "Conflict", f"another request under the job id {request.id} waits for its delivery; this one "
                "was not kept and the first is untouched", hint="give every distinct hunt its own id"),
                record_key=f"{request.id}.conflict.{job.request.digest()[:16]}")
        return self._retry(job, DestinationNotNow(sent.reason, sent.retry_after, sent.held),
                           hint=self._kept_hint(request))

    def _delivered(self, job: Job, rows: int | None, location: str, note: str = "", *,
                   size: int | None = None) -> Outcome:
        logger.info("hunt %s: delivered %s rows to %s%s", job.id, rows, location, f" ({note})" if note else "")
        return Outcome(job.id, Cause.DELIVERED, note, job.ran.api, rows, location, bytes=size)

    def _redeliver(self, job: Job) -> Outcome:
        """A delivery-only copy: no gate, no API call; the kept body goes again to the hunt's own destination."""
        request, sink = job.request, job.sink
        if self._pending is None or not isinstance(sink, MessageSink):
            return self._end.fail(job, ErrorInfo(
                "PendingDeliveryMissing", "the message asks for a delivery-only retry, which this destination "
                "does not take; the hunt was not run", hint="send the hunt again without 'pending_delivery'"))
        kept = self._pending.load(request)
        if isinstance(kept, Sent):
            logger.info("hunt %s: the kept body was delivered already (%s); completing the copy", request.id,
                        kept.at)
            return Outcome(request.id, Cause.DUPLICATE, "delivered on an earlier try", request.api)
        if not isinstance(kept, Kept):
            # Same webhook-id as the result: a receiver that already has it drops this failure as a duplicate.
            return self._end.fail(job, ErrorInfo(
                "PendingDeliveryMissing", kept.reason, hint="if the destination has not received this job, send "
                "the hunt again without 'pending_delivery'"))
        logger.info("hunt %s: delivery-only retry, attempt %s", request.id, request.attempt)
        sent = sink.send(request.id, sink.renewed(kept.body))
        if isinstance(sent, Refused):
            return self._end.fail(job.without_sink(), ErrorInfo("DeliveryRefused", sent.reason,
                                                                hint=self._kept_hint(request)))
        if isinstance(sent, NotNow):
            return self._retry(job, DestinationNotNow(sent.reason, sent.retry_after, sent.held),
                           hint=self._kept_hint(request))
        self._pending.mark_sent(request, self._clock())
        return self._delivered(job, kept.rows, sent.location, "delivery-only retry", size=len(kept.body))

    def _kept_hint(self, request: HuntRequest) -> str | None:
        if self._pending is None:
            return None
        return (f"the undelivered result is kept at {self._pending.location(request)}; fix the destination, "
                "then deliver it from there or send the hunt again")


def _tenant_field(raw: bytes) -> object:
    """The message's `tenant` value, best effort (None when the message is not a JSON object or has none)."""
    try:
        return message_json(raw).get("tenant")
    except InvalidHuntRequest:
        return None
