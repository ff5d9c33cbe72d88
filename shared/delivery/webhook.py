"""Webhook results: the envelope POSTed as JSON, signed per Standard Webhooks, through the outbound guard.

`webhook-id` is derived from the job id, so a redelivered job carries the same id and the receiver can drop the
duplicate. Status handling follows the Standard Webhooks spec:

    2xx                        delivered
    410 Gone                   the endpoint is gone: DeliveryRefused (terminal)
    429, 502, 503, 504, 5xx    DeliveryRetryable, honouring Retry-After
    3xx                        a failure (redirects are never followed): DeliveryRefused
    other 4xx                  DeliveryRefused (the receiver will not take it)

Size: a JSON envelope up to `max_bytes` (HUNT_WEBHOOK_MAX_BYTES) is sent whole; a bigger one, and any ndjson or
csv result, is written to a link blob and the webhook receives the envelope with `results_url` instead of
`results` (shared.delivery.links). The body is buffered only up to `max_bytes`.

`deliver_result` is `prepare_result` (render, or link) then `send`; the processor calls the two itself so that a
body refused with "not now" (5xx, 429) can be kept and sent again alone (shared.delivery.pending). Every send
signs afresh (a new timestamp) under the same `webhook-id`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.adapters.hunting_client import ResultStream
from shared.core.delays import retry_after_from_headers
from shared.core.errors import DeliveryRefused, DeliveryRetryable
from shared.core.hunt_request import HuntRequest
from shared.core.result_formats import ResultSummary
from shared.core.strict_json import dumps
from shared.core.webhook_signing import parse_secret, signed_headers, webhook_id_for
from shared.delivery.links import ResultLinks, link_envelope, render_or_link
from shared.delivery.pending import PreparedBody

logger = logging.getLogger(__name__)


class SendResult(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


class Sender(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str], *, inline: bool) -> SendResult: ...


@dataclass(frozen=True)
class WebhookDelivery:
    location: str
    summary: ResultSummary | None


class WebhookSink:
    def __init__(self, *, name: str, url: str, secrets: tuple[str, ...], sender: Sender, inline: bool,
                 clock: Callable[[], datetime], links: ResultLinks, max_bytes: int) -> None:
        self._name = name
        self._links = links
        self._max_bytes = max_bytes
        self._url = url
        self._secrets = [parse_secret(s) for s in secrets]
        self._sender = sender
        self._inline = inline
        self._clock = clock

    @property
    def location(self) -> str:
        return f"webhook:{self._name}"

    def already_delivered(self, request: HuntRequest) -> bool:
        return False  # a webhook cannot be asked; receivers deduplicate on webhook-id

    def deliver_result(self, request: HuntRequest, stream: ResultStream,
                       clock: Callable[[], datetime]) -> WebhookDelivery:
        prepared = self.prepare_result(request, stream, clock)
        self.send(request.id, prepared.body)
        return WebhookDelivery(self.location, prepared.summary)

    def prepare_result(self, request: HuntRequest, stream: ResultStream,
                       clock: Callable[[], datetime]) -> PreparedBody:
        """The envelope to POST: whole when it fits `max_bytes`, else with `results_url` to a link blob."""
        rendered = render_or_link(request, stream, clock, limit=self._max_bytes, links=self._links)
        body = rendered.inline if rendered.inline is not None else dumps(link_envelope(rendered))
        return PreparedBody(body, rendered.summary)

    def deliver_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> WebhookDelivery:
        self.send(job_id, self.prepare_failure(job_id, failed_envelope))
        return WebhookDelivery(self.location, None)

    def prepare_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> bytes:
        return dumps(failed_envelope)

    def renewed(self, body: bytes) -> bytes:
        """A kept body made ready to send again: a link in it is signed afresh."""
        return self._links.renewed(body)

    def send(self, job_id: str, body: bytes) -> None:
        """POSTs `body` once, signed now; returns on 2xx, else raises per the table in the module docstring."""
        headers = {"Content-Type": "application/json"}
        timestamp = int(self._clock().timestamp())
        if self._secrets:
            headers.update(signed_headers(self._secrets, webhook_id_for(job_id), timestamp, body))
        else:
            headers["webhook-id"] = webhook_id_for(job_id)
            headers["webhook-timestamp"] = str(timestamp)
        result = self._sender.post(self._url, body, headers, inline=self._inline)
        status = result.status
        logger.info("hunt %s: webhook %s answered %s", job_id, self._name, status)
        if 200 <= status < 300:
            return
        if status == 410:
            raise DeliveryRefused(f"webhook {self._name} answered 410 Gone: the endpoint no longer exists")
        if status == 429 or status >= 500:
            raise DeliveryRetryable(f"webhook {self._name} answered {status}",
                                    retry_after_from_headers(result.headers, self._clock()))
        if 300 <= status < 400:
            raise DeliveryRefused(f"webhook {self._name} answered a redirect ({status}); redirects are not followed")
        raise DeliveryRefused(f"webhook {self._name} refused the delivery with HTTP {status}")
