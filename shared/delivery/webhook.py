"""Webhook destinations: the envelope POSTed as JSON, signed per Standard Webhooks, through the outbound guard.

    {"type": "webhook", "url": "https://..." | "url_setting": NAME, "secret_setting": NAME}

`webhook-id` is derived from the job id, so a redelivered job carries the same id and the receiver can drop the
duplicate. Every send signs afresh (a new timestamp) under the same `webhook-id`, with every secret of the
destination's setting (space-separated `whsec_` values: rotation); an inline URL from a message is signed with
HUNT_INLINE_WEBHOOK_SECRETS, and is unsigned without them. Answers, per the Standard Webhooks spec:

    2xx                        Delivered
    410 Gone                   Refused: the endpoint is gone
    429, 5xx                   NotNow, honouring Retry-After
    3xx                        Refused (redirects are never followed)
    other 4xx                  Refused: the receiver will not take it
    unreachable, timed out     NotNow; a URL or address the outbound policy refuses: Refused

Size: a JSON envelope up to `max_bytes` (HUNT_WEBHOOK_MAX_BYTES) is sent whole; a bigger one, and any ndjson or
csv result, is written to a link blob and the webhook receives the envelope with `results_url` instead of
`results` (shared.delivery.links). The body is buffered only up to `max_bytes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.adapters.outbound import SafeSender
from shared.core.delays import retry_after_from_headers
from shared.core.errors import DeliveryRefused, DeliveryRetryable
from shared.core.hunt_request import HuntRequest
from shared.core.rows import RowStream
from shared.core.strict_json import dumps
from shared.core.webhook_signing import parse_secret, parse_secret_list, signed_headers, webhook_id_for
from shared.delivery.base import Delivered, DeliveryParts, NotNow, PreparedBody, Refused, SendResult
from shared.delivery.links import ResultLinks, link_envelope, render_or_link

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookDestination:
    name: str
    url: str
    secret_setting: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)   # resolved whsec_ values, never logged
    type: str = "webhook"
    queues: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any], setting: Callable[[str], str | None],
              problems: list[str]) -> WebhookDestination:
        where = f"HUNT_DESTINATIONS[{name!r}]"
        url = str(spec.get("url") or (setting(str(spec["url_setting"])) if spec.get("url_setting") else "") or "")
        if not url.startswith(("https://", "http://")):
            problems.append(f"{where}: 'url' (or 'url_setting' naming a setting) must give an https URL")
        secret_setting = spec.get("secret_setting")
        secrets: tuple[str, ...] = ()
        if secret_setting:
            value = setting(str(secret_setting))
            if not value:
                problems.append(f"{where}: its signing secret setting {secret_setting} is not set")
            else:
                secrets = parse_secret_list(f"{where}: {secret_setting}", value, problems)
        return cls(name, url, str(secret_setting) if secret_setting else None, secrets)

    def build(self, parts: DeliveryParts, *, inline: bool, scope: str = "") -> WebhookSink:
        return WebhookSink(name=self.name, url=self.url, secrets=self.secrets, sender=parts.sender, inline=inline,
                           clock=parts.clock, links=parts.result_links, max_bytes=parts.settings.webhook_max_bytes)


class WebhookSink:
    """A message sink (shared.delivery.base)."""

    def __init__(self, *, name: str, url: str, secrets: tuple[str, ...], sender: SafeSender, inline: bool,
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

    def prepare_result(self, request: HuntRequest, stream: RowStream,
                       clock: Callable[[], datetime]) -> PreparedBody:
        """The envelope to POST: whole when it fits `max_bytes`, else with `results_url` to a link blob."""
        rendered = render_or_link(request, stream, clock, limit=self._max_bytes, links=self._links)
        body = rendered.inline if rendered.inline is not None else dumps(link_envelope(rendered))
        return PreparedBody(body, rendered.summary)

    def prepare_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> bytes:
        return dumps(failed_envelope)

    def renewed(self, body: bytes) -> bytes:
        """A kept body made ready to send again: a link in it is signed afresh."""
        return self._links.renewed(body)

    def send(self, job_id: str, body: bytes) -> SendResult:
        """POSTs `body` once, signed now; the answer per the table in the module docstring."""
        headers = {"Content-Type": "application/json"}
        timestamp = int(self._clock().timestamp())
        if self._secrets:
            headers.update(signed_headers(self._secrets, webhook_id_for(job_id), timestamp, body))
        else:
            headers["webhook-id"] = webhook_id_for(job_id)
            headers["webhook-timestamp"] = str(timestamp)
        try:
            result = self._sender.post(self._url, body, headers, inline=self._inline)
        except DeliveryRefused as refused:
            return Refused(str(refused))
        except DeliveryRetryable as failed:
            return NotNow(str(failed))
        status = result.status
        logger.info("hunt %s: webhook %s answered %s", job_id, self._name, status)
        if 200 <= status < 300:
            return Delivered(self.location)
        if status == 410:
            return Refused(f"webhook {self._name} answered 410 Gone: the endpoint no longer exists", status)
        if status == 429 or status >= 500:
            return NotNow(f"webhook {self._name} answered {status}",
                          retry_after_from_headers(result.headers, self._clock()), status)
        if 300 <= status < 400:
            return Refused(f"webhook {self._name} answered a redirect ({status}); redirects are not followed",
                           status)
        return Refused(f"webhook {self._name} refused the delivery with HTTP {status}", status)
