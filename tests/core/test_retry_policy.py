"""The one retry decision (shared.core.retry_policy.decide), as tables in the style of tenacity's: each cause x
attempts and age near the limits x Retry-After x message size."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.core.hunt_request import MAX_QUEUE_MESSAGE_BYTES, HuntRequest, decode_hunt_request
from shared.core.relay_mark import RelayMark
from shared.core.retry_policy import (
    DestinationNotNow,
    GateWait,
    GiveUp,
    Limits,
    Requeue,
    Throttled,
    TransientFault,
    decide,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIMITS = Limits(max_attempts=5, max_age_seconds=3600.0)
MARK = RelayMark([b"r" * 32])


def hunt(attempt: int = 1, age: float = 0.0, query: str = "DeviceInfo | take 1") -> HuntRequest:
    body = {"id": "job-1", "query": query, "destination": "hook", "attempt": attempt,
            "first_enqueued_at": (NOW - timedelta(seconds=age)).isoformat()}
    body["relay_mark"] = MARK.sign(body)
    return decode_hunt_request(json.dumps(body), message_id="m", default_api="mde", now=NOW, mark=MARK)


def run(cause, request: HuntRequest, *, rand: float = 0.5, limits: Limits = LIMITS):
    return decide(cause, request, limits, now=NOW, rand=lambda: rand, encode=lambda r: r.to_message(MARK))


THROTTLED_30 = Throttled({"Retry-After": "30"}, "", "HTTP 429 from the mde API")
THROTTLED_SAYS_NOTHING = Throttled({}, '{"error": {"message": "Too many requests."}}', "HTTP 429 from the graph API")


@pytest.mark.parametrize(("cause", "rand", "delay", "source"), [
    (THROTTLED_30, 0.5, 30.0 + 0.5 * 2.0, "header"),                      # the server's 30 s, spread by up to 2 s
    (THROTTLED_30, 0.0, 30.0, "header"),                                  # never before the server said
    (Throttled({}, "You can send requests again in 8 seconds", "429"), 0.0, 8.0, "body"),
    (THROTTLED_SAYS_NOTHING, 0.5, 0.5 * 10.0 * 2 + 0.5 * 1.0, "backoff"),  # attempt 2: 10 s * 2, jittered, spread
    (TransientFault("HTTP 503"), 0.5, 0.5 * 2.0 * 2, "backoff"),           # attempt 2: 2 s * 2, full jitter
    (TransientFault("HTTP 503", retry_after=60.0), 0.5, 60.0, "header"),   # a longer Retry-After wins
    (TransientFault("HTTP 503", retry_after=0.1), 0.5, 2.0, "backoff"),    # a shorter one does not
    (GateWait(12.5, "the shared call budget for this window is spent"), 0.5, 12.5, "gate"),
    (DestinationNotNow("webhook hook answered 503", retry_after=7.0), 0.5, 7.0, "destination"),
    (DestinationNotNow("webhook hook answered 503"), 0.5, 2.0, "backoff"),
])
def test_each_cause_waits_what_its_rule_says(cause, rand, delay, source):
    decision = run(cause, hunt(attempt=2), rand=rand)
    assert isinstance(decision, Requeue)
    assert decision.delay == pytest.approx(delay) and decision.source == source


@pytest.mark.parametrize(("cause", "attempt", "pending", "last_error"), [
    (THROTTLED_30, 3, None, "HTTP 429 from the mde API"),
    (TransientFault("HTTP 503"), 3, None, "HTTP 503"),
    (GateWait(5.0, "paused by a 429"), 2, None, None),                    # the same attempt: no call was spent
    (DestinationNotNow("webhook hook answered 503"), 3, "pending/job-1.delivery.json", "webhook hook answered 503"),
])
def test_each_cause_makes_its_own_copy_and_the_copy_is_marked(cause, attempt, pending, last_error):
    decision = run(cause, hunt(attempt=2))
    assert isinstance(decision, Requeue)
    again = decode_hunt_request(decision.text, message_id="m2", default_api="mde", now=NOW, mark=MARK)
    assert (again.attempt, again.pending_delivery, again.last_error) == (attempt, pending, last_error)
    assert again.dropped == () and again.first_enqueued_at == NOW - timedelta(seconds=0)


@pytest.mark.parametrize(("cause", "attempt", "age", "outcome"), [
    (THROTTLED_30, 4, 0.0, Requeue),
    (THROTTLED_30, 5, 0.0, GiveUp),                                       # HUNT_MAX_ATTEMPTS reached
    (TransientFault("x"), 5, 0.0, GiveUp),
    (DestinationNotNow("x"), 5, 0.0, GiveUp),
    (GateWait(5.0, "x"), 5, 0.0, Requeue),                                # waiting for the gate spends no attempt
    (GateWait(5.0, "x"), 50, 0.0, Requeue),
    (THROTTLED_30, 1, 3600.0 - 40.0, Requeue),                            # 30 s + spread still fits the age
    (THROTTLED_30, 1, 3600.0 - 30.0, GiveUp),                             # it would run at the maximum age
    (GateWait(60.0, "x"), 1, 3600.0 - 59.0, GiveUp),
    (GateWait(60.0, "x"), 1, 3600.0 - 61.0, Requeue),
    (DestinationNotNow("x", retry_after=100.0), 1, 3600.0 - 100.0, GiveUp),
    (TransientFault("x", retry_after=10.0), 1, 3600.0 - 11.0, Requeue),
])
def test_the_attempt_and_age_limits_hold_for_every_cause(cause, attempt, age, outcome):
    assert isinstance(run(cause, hunt(attempt=attempt, age=age), rand=0.0), outcome)


def test_giving_up_says_how_many_attempts_over_how_long_and_the_last_error_and_the_hint():
    decision = decide(TransientFault("HTTP 503 from the mde API"), hunt(attempt=5, age=5400.0),
                      Limits(max_attempts=5, max_age_seconds=86400.0), now=NOW, rand=lambda: 0.0,
                      encode=lambda r: r.to_message(MARK), hint="the body is kept at x")
    assert isinstance(decision, GiveUp)
    assert decision.error.code == "GaveUp"
    assert decision.error.message == "gave up after 5 attempts over 90 min; last error: HTTP 503 from the mde API"
    assert decision.error.hint == "the body is kept at x"


@pytest.mark.parametrize(("retry_after", "delay"), [
    (10 * 86400.0, 7 * 86400.0 - 3600.0),     # one visibility cap, below the message's 7-day time-to-live
    (-5.0, 0.0),                              # never negative
])
def test_every_delay_is_capped_once(retry_after, delay):
    limits = Limits(max_attempts=5, max_age_seconds=30 * 86400.0)
    decision = run(DestinationNotNow("x", retry_after=retry_after), hunt(), limits=limits)
    assert isinstance(decision, Requeue) and decision.delay == delay


@pytest.mark.parametrize(("spare", "outcome"), [
    (1024, Requeue),   # 1 KiB spare: room for the relay's fields and mark
    (20, GiveUp),      # 20 bytes spare: its copy would pass the queue's 64 KiB
])
def test_a_copy_over_the_queues_limit_is_a_clear_failure_not_a_refused_send(spare, outcome):
    body = {"id": "job-1", "query": "DeviceInfo //" + "x" * 60_000, "context": {"pad": ""}}
    body["context"] = {"pad": "y" * (MAX_QUEUE_MESSAGE_BYTES - spare - len(json.dumps(body).encode()))}
    request = decode_hunt_request(json.dumps(body), message_id="m", default_api="mde", now=NOW, mark=MARK)
    decision = run(TransientFault("HTTP 503 " + "e" * 400), request)
    assert isinstance(decision, outcome)
    if isinstance(decision, GiveUp):
        assert decision.error.code == "MessageTooLarge" and "64 KiB" in (decision.error.hint or "")
    else:
        assert len(decision.text.encode()) <= MAX_QUEUE_MESSAGE_BYTES


def test_a_429s_pause_for_the_fleet_is_the_services_even_when_this_hunt_has_no_age_left():
    decision = run(THROTTLED_30, hunt(age=3600.0 - 5.0), rand=0.0)
    assert isinstance(decision, GiveUp) and decision.pause == 30.0
    requeued = run(THROTTLED_30, hunt(age=0.0), rand=0.0)
    assert isinstance(requeued, Requeue) and requeued.pause == requeued.delay == 30.0
    assert run(TransientFault("x"), hunt()).pause is None   # only a 429 pauses the fleet


def test_a_copy_whose_last_error_held_a_lone_surrogate_is_read_back():
    decision = run(TransientFault("HTTP 503 from the mde API: bad \udc00 text"), hunt())
    assert isinstance(decision, Requeue)
    again = decode_hunt_request(decision.text, message_id="m2", default_api="mde", now=NOW, mark=MARK)
    assert again.attempt == 2 and again.last_error == "HTTP 503 from the mde API: bad ? text"


def test_a_gate_wait_copy_keeps_its_attempt_and_counts_the_wait():
    first = run(GateWait(12.5, "the shared call budget for this window is spent"), hunt())
    assert isinstance(first, Requeue) and (first.copy.attempt, first.copy.gate_waits) == (1, 1)
    again = decode_hunt_request(first.text, message_id="m", default_api="mde", now=NOW, mark=MARK)
    second = run(GateWait(3.0, "paused by a 429"), again)
    assert isinstance(second, Requeue) and (second.copy.attempt, second.copy.gate_waits) == (1, 2)
