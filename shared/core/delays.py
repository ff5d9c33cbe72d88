"""How long a throttled (429) or transiently failed hunt waits before it may run again.

Pure: the clock (``now``) and the randomness (``rand``, a ``random.random``-like callable returning [0, 1))
are passed in; nothing here sleeps, reads the time or does I/O. A naive ``now`` is read as UTC. Only the first
64 KiB of a body are read, with patterns that stay linear on hostile text.

Order of trust for a 429 (the first that yields a number wins, ``Delay.source`` says which):

1. ``header``: ``retry-after-ms``, then ``x-ms-retry-after-ms`` (milliseconds), then ``Retry-After`` (seconds,
   integer or decimal, or an HTTP date, clamped at 0). Names are case-insensitive. A malformed value (negative,
   non-ASCII digits, garbage date, not finite) is ignored and the next source is asked.
2. ``body``: the JSON envelope's ``error.message`` (or the raw text when it is not that envelope):
   - an explicit statement, "... again in <duration>" ("You can send requests again in 8 seconds", "You can
     run queries again in 00:05:00"), where <duration> is ``[D.]HH:MM:SS``, ISO 8601 ``P[nD][T[nH][nM][nS]]``
     or ``N <unit>`` terms (ms, seconds, minutes, hours); several explicit statements: the longest;
   - else a quota window, "maximum allowed N per HH:MM:SS": wait for the next window boundary, windows being
     assumed aligned to the Unix epoch (delay = window - (now mod window)); several: the longest.
   Graph's generic "Too many requests." states nothing and falls through.
3. ``backoff``: capped exponential backoff with full jitter, ``rand() * min(cap, base * 2**(attempt-1))``.

Then a spreading jitter that only adds, ``rand() * min(2 s, 10% of the delay)``, so that hunts throttled
together do not all return at one instant, yet never before the server said and never much later (a backlog
must drain at the quota rate). Last, the cap ``max_delay`` (the message's remaining lifetime); a delay is never
negative. The cap is the only thing that can bring the delay below the server's value. The queue's own
visibility limit, and whether to requeue at all, are the retry policy's (shared.core.retry_policy).

Transient faults (5xx, timeouts, resets) use ``transient_delay``: the same backoff with shorter defaults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

from shared.core.classify import envelope_message

SPREAD_MAX_SECONDS = 2.0
SPREAD_FRACTION = 0.10
THROTTLE_BACKOFF_BASE = 10.0  # no hint at all: start near the scale of a one-minute quota window
THROTTLE_BACKOFF_CAP = 900.0  # the CPU quota's 15-minute cycle
TRANSIENT_BACKOFF_BASE = 2.0
TRANSIENT_BACKOFF_CAP = 300.0
_MAX_BODY_CHARS = 65_536  # a 429 body is small; never scan an arbitrarily large one

_MS_HEADERS = ("retry-after-ms", "x-ms-retry-after-ms")
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"  # ASCII digits only: no signs, exponents or unicode digits
_NUMBER_RE = re.compile(_NUMBER)
_CLOCK = r"(?:(?P<days>[0-9]+)\.)?(?P<hours>[0-9]{1,3}):(?P<minutes>[0-5][0-9]):(?P<seconds>[0-5][0-9](?:\.[0-9]+)?)"
_ISO = (  # days and time only: a bare "P1M" would be months, which no quota means
    rf"P(?:(?P<iso_d>{_NUMBER})D)?"
    rf"(?:T(?:(?P<iso_h>{_NUMBER})H)?(?:(?P<iso_m>{_NUMBER})M)?(?:(?P<iso_s>{_NUMBER})S)?)?"
)
_UNIT = r"(?:milliseconds?|msecs?|ms|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b"
# Separators as exclusive alternatives: "\s*(,|and)?\s*" would backtrack quadratically over a run of spaces.
_SEPARATOR = r"(?:\s*,\s*|\s+and\s+|\s*)"
_TERMS = rf"{_NUMBER}\s*{_UNIT}(?:{_SEPARATOR}{_NUMBER}\s*{_UNIT})*"
_DURATION = rf"(?:(?P<clock>{_CLOCK})|(?P<iso>{_ISO})|(?P<terms>{_TERMS}))"
_EXPLICIT_RE = re.compile(rf"\bagain\s+in\s+{_DURATION}", re.IGNORECASE)
_WINDOW_RE = re.compile(rf"\bmaximum\s+allowed\s+[0-9]+\s+per\s+{_DURATION}", re.IGNORECASE)
_TERM_RE = re.compile(rf"(?P<n>{_NUMBER})\s*(?P<unit>{_UNIT})", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "h": 3600.0, "m": 60.0, "s": 1.0}


@dataclass(frozen=True)
class Delay:
    """How long to keep a re-enqueued hunt invisible, and what the figure came from."""

    seconds: float
    source: Literal["header", "body", "backoff"]


def _utc(moment: datetime) -> datetime:
    # A naive datetime is taken as UTC rather than local time: HTTP dates and quota windows are UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) and value >= 0 else None


def _number(text: str) -> float | None:
    text = text.strip()
    return _finite(float(text)) if re.fullmatch(_NUMBER, text) else None


def _http_date_delay(text: str, now: datetime) -> float | None:
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, (_utc(moment) - _utc(now)).total_seconds())


def retry_after_from_headers(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait according to the response headers, or None when they say nothing usable."""
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in _MS_HEADERS:
        milliseconds = _number(lowered.get(name, ""))
        if milliseconds is not None:
            return milliseconds / 1000.0
    value = lowered.get("retry-after", "").strip()
    if not value:
        return None
    if _NUMBER_RE.fullmatch(value):
        return _number(value)
    return _http_date_delay(value, now)


def _duration_seconds(match: re.Match[str]) -> float | None:
    """Seconds in a _DURATION match, None when it holds no component (a bare "P") or overflows."""
    groups = match.groupdict()
    if groups["clock"]:
        parts = (groups["days"] or "0", groups["hours"], groups["minutes"], groups["seconds"])
        days, hours, minutes, seconds = (float(part) for part in parts)
        return _finite(days * 86400 + hours * 3600 + minutes * 60 + seconds)
    if groups["iso"]:
        iso = [groups[key] for key in ("iso_d", "iso_h", "iso_m", "iso_s")]
        if all(part is None for part in iso):
            return None
        scales = (86400.0, 3600.0, 60.0, 1.0)
        return _finite(sum(float(part or 0) * scale for part, scale in zip(iso, scales, strict=True)))
    total = 0.0
    for term in _TERM_RE.finditer(groups["terms"]):
        unit = term["unit"].lower()
        key = "ms" if unit.startswith(("ms", "msec", "milli")) else unit[0]
        total += float(term["n"]) * _UNIT_SECONDS[key]
    return _finite(total)


def retry_after_from_body(body: str, now: datetime) -> float | None:
    """Seconds to wait according to a 429 body (see the module docstring), or None when it states nothing."""
    head = body[:_MAX_BODY_CHARS]
    message = envelope_message(head)
    text = message if message is not None else head
    explicit = [_duration_seconds(match) for match in _EXPLICIT_RE.finditer(text)]
    stated = [seconds for seconds in explicit if seconds is not None]
    if stated:
        return max(stated)
    windows = [_duration_seconds(match) for match in _WINDOW_RE.finditer(text)]
    elapsed = _utc(now).timestamp()
    waits = [window - elapsed % window for window in windows if window]
    return max(waits) if waits else None


def compute_backoff(attempt: int, *, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with full jitter: rand() * min(cap, base * 2**(attempt - 1)).

    ``attempt`` counts from 1 (lower values count as 1); ``rand`` is clamped to [0, 1].
    """
    if base < 0 or cap < 0:
        raise ValueError("backoff base and cap must not be negative")
    exponent = min(max(attempt, 1) - 1, 1000)  # 2.0**1000 is finite; base * it may be inf, which min() caps
    ceiling = min(cap, base * 2.0**exponent)
    return min(max(rand(), 0.0), 1.0) * ceiling


def _spread_and_cap(seconds: float, rand: Callable[[], float], max_delay: float) -> float:
    spread = min(max(rand(), 0.0), 1.0) * min(SPREAD_MAX_SECONDS, SPREAD_FRACTION * seconds)
    return max(0.0, min(seconds + spread, max_delay))


def throttle_delay(
    headers: Mapping[str, str],
    body: str,
    *,
    attempt: int,
    now: datetime,
    rand: Callable[[], float],
    max_delay: float,
    backoff_base: float = THROTTLE_BACKOFF_BASE,
    backoff_cap: float = THROTTLE_BACKOFF_CAP,
) -> Delay:
    """The delay before a throttled hunt may run again (order of trust, spread and caps: module docstring)."""
    server = retry_after_from_headers(headers, now)
    source: Literal["header", "body", "backoff"] = "header"
    if server is None:
        server, source = retry_after_from_body(body, now), "body"
    if server is None:
        server = compute_backoff(attempt, base=backoff_base, cap=backoff_cap, rand=rand)
        source = "backoff"
    return Delay(_spread_and_cap(server, rand, max_delay), source)


def transient_delay(
    attempt: int,
    *,
    rand: Callable[[], float],
    max_delay: float = math.inf,
    base: float = TRANSIENT_BACKOFF_BASE,
    cap: float = TRANSIENT_BACKOFF_CAP,
) -> Delay:
    """The delay after a transient fault (5xx, 408, timeout, reset): full-jitter backoff, capped like the rest.

    A transient answer that carries ``Retry-After`` (503, a webhook's 502/504) is better served by
    ``throttle_delay(..., backoff_base=base, backoff_cap=cap)``, which honours the header first.
    """
    seconds = compute_backoff(attempt, base=base, cap=cap, rand=rand)
    return Delay(max(0.0, min(seconds, max_delay)), "backoff")
