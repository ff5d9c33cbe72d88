"""What the Functions entry points call: one Relay per worker process, built on first use from the app settings."""

from __future__ import annotations

import functools
import os

from shared.app.config import load_settings
from shared.app.relay import Relay
from shared.core.outcome import Outcome


@functools.cache
def relay() -> Relay:
    built = Relay(load_settings(os.environ))
    built.ensure_resources()
    return built


def handle_hunt_message(body: bytes, *, message_id: str | None, dequeue_count: int | None) -> Outcome:
    return relay().handle(body, message_id=message_id or "unknown", dequeue_count=dequeue_count)


def handle_poison_message(body: bytes, *, message_id: str | None, dequeue_count: int | None) -> Outcome:
    return relay().handle_poison(body, message_id=message_id or "unknown", dequeue_count=dequeue_count)
