"""Per-tenant quotas: calls per window and running-time budgets per window, and the 429 that enforces them.

The accounting rules and the cost model are in `sandbox.knobs`' docstring. `running_time` is the cost model, pure;
`QuotaBook` keeps the counts and charges (the clock is passed in);
`throttle_reply` renders a refusal in the form and wording the knobs choose, each one seen from the real service
(reference/defender-api.md):

    calls          API calls quota exceeded! maximum allowed 45 per 00:01:00
    calls_for_key  API calls quota exceeded! Maximum allowed 45 per 00:01:00 for the key
                   Destination+TenantID+AppID. You can send requests again in 8 seconds.
    cpu            You have exceeded processing resources allocated to this tenant. You can run queries again
                   in <duration>.   (duration as HH:MM:SS, "N seconds", "N minutes" or ISO 8601 "PTNS")
    graph          {"error": {"code": "TooManyRequests", "message": "Too many requests.", "innerError": {...}}}
                   (for the running-time 429 the message is the cpu one, unless the knob asks for "graph")
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
    limit: float                 # calls per window, or running-time seconds per window
    window_seconds: float
    seconds_to_reset: float      # until the window boundary (> 0)

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.seconds_to_reset - 1e-9))


def _window(now: float, seconds: float) -> tuple[int, float]:
    """The epoch-aligned window index and the seconds left in it."""
    index = math.floor(now / seconds)
    return index, (index + 1) * seconds - now


def cpu_budgets(knobs: QuotaKnobs) -> list[tuple[float, float]]:
    """Every running-time budget of a quota: (budget seconds, window seconds)."""
    return [(knobs.cpu_budget_seconds, knobs.cpu_window_seconds),
            *((float(budget), float(window)) for budget, window in knobs.cpu_extra_windows)]


def fixed_charge(knobs: QuotaKnobs) -> float:
    """The part of a call's running time charged when it is admitted (none when the engine's time is measured)."""
    return knobs.cpu_seconds_per_call or 0.0


def running_time(knobs: QuotaKnobs, *, rows_scanned: int, rows_returned: int, measured: float) -> float:
    """The running time one call is charged, by the cost model (sandbox.knobs): the fixed part or the measured
    time, plus the rows scanned and returned at their rates."""
    fixed = measured if knobs.cpu_seconds_per_call is None else knobs.cpu_seconds_per_call
    return (fixed + knobs.cpu_seconds_per_1k_rows_scanned * rows_scanned / 1000
            + knobs.cpu_seconds_per_1k_rows_returned * rows_returned / 1000)


class QuotaBook:
    """Calls and running-time seconds used per tenant in the current windows. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, tuple[int, int]] = {}                 # tenant -> (window index, calls)
        self._cpu: dict[str, dict[float, tuple[int, float]]] = {}    # tenant -> window seconds -> (index, seconds)

    def admit(self, tenant: str, now: float, knobs: QuotaKnobs) -> Throttle | None:
        """Counts the call and returns None, or returns the Throttle and counts nothing. With several running-time
        budgets spent, the Throttle is the one that resets last: only then may the tenant run queries again."""
        with self._lock:
            spent = []
            charged = self._cpu.get(tenant, {})
            for budget, seconds in cpu_budgets(knobs):
                cpu_index, cpu_left = _window(now, seconds)
                index, used = charged.get(seconds, (cpu_index, 0.0))
                if index == cpu_index and used >= budget:
                    spent.append(Throttle("cpu", budget, seconds, cpu_left))
            if spent:
                return max(spent, key=lambda throttle: throttle.seconds_to_reset)
            call_index, call_left = _window(now, knobs.window_seconds)
            index, calls = self._calls.get(tenant, (call_index, 0))
            if index != call_index:
                calls = 0
            if calls >= knobs.calls_per_window:
                return Throttle("calls", knobs.calls_per_window, knobs.window_seconds, call_left)
            self._calls[tenant] = (call_index, calls + 1)
            return None

    def charge_cpu(self, tenant: str, seconds: float, now: float, knobs: QuotaKnobs) -> None:
        """Charge running time to every budget window of the tenant that holds `now`."""
        with self._lock:
            charged = self._cpu.setdefault(tenant, {})
            for _, window in cpu_budgets(knobs):
                cpu_index, _ = _window(now, window)
                index, used = charged.get(window, (cpu_index, 0.0))
                charged[window] = (cpu_index, (used if index == cpu_index else 0.0) + seconds)

    def cpu_used(self, tenant: str, now: float, window_seconds: float) -> float:
        """Running time charged to the tenant in the window of this length that holds `now`."""
        with self._lock:
            index, used = self._cpu.get(tenant, {}).get(float(window_seconds), (None, 0.0))
            return used if index == _window(now, window_seconds)[0] else 0.0

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
        generic = throttle.kind == "calls" or knobs.throttle_body == "graph"
        error = {
            "code": "TooManyRequests",
            "message": "Too many requests." if generic else throttle_message(throttle, wording,
                                                                             knobs.cpu_duration_format),
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
