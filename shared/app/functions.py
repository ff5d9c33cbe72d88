"""What the Functions entry points call: one Relay per worker process, built on first use from the app settings."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import azure.functions as func

from shared.app.relay import Relay, relay_from_environment
from shared.core.outcome import Outcome

if TYPE_CHECKING:
    from shared.app.http_api import HuntApi


@functools.cache
def relay() -> Relay:
    built = relay_from_environment(os.environ)
    built.ensure_resources()
    return built


def handle_hunt_message(body: bytes, *, message_id: str | None, dequeue_count: int | None) -> Outcome:
    return relay().handle(body, message_id=message_id or "unknown", dequeue_count=dequeue_count)


def handle_poison_message(body: bytes, *, message_id: str | None, dequeue_count: int | None) -> Outcome:
    return relay().handle_poison(body, message_id=message_id or "unknown", dequeue_count=dequeue_count)


@functools.cache
def http_api() -> HuntApi:
    from shared.app.http_api import HuntApi

    built = relay()
    # Function-level auth: the host checked the key. Anonymous: the relay's own keys or bearer token decide.
    return HuntApi(built, host_checked=built.settings.api_auth_level == "function")


def handle_http(req: func.HttpRequest) -> func.HttpResponse:
    """A Functions HTTP request through the front door's handlers, and back."""
    from shared.app.http_api import HttpRequest

    parts = urlsplit(req.url)
    response = http_api().handle(HttpRequest(
        req.method.upper(), parts.path, dict(req.params), dict(req.headers), req.get_body() or b"",
        base_url=f"{parts.scheme}://{parts.netloc}"))
    return func.HttpResponse(response.body, status_code=response.status, headers=response.headers)


def enqueue_due_slots() -> None:
    """The timer's minute: the scheduler's due slots onto the hunt queue."""
    relay().scheduler.run_once()
