"""The circuit breaker's decisions (shared.core.breaker), pure: counting within the window, opening, the probe,
410 until an operator closes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.core import breaker
from shared.core.breaker import BreakerPolicy, Hold, Probe, Send

POLICY = BreakerPolicy(failures=3, window_seconds=60, cool_off_seconds=30)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def fail(state, seconds: float, times: int = 1):
    for _ in range(times):
        state = breaker.after_failure(state, T0 + timedelta(seconds=seconds), POLICY, "webhook hook answered 503")
    return state


def test_consecutive_failures_within_the_window_open_the_circuit_for_the_cool_off():
    state = fail({}, 0, 2)
    assert breaker.decide(state, T0) == Send() and state["failures"] == 2
    state = fail(state, 10)
    assert state["state"] == "open" and state["open_until"] == T0 + timedelta(seconds=40)
    held = breaker.decide(state, T0 + timedelta(seconds=20))
    assert isinstance(held, Hold) and held.seconds == 20 and "503" in held.reason
    assert breaker.decide(state, T0 + timedelta(seconds=40)) == Probe()


def test_failures_spread_wider_than_the_window_start_counting_again():
    state = fail(fail({}, 0, 2), 61)
    assert state["state"] == "closed" and state["failures"] == 1


def test_a_success_clears_the_count_and_costs_nothing_when_already_clear():
    assert breaker.after_success({}) is None
    assert breaker.after_success({"state": "closed", "failures": 0}) is None
    assert breaker.after_success(fail({}, 0, 2)) == breaker.closed()


def test_the_probe_is_claimed_then_closes_or_reopens():
    opened = fail({}, 0, 3)
    probing = breaker.claimed(opened, T0 + timedelta(seconds=31))
    assert isinstance(breaker.decide(probing, T0 + timedelta(seconds=32)), Hold)   # others hold while it runs
    assert breaker.decide(probing, T0 + timedelta(seconds=31 + breaker.PROBE_SECONDS)) == Probe()   # it died
    reopened = fail(probing, 33)
    assert reopened["state"] == "open" and reopened["open_until"] == T0 + timedelta(seconds=63)
    assert breaker.after_success(probing) == breaker.closed()


def test_410_holds_until_an_operator_closes_it():
    gone = breaker.after_gone({}, T0, "webhook hook answered 410 Gone")
    held = breaker.decide(gone, T0 + timedelta(days=30))
    assert isinstance(held, Hold) and held.seconds is None and "operator" in held.reason
    assert fail(gone, 5)["state"] == "gone"   # failures do not turn it into a probing circuit
    assert breaker.after_success(gone) is None   # nor a late success of a delivery that began before the 410
    assert breaker.decide(breaker.closed(), T0) == Send()
