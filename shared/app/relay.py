"""The relay's process-wide parts, built once from settings and shared by every hunt the process runs:
one API credential, one pooled HTTP session, storage clients, the webhook sender and the processor.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient, QueueServiceClient

from shared.adapters.credentials import api_credential, storage_credential
from shared.adapters.dead_letters import DeadLetters
from shared.adapters.http_session import pooled_session
from shared.adapters.hunting_client import HuntingClient
from shared.adapters.message_keys import LazyRelayMark
from shared.adapters.outbound import SafeSender
from shared.adapters.quota_table import Admit, QuotaGate, Wait, Window
from shared.app import log_scrub
from shared.app.endings import MessageInfo, Outcome
from shared.app.processor import HuntProcessor, Sink
from shared.core.address_policy import OutboundPolicy
from shared.core.settings import Settings
from shared.core.templates import DEFAULT_TEMPLATES_DIR, get_template, load_templates, render
from shared.delivery.blob import BlobSink
from shared.delivery.links import ResultLinks, signer_for
from shared.delivery.pending import PendingDeliveries
from shared.delivery.queue import QueueSink
from shared.delivery.targets import Target
from shared.delivery.webhook import WebhookSink

logger = logging.getLogger(__name__)

MAX_REQUEUE_VISIBILITY = 7 * 24 * 3600 - 3600  # below the message's default 7-day time-to-live


def utc_now() -> datetime:
    return datetime.now(UTC)


class Relay:
    def __init__(self, settings: Settings, *, clock: Callable[[], datetime] = utc_now,
                 rand: Callable[[], float] = random.random) -> None:
        log_scrub.install()
        self.settings = settings
        self.clock = clock
        self.session = pooled_session()
        self.client = HuntingClient(api_credential(settings), self.session, cloud=settings.cloud,
                                    base_url=settings.api_base_url)
        self.queue_service, self.blob_service = _storage_clients(settings, self.session)
        self._containers: dict[str, ContainerClient] = {}
        self._queues: dict[str, QueueClient] = {}
        self.hunt_queue: QueueClient = self.queue_service.get_queue_client(settings.queue)
        self.poison_queue: QueueClient = self.queue_service.get_queue_client(settings.poison_queue)
        self.dead_letters = DeadLetters(self.blob_service.get_container_client(settings.deadletter_container))
        self.sender = SafeSender(OutboundPolicy.from_settings(
            settings.webhook_allowed_hosts, settings.allow_loopback_http, os.environ.get("IDENTITY_ENDPOINT")))
        # Templates are parsed once at start; a malformed template stops the relay here, not mid-hunt.
        self.templates = load_templates(Path(settings.templates_dir) if settings.templates_dir
                                        else DEFAULT_TEMPLATES_DIR)
        self.gates = QuotaGates(_table_service(settings, self.session).get_table_client(settings.gate_table), settings,
                                clock=clock, rand=rand) if settings.quota_gate else None
        # Marks the relay's own queue copies (shared.core.relay_mark); the stored key is read at the first hunt.
        self.mark = LazyRelayMark(settings.message_keys,
                                  self.blob_service.get_container_client(settings.state_container))
        self.processor = HuntProcessor(
            settings=settings, client=self.client, sink_for=self.sink_for, dead_letters=self.dead_letters,
            requeue=self.requeue, gate=self.gates, render_template=self.render_template, clock=clock, rand=rand,
            mark=self.mark,
            pending=PendingDeliveries(self.blob_service.get_container_client(settings.results_container)),
        )

    def ensure_resources(self) -> None:
        """Create the queues and containers if missing (infra creates them in Azure; the local stack needs this)."""
        destination_queues = [self.queue_service.get_queue_client(d.queue)
                              for d in self.settings.destinations.values() if d.type == "queue"]
        for queue in (self.hunt_queue, self.poison_queue, *destination_queues):
            try:
                queue.create_queue()
            except ResourceExistsError:
                pass
            except HttpResponseError as error:  # the deployment's roles may not allow creating: infra did
                logger.warning("could not create queue %s (%s)", queue.queue_name, error.status_code)
        containers = {self.settings.results_container, self.settings.deadletter_container,
                      self.settings.state_container}
        containers |= {d.container for d in self.settings.destinations.values() if d.type == "blob"}
        for name in sorted(containers):
            try:
                self.blob_service.create_container(name)
            except ResourceExistsError:
                pass
            except HttpResponseError as error:  # e.g. no permission to create: infra should have
                logger.warning("could not create container %s (%s)", name, error.status_code)

        if self.gates is not None:
            self.gates.ensure_table()

    def sink_for(self, target: Target) -> Sink:
        destination = target.destination
        if destination.type == "blob":
            return BlobSink(self._container(destination.container), destination.prefix, gzip=destination.gzip)
        if destination.type == "queue":
            return QueueSink(name=destination.name, queue=self._queue(destination.queue), links=self.result_links)
        return WebhookSink(name=destination.name, url=destination.url, secrets=destination.secrets,
                           sender=self.sender, inline=target.inline, clock=self.clock, links=self.result_links,
                           max_bytes=self.settings.webhook_max_bytes)

    def _container(self, name: str) -> ContainerClient:
        """One client per container for the process: building one builds a whole SDK pipeline."""
        client = self._containers.get(name)
        return client if client is not None else self._containers.setdefault(
            name, self.blob_service.get_container_client(name))

    def _queue(self, name: str) -> QueueClient:
        client = self._queues.get(name)
        return client if client is not None else self._queues.setdefault(
            name, self.queue_service.get_queue_client(name))

    @functools.cached_property
    def result_links(self) -> ResultLinks:
        """Link blobs for results too big for a webhook or a queue; a delegation key is fetched at the first link."""
        signer = signer_for(self.settings.storage, self.blob_service, self.clock)
        return ResultLinks(self.blob_service.get_container_client(self.settings.results_container), signer,
                           self.settings.link_lifetime_seconds, self.clock)

    def render_template(self, name: str, parameters: dict[str, Any]) -> str:
        return render(get_template(self.templates, name), parameters)

    def requeue(self, message: str, delay_seconds: int) -> None:
        self.hunt_queue.send_message(message, visibility_timeout=max(0, min(delay_seconds, MAX_REQUEUE_VISIBILITY)))

    def handle(self, raw: bytes, *, message_id: str, dequeue_count: int | None = None) -> Outcome:
        return self.processor.process(MessageInfo(raw, message_id, dequeue_count))

    def handle_poison(self, raw: bytes, *, message_id: str, dequeue_count: int | None = None) -> Outcome:
        return self.processor.process_poison(MessageInfo(raw, message_id, dequeue_count))


class QuotaGates:
    """One QuotaGate per API, over one table (created once per process)."""

    def __init__(self, table: TableClient, settings: Settings, *, clock: Callable[[], datetime],
                 rand: Callable[[], float]) -> None:
        self._table = table
        self._clock = clock
        self._windows = [Window(seconds=seconds, limit=calls) for calls, seconds in settings.quota_windows]
        self._tenant = re.sub(r"[^A-Za-z0-9-]", "-", settings.tenant_id or "tenant")
        self._gates: dict[str, QuotaGate] = {}
        self._rand = rand

    def ensure_table(self) -> None:
        try:
            self._table.create_table()
        except ResourceExistsError:
            pass
        except HttpResponseError as error:
            logger.warning("could not create the quota gate table (%s)", error.status_code)

    def _gate(self, api: str) -> QuotaGate:
        if api not in self._gates:
            self._gates[api] = QuotaGate(self._table, key=f"{api}-{self._tenant}", windows=self._windows,
                                         clock=self._clock, rand=self._rand)
        return self._gates[api]

    def admit(self, api: str) -> Admit | Wait:
        return self._gate(api).admit()

    def throttled(self, api: str, seconds: float) -> None:
        self._gate(api).pause_until(self._clock() + timedelta(seconds=seconds))


def _table_service(settings: Settings, session: requests.Session) -> TableServiceClient:
    storage = settings.storage
    if storage.connection_string:
        return TableServiceClient.from_connection_string(storage.connection_string, session=session,
                                                         session_owner=False)
    assert storage.table_url
    return TableServiceClient(storage.table_url, credential=storage_credential(storage), session=session,
                              session_owner=False)


def _storage_clients(settings: Settings, session: requests.Session) -> tuple[QueueServiceClient, BlobServiceClient]:
    """Both over the process's pooled session (the SDKs would otherwise open one session per client)."""
    storage = settings.storage
    shared: dict[str, Any] = {"session": session, "session_owner": False}
    if storage.connection_string:
        return (QueueServiceClient.from_connection_string(storage.connection_string, **shared),
                BlobServiceClient.from_connection_string(storage.connection_string, **shared))
    credential: Any = storage_credential(storage)
    assert storage.queue_url and storage.blob_url
    return (QueueServiceClient(storage.queue_url, credential=credential, **shared),
            BlobServiceClient(storage.blob_url, credential=credential, **shared))
