"""Per-tenant quotas: calls per window and a CPU-time budget per window, and the 429 that enforces them.

The accounting rules are in `sandbox.knobs`' docstring. `QuotaBook` keeps the counts (the clock is passed in);
`throttle_reply` renders a refusal in the form and wording the knobs choose, each one seen from the real service
(reference/defender-api.md):

    calls          API calls quota exceeded! maximum allowed 45 per 00:01:00
    calls_for_key  API calls quota exceeded! Maximum allowed 45 per 00:01:00 for the key
                   Destination+TenantID+AppID. You can send requests again in 8 seconds.
    cpu            You have exceeded processing resources allocated to this tenant. You can run queries again
                   in <duration>.   (duration as HH:MM:SS, "N seconds", "N minutes" or ISO 8601 "PTNS")
    graph          {"error": {"code": "TooManyRequests", "message": "Too many requests.", "innerError": {...}}}
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sandbox.knobs import QuotaKnobs


@dataclass(frozen=True)
class Throttle:
    kind: Literal["calls", "cpu"]
    limit: float                 # calls per window, or CPU seconds per window
    window_seconds: float
    seconds_to_reset: float      # until the window boundary (> 0)

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.seconds_to_reset - 1e-9))


def _window(now: float, seconds: float) -> tuple[int, float]:
    """The epoch-aligned window index and the seconds left in it."""
    index = math.floor(now / seconds)
    return index, (index + 1) * seconds - now


class QuotaBook:
    """Calls and CPU seconds used per tenant in the current windows. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, tuple[int, int]] = {}        # tenant -> (window index, calls)
        self._cpu: dict[str, tuple[int, float]] = {}        # tenant -> (window index, seconds)

    def admit(self, tenant: str, now: float, knobs: QuotaKnobs) -> Throttle | None:
        """Counts the call and returns None, or returns the Throttle and counts nothing."""
        with self._lock:
            cpu_index, cpu_left = _window(now, knobs.cpu_window_seconds)
            index, used = self._cpu.get(tenant, (cpu_index, 0.0))
            if index == cpu_index and used >= knobs.cpu_budget_seconds:
                return Throttle("cpu", knobs.cpu_budget_seconds, knobs.cpu_window_seconds, cpu_left)
            call_index, call_left = _window(now, knobs.window_seconds)
            index, calls = self._calls.get(tenant, (call_index, 0))
            if index != call_index:
                calls = 0
            if calls >= knobs.calls_per_window:
                return Throttle("calls", knobs.calls_per_window, knobs.window_seconds, call_left)
            self._calls[tenant] = (call_index, calls + 1)
            return None

    def charge_cpu(self, tenant: str, seconds: float, now: float, knobs: QuotaKnobs) -> None:
        with self._lock:
            cpu_index, _ = _window(now, knobs.cpu_window_seconds)
            index, used = self._cpu.get(tenant, (cpu_index, 0.0))
            if index != cpu_index:
                used = 0.0
            self._cpu[tenant] = (cpu_index, used + seconds)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
            self._cpu.clear()


def timespan_text(seconds: float) -> str:
    """A .NET TimeSpan as the service prints it: 00:01:00, 01:00:00, 1.00:00:00, 00:00:01.5000000."""
    ticks = round(seconds * 10_000_000)
    days, rest = divmod(ticks, 86_400 * 10_000_000)
    hours, rest = divmod(rest, 3_600 * 10_000_000)
    minutes, rest = divmod(rest, 60 * 10_000_000)
    whole, fraction = divmod(rest, 10_000_000)
    text = f"{hours:02d}:{minutes:02d}:{whole:02d}"
    if fraction:
        text += f".{fraction:07d}"
    return f"{days}.{text}" if days else text


def duration_text(seconds: int, form: str) -> str:
    """The CPU message's "you can run queries again in ..." duration, in one of the forms seen."""
    if form == "seconds":
        return f"{seconds} seconds"
    if form == "minutes":
        return f"{math.ceil(seconds / 60)} minutes"
    if form == "iso8601":
        return f"PT{seconds}S"
    return timespan_text(seconds)


def _count(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def throttle_message(throttle: Throttle, wording: str, duration_format: str) -> str:
    if throttle.kind == "cpu":
        return (
            "You have exceeded processing resources allocated to this tenant. You can run queries again in "
            f"{duration_text(throttle.retry_after, duration_format)}."
        )
    window = timespan_text(throttle.window_seconds)
    if wording == "calls_for_key":
        return (
            f"API calls quota exceeded! Maximum allowed {_count(throttle.limit)} per {window} for the key "
            f"Destination+TenantID+AppID. You can send requests again in {throttle.retry_after} seconds."
        )
    return f"API calls quota exceeded! maximum allowed {_count(throttle.limit)} per {window}"


def throttle_reply(
    throttle: Throttle, api: str, knobs: QuotaKnobs, target: str, now: float
) -> tuple[dict[str, str], bytes]:
    """The 429's headers and body for this throttle, API and set of knobs."""
    wording = knobs.throttle_body or ("graph" if api == "graph" else "calls")
    headers: dict[str, str] = {}
    if knobs.throttle_form in ("header_and_body", "header_only"):
        headers["Retry-After"] = str(throttle.retry_after)
    if knobs.throttle_form in ("header_only", "neither"):
        return headers, b""
    error: dict[str, Any]
    if wording == "graph":
        error = {
            "code": "TooManyRequests",
            "message": "Too many requests.",
            "innerError": {
                "date": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": target,
                "client-request-id": target,
            },
        }
    else:
        error = {"code": "429", "message": throttle_message(throttle, wording, knobs.cpu_duration_format),
                 "target": target}
    return headers, json.dumps({"error": error}).encode()
