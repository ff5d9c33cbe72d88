"""Destinations as a registry: a new type is one dataclass with `parse` and `build`, its sink, and one registry
entry. This toy type is a message sink that answers "not now" once: over the real stack it gets configured from
HUNT_DESTINATIONS, its storage created, and a delivery-only retry, with no other code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import pytest

from shared.app.config import load_settings
from shared.app.relay import Relay
from shared.core.errors import SettingsError
from shared.core.hunt_request import HuntRequest
from shared.core.rows import RowStream
from shared.core.strict_json import dumps
from shared.delivery.base import Delivered, DeliveryParts, NotNow, PreparedBody, SendResult
from shared.delivery.registry import DESTINATION_TYPES
from tests.relay.conftest import RelayStack, drain


class MemorySink:
    """Keeps what it is sent; answers NotNow to the first `refuse` sends."""

    sent: ClassVar[list[tuple[str, bytes]]] = []

    def __init__(self, name: str, refuse: int) -> None:
        self._name = name
        self._refuse = refuse

    @property
    def location(self) -> str:
        return f"memory:{self._name}"

    def prepare_result(self, request: HuntRequest, stream: RowStream,
                       clock: Callable[[], datetime]) -> PreparedBody:
        rows = list(stream.rows())
        return PreparedBody(dumps({"id": request.id, "rows": rows}), None)

    def prepare_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> bytes:
        return dumps(failed_envelope)

    def send(self, job_id: str, body: bytes) -> SendResult:
        MemorySink.sent.append((job_id, body))
        if sum(1 for sent_id, _ in MemorySink.sent if sent_id == job_id) <= self._refuse:
            return NotNow("the memory is full", retry_after=0.0)
        return Delivered(self.location)

    def renewed(self, body: bytes) -> bytes:
        return body


@dataclass(frozen=True)
class MemoryDestination:
    name: str
    refuse: int
    type: str = "memory"
    queues: tuple[str, ...] = ()
    containers: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any], setting: Callable[[str], str | None],
              problems: list[str]) -> MemoryDestination:
        refuse = spec.get("refuse", 0)
        if not isinstance(refuse, int):
            problems.append(f"HUNT_DESTINATIONS[{name!r}]: 'refuse' must be a whole number")
            refuse = 0
        return cls(name, refuse, containers=(str(spec.get("scratch", "memory-scratch")),))

    def build(self, parts: DeliveryParts, *, inline: bool, scope: str = "") -> MemorySink:
        return MemorySink(self.name, self.refuse)


TYPES = {**DESTINATION_TYPES, "memory": MemoryDestination}


def test_a_registered_toy_type_is_configured_built_and_retried_as_a_delivery_only(relay_stack: RelayStack):
    scratch = "scratch-" + uuid.uuid4().hex[:8]
    env = relay_stack.env(HUNT_DESTINATIONS=json.dumps({"mem": {"type": "memory", "refuse": 1, "scratch": scratch}}),
                          HUNT_DEFAULT_DESTINATION="mem")
    relay = Relay(load_settings(env, TYPES))
    relay.ensure_resources()
    assert relay.blob_service.get_container_client(scratch).exists()   # its storage, created like the others
    job = "toy-" + uuid.uuid4().hex[:8]
    MemorySink.sent.clear()
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": "DeviceInfo | take 2"}))
    outcomes = drain(relay).outcomes
    assert [(o.cause, o.location) for o in outcomes] == [("delivery_retry", None), ("delivered", "memory:mem")]
    first, second = MemorySink.sent
    assert first == second and json.loads(first[1])["id"] == job
    assert relay_stack.sandbox.counters.calls_to("mde") == 1   # the query ran once


def test_a_toy_types_own_problems_are_reported_with_the_other_settings(relay_stack: RelayStack):
    env = relay_stack.env(HUNT_DESTINATIONS=json.dumps({"mem": {"type": "memory", "refuse": "x"}}),
                          HUNT_QUOTA_GATE="flase")
    with pytest.raises(SettingsError) as refused:
        load_settings(env, TYPES)
    assert refused.value.problems == ["HUNT_DESTINATIONS['mem']: 'refuse' must be a whole number",
                                      "HUNT_QUOTA_GATE='flase' is not a boolean: use true or false (also 1/0, "
                                      "yes/no, on/off)"]
