"""Queue results: the envelope as one message on a storage queue, or a claim check when it does not fit.

A queue message holds at most 64 KiB, and 48 KiB once base64-encoded by a consumer's SDK, so an envelope is sent
whole only up to MAX_MESSAGE_BYTES of UTF-8 JSON (plain text, as the relay's own queue accepts). A bigger result,
and any ndjson or csv result, goes to a link blob and the message is the claim check: the envelope with
`results_url` (shared.delivery.links). A claim check or a failure envelope still too big (a 60 KiB query) drops
its optional fields (query, context, ...) and names them in `omitted`.

    message sent                     delivered
    the queue does not exist         DeliveryRefused (a configuration error: create the queue)
    any other storage error          DeliveryRetryable

A queue cannot be asked whether a job was already delivered: consumers deduplicate on `id`. Like the webhook
sink, `deliver_result` is `prepare_result` then `send`, so that a message the queue did not take is kept and sent
again alone (shared.delivery.pending), without running the query again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.adapters.hunting_client import ResultStream
from shared.core.errors import DeliveryRefused, DeliveryRetryable
from shared.core.hunt_request import HuntRequest
from shared.core.result_formats import ResultSummary
from shared.delivery.links import ResultLinks, fit_envelope, link_envelope, render_or_link
from shared.delivery.pending import PreparedBody

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 48 * 1024


@dataclass(frozen=True)
class QueueDelivery:
    location: str
    summary: ResultSummary | None


class QueueSink:
    def __init__(self, *, name: str, queue: QueueClient, links: ResultLinks,
                 max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._name = name
        self._queue = queue
        self._links = links
        self._max_bytes = max_bytes

    @property
    def location(self) -> str:
        return f"queue:{self._name}"

    def already_delivered(self, request: HuntRequest) -> bool:
        return False

    def deliver_result(self, request: HuntRequest, stream: ResultStream,
                       clock: Callable[[], datetime]) -> QueueDelivery:
        prepared = self.prepare_result(request, stream, clock)
        self.send(request.id, prepared.body)
        return QueueDelivery(self.location, prepared.summary)

    def prepare_result(self, request: HuntRequest, stream: ResultStream,
                       clock: Callable[[], datetime]) -> PreparedBody:
        rendered = render_or_link(request, stream, clock, limit=self._max_bytes, links=self._links)
        if rendered.inline is not None:
            return PreparedBody(rendered.inline, rendered.summary)
        return PreparedBody(fit_envelope(link_envelope(rendered), self._max_bytes), rendered.summary)

    def deliver_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> QueueDelivery:
        self.send(job_id, self.prepare_failure(job_id, failed_envelope))
        return QueueDelivery(self.location, None)

    def prepare_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> bytes:
        return fit_envelope(failed_envelope, self._max_bytes)

    def renewed(self, body: bytes) -> bytes:
        """A kept body made ready to send again: a link in it is signed afresh."""
        return self._links.renewed(body)

    def send(self, job_id: str, body: bytes) -> None:
        try:
            self._queue.send_message(body.decode("utf-8"))
        except ResourceNotFoundError:
            raise DeliveryRefused(f"queue destination {self._name}: the queue {self._queue.queue_name} does not "
                                  "exist") from None
        except AzureError as error:
            raise DeliveryRetryable(f"queue destination {self._name}: {type(error).__name__}") from None
        logger.info("hunt %s: sent %s bytes to queue %s", job_id, len(body), self._queue.queue_name)
