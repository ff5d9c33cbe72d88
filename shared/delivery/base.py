"""What a destination is to the relay: a configuration parsed from HUNT_DESTINATIONS, and the sink it builds.

    a destination type     a frozen dataclass in its sink's module, with
                               parse(name, spec, setting, problems) -> the dataclass (classmethod)
                               build(parts, inline=...) -> its sink
                               queues, containers: the storage it needs created
                           registered by one line in shared.delivery.registry

Two kinds of sink:

    MessageSink   render, then send (webhook, queue): `prepare_result` and `prepare_failure` make the exact bytes
                  once (`prepare_result` raises DeliveryRefused for a result too big for the destination when no
                  link to it can be signed, StreamBroken when the rows break off); `send` sends them and
                  answers Delivered, NotNow(retry_after) or Refused(reason). A body
                  answered NotNow is kept (shared.delivery.pending) and sent again alone: a message sink gets
                  delivery-only retries without any code of its own.
    StreamSink    write while the rows stream (blob): `deliver_result` and `deliver_failure` answer Delivered,
                  or raise StreamBroken or a storage error (both transient: the hunt runs again). Writes are
                  create-only on the job id, so `already_delivered` can answer a redelivered message.

A sink's answers are values; storage errors (azure.core.exceptions.AzureError) are the only exceptions that
cross this layer, and the host retries the message on them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from shared.adapters.outbound import SafeSender
from shared.core.hunt_request import HuntRequest
from shared.core.result_formats import ResultSummary
from shared.core.rows import RowStream
from shared.core.settings import DestinationConfig, Settings
from shared.delivery.links import ResultLinks


@dataclass(frozen=True)
class Delivered:
    location: str
    summary: ResultSummary | None = None
    bytes: int | None = None   # what the destination stored, when the sink counts it

    @property
    def rows(self) -> int | None:
        return self.summary.row_count if self.summary else None


@dataclass(frozen=True)
class NotNow:
    """The destination did not take it now (a webhook's 5xx or 429, a queue that failed): worth trying again."""

    reason: str
    retry_after: float | None = None
    status: int | None = None   # the destination's HTTP status, when it answered one
    held: bool = False          # not called at all: its circuit breaker is open (shared.core.breaker)


@dataclass(frozen=True)
class Refused:
    """The destination will never take it as configured (410 Gone, another 4xx, a missing queue, a refused URL)."""

    reason: str
    status: int | None = None

    @property
    def gone(self) -> bool:
        """The destination said it no longer exists (410): its circuit stays open until an operator closes it."""
        return self.status == 410


SendResult = Delivered | NotNow | Refused


@dataclass(frozen=True)
class PreparedBody:
    """What a message sink is about to send: the exact bytes, and what they hold."""

    body: bytes
    summary: ResultSummary | None


@runtime_checkable
class MessageSink(Protocol):
    @property
    def location(self) -> str: ...
    def prepare_result(self, request: HuntRequest, stream: RowStream,
                       clock: Callable[[], datetime]) -> PreparedBody: ...
    def prepare_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> bytes: ...
    def send(self, job_id: str, body: bytes) -> SendResult: ...
    def renewed(self, body: bytes) -> bytes: ...


@runtime_checkable
class StreamSink(Protocol):
    def already_delivered(self, request: HuntRequest) -> bool: ...
    def deliver_result(self, request: HuntRequest, stream: RowStream,
                       clock: Callable[[], datetime]) -> Delivered: ...
    def deliver_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> Delivered: ...


Sink = MessageSink | StreamSink


class DeliveryParts(Protocol):
    """The relay's process-wide parts a destination builds its sink from (shared.app.relay.Relay has them)."""

    settings: Settings
    sender: SafeSender
    clock: Callable[[], datetime]

    @property
    def result_links(self) -> ResultLinks: ...
    def container(self, name: str) -> ContainerClient: ...
    def queue(self, name: str) -> QueueClient: ...


@runtime_checkable
class Destination(DestinationConfig, Protocol):
    """A destination type's dataclass (see the module docstring)."""

    def build(self, parts: DeliveryParts, *, inline: bool, scope: str = "") -> Sink:
        """The sink for one hunt; `scope` (a tenant's `tenants/<name>/`, shared.core.tenants) prefixes every blob
        it names (links and kept bodies are scoped by the request's tenant)."""
        ...


class DestinationType(Protocol):
    def parse(self, name: str, spec: Mapping[str, Any], setting: Callable[[str], str | None],
              problems: list[str]) -> Destination: ...
