"""The relay's process-wide parts, built once from settings and shared by every hunt the process runs: one API
credential, one pooled HTTP session, storage clients, the webhook sender, the processor, and the observers that
see every handled message's Outcome.

`Relay` is also the `DeliveryParts` every destination builds its sink from (shared.delivery.base): one client per
container and queue, the sender, result links, the clock.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from shared.adapters.breaker_table import Breakers
from shared.adapters.credentials import TenantCredentials
from shared.adapters.dead_letters import DeadLetters
from shared.adapters.http_session import pooled_session
from shared.adapters.hunting_client import HuntingClient
from shared.adapters.job_ledger import JobLedger, LedgerObserver
from shared.adapters.message_keys import LazyRelayMark
from shared.adapters.outbound import SafeSender
from shared.adapters.quota_table import QuotaGates
from shared.adapters.retirements import Retirements
from shared.adapters.schedule_state import ScheduleState
from shared.adapters.split_parts import SplitParts
from shared.adapters.storage import create_if_missing, storage_clients, table_service
from shared.adapters.telemetry import Telemetry, telemetry_from_environment
from shared.app import log_scrub, steps
from shared.app.config import load_settings
from shared.app.processor import Gate, HuntProcessor, Runner
from shared.app.scheduler import DEFAULT_SCHEDULES_DIR, Scheduler, load_schedules
from shared.core.address_policy import OutboundPolicy
from shared.core.breaker import BreakerPolicy
from shared.core.outcome import MessageInfo, Observer, Outcome, Timing
from shared.core.retry_policy import visibility_seconds
from shared.core.schedules import ScheduleError
from shared.core.settings import Settings
from shared.core.templates import DEFAULT_TEMPLATES_DIR, get_template, load_templates, render
from shared.delivery.base import MessageSink, Sink
from shared.delivery.guarded import GuardedSink
from shared.delivery.links import ResultLinks, signer_for
from shared.delivery.pending import PendingDeliveries
from shared.delivery.targets import Target

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Relay:
    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = utc_now,
                 rand: Callable[[], float] = random.random, observers: Iterable[Observer] = (),
                 telemetry: Telemetry | None = None) -> None:
        log_scrub.install()
        self.settings = settings
        self.clock = clock
        self.observers = list(observers)
        # Telemetry (shared.adapters.telemetry) sees each outcome through its observer; the steps it charts as
        # child spans are timed by wrappers around the processor's parts (shared.app.steps), only while it is on.
        self.telemetry = telemetry
        self.session = pooled_session()
        credentials = TenantCredentials(settings)
        self.client = HuntingClient(credentials if telemetry is None else steps.timed_credentials(credentials),
                                    self.session, cloud=settings.cloud, base_url=settings.api_base_url,
                                    row_cap=settings.row_cap)
        self.storage_session = pooled_session()   # the Azure SDKs' own (shared.adapters.http_session)
        self.queue_service, self.blob_service = storage_clients(settings, self.storage_session)
        self._containers: dict[str, ContainerClient] = {}
        self._queues: dict[str, QueueClient] = {}
        self.hunt_queue = self.queue(settings.queue)
        self.poison_queue = self.queue(settings.poison_queue)
        self.dead_letters = DeadLetters(self.container(settings.deadletter_container))
        self.sender = SafeSender(OutboundPolicy.from_settings(
            settings.webhook_allowed_hosts, settings.allow_loopback_http, settings.identity_endpoint))
        # Templates are parsed once at start; a malformed template stops the relay here, not mid-hunt.
        self.templates = load_templates(Path(settings.templates_dir) if settings.templates_dir
                                        else DEFAULT_TEMPLATES_DIR)
        # One client for the gate's, the ledger's and the breakers' tables
        tables = table_service(settings, self.storage_session)
        self.gates = QuotaGates(tables.get_table_client(settings.gate_table),
                                settings, clock=clock, rand=rand) if settings.quota_gate else None
        # A circuit breaker per webhook and queue destination (shared.delivery.guarded), shared by every instance.
        self.breakers = Breakers(tables.get_table_client(settings.breaker_table), BreakerPolicy(
            settings.breaker_failures, settings.breaker_window_seconds, settings.breaker_cool_off_seconds),
            clock=clock) if settings.breaker else None
        # The job ledger: every hunt's state (shared.adapters.job_ledger), written by an observer and by the
        # processor as a hunt begins (which is also where a cancelled hunt stops).
        self.jobs = JobLedger(tables.get_table_client(settings.jobs_table),
                              clock=clock, retention_seconds=settings.job_retention_seconds) \
            if settings.job_ledger else None
        if self.jobs is not None:
            self.observers.insert(0, LedgerObserver(self.jobs, clock))
        # Marks the relay's own queue copies (shared.core.relay_mark); the stored key is read at the first hunt.
        self.mark = LazyRelayMark(settings.message_keys, self.container(settings.state_container))
        client: Runner = self.client
        gate: Gate | None = self.gates
        if telemetry is not None:
            client = steps.TimedRunner(self.client, telemetry.api_latency)
            gate = None if self.gates is None else steps.TimedGate(self.gates)
        self.processor = HuntProcessor(
            settings=settings, client=client, sink_for=self.sink_for, dead_letters=self.dead_letters,
            requeue=self.requeue, gate=gate,
            render_template=self.render_template, clock=clock, rand=rand,
            mark=self.mark, pending=PendingDeliveries(self.container(settings.results_container)),
            retired=Retirements(self.container(settings.state_container)),
            split_parts=SplitParts(self.container(settings.results_container), clock=clock,
                                   max_age_seconds=settings.max_age_seconds),
            jobs=self.jobs,
        )
        if telemetry is not None:
            self.observers.append(telemetry.observer())
            self._watch(telemetry)

    def ensure_resources(self) -> None:
        """Create the queues, containers and table if missing (infra creates them in Azure; the local stack
        needs this)."""
        destinations = self.settings.destinations.values()
        queues = [self.settings.queue, self.settings.poison_queue, *(q for d in destinations for q in d.queues)]
        for name in dict.fromkeys(queues):
            create_if_missing(self.queue(name).create_queue, f"queue {name}")
        containers = {self.settings.results_container, self.settings.deadletter_container,
                      self.settings.state_container, *(c for d in destinations for c in d.containers)}
        for name in sorted(containers):
            create_if_missing(self.container(name).create_container, f"container {name}")
        if self.gates is not None:
            self.gates.ensure_table()
        if self.jobs is not None:
            self.jobs.ensure_table()
        if self.breakers is not None:
            self.breakers.ensure_table()

    def sink_for(self, target: Target) -> Sink:
        sink = target.destination.build(self, inline=target.inline, scope=target.scope)
        if self.breakers is not None and isinstance(sink, MessageSink):
            sink = GuardedSink(sink, target.breaker_key, self.breakers, self.settings.breaker_cool_off_seconds)
        if self.telemetry is not None:
            sink = steps.timed_sink(sink, target.destination.type, target.destination.name)
        return sink

    def _watch(self, telemetry: Telemetry) -> None:
        """The gauges, read at each export: queue depths, calls left per quota window, open circuits."""
        def depths() -> list[tuple[int, dict[str, str]]]:
            return [(queue.get_queue_properties().approximate_message_count or 0,
                     {"messaging.destination.name": queue.queue_name})
                    for queue in (self.hunt_queue, self.poison_queue)]

        telemetry.watch("hunt_relay.queue.depth", depths)
        gates = self.gates
        if gates is not None:
            telemetry.watch("hunt_relay.quota.calls_left", lambda: [
                (window.left, {"hunt.api": usage.api, "hunt.tenant": usage.tenant or "home",
                               "hunt.quota.window": f"{window.seconds}s"})
                for usage in gates.usage() for window in usage.windows])
        breakers = self.breakers
        if breakers is not None:
            telemetry.watch("hunt_relay.breaker.open", lambda: [
                (1 if view.is_open else 0, {"hunt.destination": view.key}) for view in breakers.views()])

    def container(self, name: str) -> ContainerClient:
        """One client per container for the process: building one builds a whole SDK pipeline."""
        client = self._containers.get(name)
        return client if client is not None else self._containers.setdefault(
            name, self.blob_service.get_container_client(name))

    def queue(self, name: str) -> QueueClient:
        client = self._queues.get(name)
        return client if client is not None else self._queues.setdefault(
            name, self.queue_service.get_queue_client(name))

    @functools.cached_property
    def scheduler(self) -> Scheduler:
        """The scheduler over the schedule files (read once: a changed file is read at the next start)."""
        folder = Path(self.settings.schedules_dir) if self.settings.schedules_dir else DEFAULT_SCHEDULES_DIR
        if self.settings.schedules_dir and not folder.is_dir():
            raise ScheduleError(f"HUNT_SCHEDULES_DIR={self.settings.schedules_dir!r} is not a folder")
        state = ScheduleState(self.container(self.settings.state_container),
                              self.container(self.settings.deadletter_container))
        return Scheduler(self.settings, load_schedules(folder, self.settings, self.clock()), state,
                         self._send_hunt, self.clock)

    def _send_hunt(self, message: str) -> None:
        self.hunt_queue.send_message(message)

    @functools.cached_property
    def result_links(self) -> ResultLinks:
        """Link blobs for results too big for a webhook or a queue; a delegation key is fetched at the first link."""
        signer = signer_for(self.settings.storage, self.blob_service, self.clock)
        return ResultLinks(self.container(self.settings.results_container), signer,
                           self.settings.link_lifetime_seconds, self.clock)

    def render_template(self, name: str, parameters: dict[str, Any]) -> str:
        return render(get_template(self.templates, name), parameters)

    def requeue(self, message: str, delay_seconds: float) -> None:
        """The copy back on the hunt queue; the retry policy already capped the delay."""
        self.hunt_queue.send_message(message, visibility_timeout=visibility_seconds(delay_seconds))

    def handle(self, raw: bytes, *, message_id: str, dequeue_count: int | None = None) -> Outcome:
        message = MessageInfo(raw, message_id, dequeue_count)
        return self._observed(self._timed(self.processor.process, message), message)

    def handle_poison(self, raw: bytes, *, message_id: str, dequeue_count: int | None = None) -> Outcome:
        message = MessageInfo(raw, message_id, dequeue_count)
        return self._observed(self._timed(self.processor.process_poison, message), message)

    def _timed(self, process: Callable[[MessageInfo], Outcome], message: MessageInfo) -> Outcome:
        """The outcome, with its timing while telemetry is on (shared.app.steps)."""
        if self.telemetry is None:
            return process(message)
        with steps.recording() as recorded:
            start = time.time_ns()
            outcome = process(message)
        return replace(outcome, timing=Timing(start, time.time_ns(), tuple(recorded)))

    def _observed(self, outcome: Outcome, message: MessageInfo) -> Outcome:
        """Each observer sees the outcome once; one that fails is logged and never changes the message's fate."""
        for observer in self.observers:
            try:
                observer(outcome, message)
            except Exception as error:
                logger.warning("hunt %s: observer %s failed (%s)", outcome.job_id, type(observer).__name__,
                               type(error).__name__)
        return outcome


def relay_from_environment(environ: Mapping[str, str]) -> Relay:
    """The long-running relay as the environment configures it (the Function App, the worker, the server): its
    settings, and telemetry when an exporter is configured (shared.adapters.telemetry)."""
    settings = load_settings(environ)
    return Relay(settings, telemetry=telemetry_from_environment(environ, queue=settings.queue))
