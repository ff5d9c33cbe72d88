"""A destination's circuit breaker, pure: may a delivery call the destination now, and what the shared state
becomes after it answered. The state lives in one table entity per destination (shared.adapters.breaker_table),
shared by every instance.

    closed    deliveries call the destination. A failure (the destination answered "not now": 5xx, 429, a timeout)
              counts; `failures` consecutive ones within `window` open the circuit. A success clears the count.
    open      no call: the delivery is answered "not now" at once, so its result is kept and a delivery-only copy
              waits (shared.delivery.pending): the hunt is never run again and no quota is spent. After `cool_off`
              one delivery probes.
    probing   one instance's delivery is the probe (claimed by a conditional write); the others hold. The probe
              delivered: closed. It failed: open for another cool-off.
    gone      the destination answered 410 Gone: open until an operator closes it (`python -m shared breaker
              close NAME`); no probe.

State fields: state, failures, first_failure_at, opened_at, open_until, probe_until, reason. Times are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

State = Literal["closed", "open", "probing", "gone"]
PROBE_SECONDS = 120.0   # a probe that never reports back (its instance died) frees the circuit after this long


@dataclass(frozen=True)
class BreakerPolicy:
    failures: int
    window_seconds: float
    cool_off_seconds: float


@dataclass(frozen=True)
class Send:
    """Call the destination."""


@dataclass(frozen=True)
class Probe:
    """Call the destination as the circuit's probe, once `claimed(state)` is written."""


@dataclass(frozen=True)
class Hold:
    """Do not call: the circuit is open (`seconds` until it may probe; None: until an operator closes it)."""

    seconds: float | None
    reason: str


Verdict = Send | Probe | Hold


def state_of(entity: Mapping[str, Any]) -> State:
    value = entity.get("state", "closed")
    return value if value in ("closed", "open", "probing", "gone") else "closed"


def decide(entity: Mapping[str, Any], now: datetime) -> Verdict:
    state = state_of(entity)
    if state == "closed":
        return Send()
    reason = str(entity.get("reason") or "the destination failed")
    if state == "gone":
        return Hold(None, f"the circuit is open until an operator closes it: {reason}")
    until = entity.get("probe_until") if state == "probing" else entity.get("open_until")
    if isinstance(until, datetime) and until > now:
        return Hold((until - now).total_seconds(), f"the circuit is open: {reason}")
    return Probe()


def claimed(entity: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The state while this instance's probe runs."""
    return {**entity, "state": "probing", "probe_until": now + timedelta(seconds=PROBE_SECONDS)}


def after_success(entity: Mapping[str, Any]) -> dict[str, Any] | None:
    """Closed and cleared; None when it was closed and clear already (no write needed), or gone: a delivery that
    began before the 410 says nothing of the endpoint now, and only an operator closes it."""
    if state_of(entity) == "gone" or (state_of(entity) == "closed" and not entity.get("failures")):
        return None
    return closed()


def closed() -> dict[str, Any]:
    return {"state": "closed", "failures": 0, "first_failure_at": None, "opened_at": None, "open_until": None,
            "probe_until": None, "reason": None}


def after_failure(entity: Mapping[str, Any], now: datetime, policy: BreakerPolicy, reason: str) -> dict[str, Any]:
    """One more consecutive failure: counted while closed (a count older than the window starts again), and the
    circuit opens at the policy's count; a failed probe opens it for another cool-off."""
    state = state_of(entity)
    if state == "gone":
        return dict(entity)
    if state in ("open", "probing"):
        return _opened(entity, now, policy, reason)
    first = entity.get("first_failure_at")
    failures = int(entity.get("failures") or 0)
    if not isinstance(first, datetime) or (now - first).total_seconds() > policy.window_seconds:
        first, failures = now, 0
    failures += 1
    counted = {**entity, "state": "closed", "failures": failures, "first_failure_at": first, "reason": reason}
    return _opened(counted, now, policy, reason) if failures >= policy.failures else counted


def after_gone(entity: Mapping[str, Any], now: datetime, reason: str) -> dict[str, Any]:
    return {**entity, "state": "gone", "opened_at": now, "open_until": None, "probe_until": None, "reason": reason}


def _opened(entity: Mapping[str, Any], now: datetime, policy: BreakerPolicy, reason: str) -> dict[str, Any]:
    return {**entity, "state": "open", "opened_at": now, "probe_until": None, "reason": reason,
            "open_until": now + timedelta(seconds=policy.cool_off_seconds)}
