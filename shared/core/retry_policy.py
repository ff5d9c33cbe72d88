"""The one retry decision: for every reason a hunt cannot finish now, go back on the queue (after how long, as what
copy) or give up.

    decide(cause, request, limits, now=..., rand=..., encode=...) -> Requeue(delay, copy, text) | GiveUp(error)

    cause                  the copy                          the delay
    Throttled (a 429)      attempt + 1                       the service's hint (headers, then body), else a
                                                             throttle backoff; spread by up to 2 s (shared.core.delays)
    TransientFault         attempt + 1                       the transient backoff, or the Retry-After it carried if
                                                             longer
    GateWait               the same attempt, gate_waits + 1  what the quota gate said (no call was spent)
    SplitContinues         the same attempt (parts kept)     none: a split hunt that used this invocation's time
                                                             goes on from a copy (shared.app.split_hunts)
    DestinationNotNow      attempt + 1, delivery only        the destination's Retry-After, else the transient backoff
      held by its breaker  the same attempt, delivery only   the circuit's cool-off (no call was made:
                                                             shared.core.breaker)

Then, for every cause, the limits, in this order:
1. `max_attempts` (not for GateWait, SplitContinues or a held delivery: they spend no attempt), and
   `max_age_seconds`: a copy that would run at or after the hunt's maximum age is not made. GiveUp("GaveUp",
   "gave up after N attempts over T; last error: ...").
2. The visibility cap: a delay is at most `max_visibility_seconds` (below the queue message's 7-day time-to-live;
   the queue's own maximum visibility timeout is 7 days) and never negative. For a 429, `pause` is that delay
   before the hunt's own age shortens it: the quota gate pauses the whole fleet for what the service said, even
   when this hunt gives up.
3. The copy's size: a copy over the queue's 64 KiB limit (the relay's own fields and mark added) drops its
   `last_error` (HuntRequest.to_message does); one still over is GiveUp("MessageTooLarge").

Pure: the clock (`now`), the randomness (`rand`) and the copy's encoding (`encode`, which adds the relay's mark) are
passed in. Table tests: tests/core/test_retry_policy.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from shared.core.classify import ErrorInfo
from shared.core.delays import throttle_delay, transient_delay
from shared.core.hunt_request import MAX_QUEUE_MESSAGE_BYTES, HuntRequest

QUEUE_MAX_VISIBILITY_SECONDS = 7 * 24 * 3600   # Put Message's visibilitytimeout upper bound
MESSAGE_TTL_MARGIN_SECONDS = 3600.0   # a copy must become visible well before the message's 7-day time-to-live


@dataclass(frozen=True)
class Limits:
    max_attempts: int
    max_age_seconds: float
    max_visibility_seconds: float = QUEUE_MAX_VISIBILITY_SECONDS - MESSAGE_TTL_MARGIN_SECONDS
    max_message_bytes: int = MAX_QUEUE_MESSAGE_BYTES


@dataclass(frozen=True)
class Throttled:
    """The API answered 429; its headers and body may say when to come back."""

    headers: Mapping[str, str]
    body: str
    reason: str


@dataclass(frozen=True)
class TransientFault:
    """A fault worth trying again: a 5xx, a timeout, a reset, a broken stream, a token that could not be had."""

    reason: str
    retry_after: float | None = None


@dataclass(frozen=True)
class GateWait:
    """The fleet's quota gate said not now; no call was spent."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class DestinationNotNow:
    """The destination did not take the rendered body (a webhook's 5xx or 429, a queue that failed): it is kept, and
    the copy is a delivery-only retry."""

    reason: str
    retry_after: float | None = None
    held: bool = False   # the destination's circuit is open: it was not called


@dataclass(frozen=True)
class SplitContinues:
    """A split hunt used the time one invocation gives it; its finished parts are kept and a copy goes on."""

    reason: str


Cause = Throttled | TransientFault | GateWait | DestinationNotNow | SplitContinues


@dataclass(frozen=True)
class Requeue:
    delay: float
    copy: HuntRequest
    text: str                # the copy as the queue message, marked
    source: str = "backoff"  # what the delay came from: header, body, backoff, gate, destination
    pause: float | None = None   # Throttled: how long the API asked every caller to wait (for the quota gate)


@dataclass(frozen=True)
class GiveUp:
    error: ErrorInfo
    pause: float | None = None   # Throttled: the API's pause still reaches the quota gate when this hunt gives up


def age_seconds(request: HuntRequest, now: datetime) -> float:
    return (now - (request.first_enqueued_at or now)).total_seconds()


def decide(cause: Cause, request: HuntRequest, limits: Limits, *, now: datetime, rand: Callable[[], float],
           encode: Callable[[HuntRequest], str], hint: str | None = None) -> Requeue | GiveUp:
    """Requeue or GiveUp for `cause` (the module docstring's table); `hint` joins a GaveUp error."""
    age = age_seconds(request, now)
    remaining = max(0.0, limits.max_age_seconds - age)
    delay, source = _delay(cause, request, now=now, rand=rand, remaining=remaining)
    delay = max(0.0, min(delay, limits.max_visibility_seconds))
    # The fleet's pause is the service's word, whatever this hunt's own age allows it.
    pause = delay if isinstance(cause, Throttled) else None
    delay = min(delay, remaining) if isinstance(cause, Throttled) else delay
    spends_attempt = not isinstance(cause, GateWait | SplitContinues) and \
        not (isinstance(cause, DestinationNotNow) and cause.held)
    if (spends_attempt and request.attempt >= limits.max_attempts) or age + delay >= limits.max_age_seconds:
        return GiveUp(ErrorInfo("GaveUp", f"gave up after {request.attempt} attempts over {_duration(age)}; "
                                          f"last error: {cause.reason}", hint=hint), pause)
    if isinstance(cause, GateWait):
        copy = request.waited_at_gate()
    elif isinstance(cause, SplitContinues):
        copy = request
    elif isinstance(cause, DestinationNotNow):
        copy = request.delivery_only() if cause.held else request.delivery_only().next_attempt(cause.reason)
    else:
        copy = request.next_attempt(cause.reason)
    text = encode(copy)
    size = len(text.encode("utf-8"))
    if size > limits.max_message_bytes:
        return GiveUp(ErrorInfo(
            "MessageTooLarge", f"the hunt had to go back on the queue ({cause.reason}), but its copy with the relay's "
                               f"own fields is {size} bytes, over the queue's {limits.max_message_bytes}-byte limit",
            hint="keep hunt messages at least 1 KiB under 64 KiB (a shorter query or context)"), pause)
    return Requeue(delay, copy, text, source, pause)


def _delay(cause: Cause, request: HuntRequest, *, now: datetime, rand: Callable[[], float],
           remaining: float) -> tuple[float, str]:
    if isinstance(cause, Throttled):   # uncapped by the age here: decide caps the copy's delay, not the pause
        delay = throttle_delay(cause.headers, cause.body, attempt=request.attempt, now=now, rand=rand,
                               max_delay=math.inf)
        return delay.seconds, delay.source
    if isinstance(cause, GateWait):
        return cause.seconds, "gate"
    if isinstance(cause, SplitContinues):
        return 0.0, "split"
    if isinstance(cause, DestinationNotNow) and cause.retry_after is not None:
        return cause.retry_after, "destination"
    backoff = transient_delay(request.attempt, rand=rand, max_delay=remaining).seconds
    if isinstance(cause, TransientFault) and cause.retry_after is not None and cause.retry_after > backoff:
        return cause.retry_after, "header"
    return backoff, "backoff"


def visibility_seconds(delay: float) -> int:
    """Whole seconds for the queue, rounded up so that a copy never runs before the decision said."""
    return math.ceil(delay)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
