"""Queue destinations: the envelope as one message on a storage queue, or a claim check when it does not fit.

    {"type": "queue", "queue": NAME}

A queue message holds at most 64 KiB, and 48 KiB once base64-encoded by a consumer's SDK, so an envelope is sent
whole only up to MAX_ENVELOPE_MESSAGE_BYTES of UTF-8 JSON (plain text, as the relay's own queue accepts). A
bigger result, and any ndjson or csv result, goes to a link blob and the message is the claim check: the envelope
with `results_url` (shared.delivery.links). A claim check or a failure envelope still too big (a 60 KiB query)
drops its optional fields (query, context, ...) and names them in `omitted`.

    message sent                     Delivered
    the queue does not exist         Refused (a configuration error: create the queue)
    any other storage error          NotNow

A queue cannot be asked whether a job was already delivered: consumers deduplicate on `id`. It is a message sink
(shared.delivery.base): a message the queue did not take is kept and sent again alone, without running the query
again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.core.hunt_request import HuntRequest
from shared.core.rows import RowStream
from shared.delivery.base import Delivered, DeliveryParts, NotNow, PreparedBody, Refused, SendResult
from shared.delivery.links import ResultLinks, fit_envelope, link_envelope, render_or_link

logger = logging.getLogger(__name__)

MAX_ENVELOPE_MESSAGE_BYTES = 48 * 1024   # 64 KiB once a consumer's SDK base64-encodes it
_QUEUE = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")   # with fullmatch: 3-63 lowercase, single hyphens


@dataclass(frozen=True)
class QueueDestination:
    name: str
    queue: str
    type: str = "queue"
    containers: tuple[str, ...] = ()

    @property
    def queues(self) -> tuple[str, ...]:
        return (self.queue,)

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any], setting: Callable[[str], str | None],
              problems: list[str]) -> QueueDestination:
        queue = str(spec.get("queue", ""))
        if not _QUEUE.fullmatch(queue):
            problems.append(f"HUNT_DESTINATIONS[{name!r}]: 'queue' must be a valid queue name (3-63 lowercase "
                            f"letters, digits, -), got {queue!r}")
        return cls(name, queue)

    def build(self, parts: DeliveryParts, *, inline: bool, scope: str = "") -> QueueSink:
        return QueueSink(name=self.name, queue=parts.queue(self.queue), links=parts.result_links)


class QueueSink:
    """A message sink (shared.delivery.base)."""

    def __init__(self, *, name: str, queue: QueueClient, links: ResultLinks,
                 max_bytes: int = MAX_ENVELOPE_MESSAGE_BYTES) -> None:
        self._name = name
        self._queue = queue
        self._links = links
        self._max_bytes = max_bytes

    @property
    def location(self) -> str:
        return f"queue:{self._name}"

    def prepare_result(self, request: HuntRequest, stream: RowStream,
                       clock: Callable[[], datetime]) -> PreparedBody:
        rendered = render_or_link(request, stream, clock, limit=self._max_bytes, links=self._links)
        if rendered.inline is not None:
            return PreparedBody(rendered.inline, rendered.summary)
        return PreparedBody(fit_envelope(link_envelope(rendered), self._max_bytes), rendered.summary)

    def prepare_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> bytes:
        return fit_envelope(failed_envelope, self._max_bytes)

    def renewed(self, body: bytes) -> bytes:
        """A kept body made ready to send again: a link in it is signed afresh."""
        return self._links.renewed(body)

    def send(self, job_id: str, body: bytes) -> SendResult:
        try:
            self._queue.send_message(body.decode("utf-8"))
        except ResourceNotFoundError:
            return Refused(f"queue destination {self._name}: the queue {self._queue.queue_name} does not exist")
        except AzureError as error:
            return NotNow(f"queue destination {self._name}: {type(error).__name__}")
        logger.info("hunt %s: sent %s bytes to queue %s", job_id, len(body), self._queue.queue_name)
        return Delivered(self.location)
