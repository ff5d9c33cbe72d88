"""Faults injected on demand: 5xx statuses, added latency, a TCP reset or a stall in the middle of the body, and
the service's own 400 size errors.

`FaultPlan.draw(endpoint)` decides, for one call, which faults apply, consuming the "next N" counters in the
knobs (so `sb.knobs.faults.status_next` reads as the number still to come) and a seeded RNG for rates.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

from sandbox.knobs import FaultKnobs

HUNTING_ENDPOINTS = ("mde", "m365d", "graph")

_STATUS_CODES = {500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}
_STATUS_MESSAGES = {
    500: "An unexpected error occurred while processing the request.",
    502: "Bad gateway: the upstream service returned an invalid response.",
    503: "The service is temporarily unavailable. Please try again later.",
    504: "The gateway timed out waiting for the query to complete.",
}

SIZE_ERROR_MESSAGES = {
    "result_size": (
        "Query execution has exceeded the allowed result size. Optimize your query by reducing the number of "
        "results or the columns projected, and try again."
    ),
    "preempted": (
        "Query execution failed due to high resource consumption. The query execution was preempted. "
        "Optimize your query and try again."
    ),
}


@dataclass(frozen=True)
class BodyFault:
    kind: str                 # "reset" or "stall"
    stall_seconds: float = 0.0


@dataclass(frozen=True)
class CallFaults:
    latency_seconds: float = 0.0
    status: int | None = None          # a 5xx to answer instead of running the call
    size_error: str | None = None      # "result_size" or "preempted"
    body: BodyFault | None = None


def status_error(status: int, api: str) -> tuple[str, str]:
    """The error code and message for an injected 5xx (Graph says UnknownError for its 500)."""
    code = "UnknownError" if api == "graph" and status == 500 else _STATUS_CODES.get(status, "InternalServerError")
    return code, _STATUS_MESSAGES.get(status, _STATUS_MESSAGES[500])


class FaultPlan:
    """Draws each call's faults from the knobs. Thread-safe."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rng = random.Random(seed)

    def reseed(self) -> None:
        with self._lock:
            self._rng = random.Random(self._seed)

    @staticmethod
    def _applies(knobs: FaultKnobs, endpoint: str) -> bool:
        if knobs.endpoint is None:
            return endpoint in HUNTING_ENDPOINTS
        return knobs.endpoint == endpoint

    def draw(self, knobs: FaultKnobs, endpoint: str) -> CallFaults:
        """The faults for one call to `endpoint` (identity endpoints get only latency and status)."""
        if not self._applies(knobs, endpoint):
            return CallFaults()
        with self._lock:
            chosen: dict[str, Any] = {"latency_seconds": knobs.latency_seconds}
            if knobs.status_next > 0:
                knobs.status_next -= 1
                chosen["status"] = knobs.status
            elif knobs.status_rate > 0 and self._rng.random() < knobs.status_rate:
                chosen["status"] = knobs.status
            if endpoint in HUNTING_ENDPOINTS and "status" not in chosen:
                if knobs.size_error_next > 0:
                    knobs.size_error_next -= 1
                    chosen["size_error"] = knobs.size_error
                elif knobs.reset_next > 0:
                    knobs.reset_next -= 1
                    chosen["body"] = BodyFault("reset")
                elif knobs.stall_next > 0:
                    knobs.stall_next -= 1
                    chosen["body"] = BodyFault("stall", knobs.stall_seconds)
            return CallFaults(**chosen)
