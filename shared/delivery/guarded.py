"""A message sink behind its destination's circuit breaker (shared.core.breaker, shared.adapters.breaker_table).

While the circuit is open, `send` answers NotNow(held=True) without calling the destination: the processor then
keeps the body and a delivery-only copy waits for the circuit's probe time, spending no attempt
(shared.core.retry_policy), never running the hunt again. Each answer of the destination is told to the breaker:
Delivered closes the circuit, NotNow counts a failure, Refused 410 opens it until an operator closes it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from shared.core.breaker import Hold, Probe, Verdict
from shared.core.hunt_request import HuntRequest
from shared.core.rows import RowStream
from shared.delivery.base import Delivered, MessageSink, NotNow, PreparedBody, Refused, SendResult


class Breakers(Protocol):
    """shared.adapters.breaker_table.Breakers"""

    def verdict(self, key: str) -> Verdict: ...
    def delivered(self, key: str) -> None: ...
    def failed(self, key: str, reason: str) -> None: ...
    def gone(self, key: str, reason: str) -> None: ...


class GuardedSink:
    """A message sink (shared.delivery.base)."""

    def __init__(self, inner: MessageSink, key: str, breakers: Breakers, cool_off_seconds: float) -> None:
        self._inner = inner
        self._key = key
        self._breakers = breakers
        self._cool_off = cool_off_seconds

    @property
    def location(self) -> str:
        return self._inner.location

    def prepare_result(self, request: HuntRequest, stream: RowStream,
                       clock: Callable[[], datetime]) -> PreparedBody:
        return self._inner.prepare_result(request, stream, clock)

    def prepare_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> bytes:
        return self._inner.prepare_failure(job_id, failed_envelope)

    def renewed(self, body: bytes) -> bytes:
        return self._inner.renewed(body)

    def send(self, job_id: str, body: bytes) -> SendResult:
        verdict = self._breakers.verdict(self._key)
        if isinstance(verdict, Hold):
            return NotNow(f"destination {self._key}: {verdict.reason}",
                          verdict.seconds if verdict.seconds is not None else self._cool_off, held=True)
        sent = self._inner.send(job_id, body)
        if isinstance(sent, Delivered):
            self._breakers.delivered(self._key)
        elif isinstance(sent, NotNow):
            self._breakers.failed(self._key, sent.reason)
        elif isinstance(sent, Refused) and sent.gone:
            self._breakers.gone(self._key, sent.reason)
        elif isinstance(sent, Refused) and isinstance(verdict, Probe):
            self._breakers.failed(self._key, sent.reason)   # the probe found the destination still refusing
        return sent
