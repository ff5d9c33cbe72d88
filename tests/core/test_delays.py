"""The delay before a throttled or transiently failed hunt runs again (shared/core/delays.py)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.delays import (
    Delay,
    compute_backoff,
    retry_after_from_body,
    retry_after_from_headers,
    throttle_delay,
    transient_delay,
)

NOW = datetime(2024, 1, 1, 12, 0, 30, tzinfo=UTC)  # 30 s into a minute and into an hour
WEEK = 7 * 24 * 3600.0


def envelope(message: str, code: str = "429") -> str:
    return json.dumps({"error": {"code": code, "message": message, "target": "0b4e1c2d-tracking"}})


def never_random() -> float:
    return 0.0


def always_one() -> float:
    return 1.0


# --- headers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "8"}, 8.0),
        ({"retry-after": "8"}, 8.0),
        ({"RETRY-AFTER": " 12 "}, 12.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"Retry-After": "99999999999"}, 99999999999.0),  # huge but a number: trusted, capped later
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250"}, 0.25),
        ({"X-MS-Retry-After-Ms": "250.5"}, 0.2505),
        ({"retry-after-ms": "1500", "x-ms-retry-after-ms": "9000", "Retry-After": "60"}, 1.5),
        ({"x-ms-retry-after-ms": "9000", "Retry-After": "60"}, 9.0),
        ({"retry-after-ms": "soon", "Retry-After": "60"}, 60.0),
        ({"Retry-After": "Mon, 01 Jan 2024 12:01:00 GMT"}, 30.0),
        ({"Retry-After": "Mon, 01 Jan 2024 13:00:30 GMT"}, 3600.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past: clamped
        ({"Retry-After": "Mon, 01 Jan 2024 12:00:30 GMT"}, 0.0),
        ({"Retry-After": "Mon, 01 Jan 2024 12:01:00 -0000"}, 30.0),
        ({"Retry-After": "Monday, 01-Jan-24 12:01:00 GMT"}, 30.0),  # RFC 850, obsolete but allowed
        ({}, None),
        ({"Content-Type": "application/json"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "+5"}, None),
        ({"Retry-After": "1e3"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "NaN"}, None),
        ({"Retry-After": "5 seconds"}, None),
        ({"Retry-After": "9" * 400}, None),  # overflows a float
        ({"Retry-After": "５"}, None),  # fullwidth digit
        ({"Retry-After": "٣"}, None),  # Arabic-Indic digit
        ({"Retry-After": "garbage"}, None),
        ({"Retry-After": "Mon, 99 Jan 2024 12:01:00 GMT"}, None),
        ({"Retry-After": "Mon, 01 Foo 2024 12:01:00 GMT"}, None),
        ({"Retry-After": "Mon, 01 Jan 99999 12:01:00 GMT"}, None),
        ({"retry-after-ms": "-1"}, None),
        ({"x-ms-retry-after-ms": "1,500"}, None),
    ],
)
def test_the_headers_give_the_server_delay_or_none(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_from_headers(headers, NOW) == expected


def test_a_naive_clock_is_read_as_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    assert retry_after_from_headers({"Retry-After": "Mon, 01 Jan 2024 12:01:00 GMT"}, naive_now) == 30.0


# --- bodies ------------------------------------------------------------------------------------------------

SEND_AGAIN = (
    "Rate limit is exceeded. Maximum allowed 30 per 00:01:00 for the key Destination+TenantID+AppID. "
    "You can send requests again in 8 seconds."
)
CPU = "You have exceeded processing resources allocated to this tenant. You can run queries again in {}."


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (envelope("API calls quota exceeded! maximum allowed 45 per 00:01:00"), 30.0),
        (envelope("API calls quota exceeded! maximum allowed 1500 per 01:00:00"), 3570.0),
        (envelope(SEND_AGAIN), 8.0),  # the explicit statement beats the window
        (SEND_AGAIN, 8.0),  # plain text
        ("... " + SEND_AGAIN, 8.0),
        ("You can send requests again in 8.5 seconds.", 8.5),
        ("You can send requests again in 1 second", 1.0),
        ("You can send requests again in 0 seconds.", 0.0),
        (envelope(CPU.format("00:05:00")), 300.0),
        (CPU.format("00:05:00"), 300.0),
        (CPU.format("01:02:03"), 3723.0),
        (CPU.format("1.02:00:00"), 93600.0),
        (CPU.format("00:00:07.5"), 7.5),
        (CPU.format("42 seconds"), 42.0),
        (CPU.format("15 minutes"), 900.0),
        (CPU.format("1 minute"), 60.0),
        (CPU.format("2 hours"), 7200.0),
        (CPU.format("1 hour and 30 minutes"), 5400.0),
        (CPU.format("1 minute, 5 seconds"), 65.0),
        (CPU.format("500 ms"), 0.5),
        (CPU.format("30s"), 30.0),
        (CPU.format("PT15M"), 900.0),
        (CPU.format("PT1H2M3.5S"), 3723.5),
        (CPU.format("PT45S"), 45.0),
        (CPU.format("P1DT1H"), 90000.0),
        (CPU.format("pt2m"), 120.0),
        ("maximum allowed 45 per 00:01:00 ... maximum allowed 1500 per 01:00:00", 3570.0),  # the longest
        ("You can run queries again in 00:05:00. You can send requests again in 8 seconds.", 300.0),
        (envelope("API calls quota exceeded! maximum allowed 45 per 00:01:00 – réessayez 🙂"), 30.0),
        ("💥 You can send requests again in 8 seconds ✓", 8.0),
        # nothing usable: Graph's generic answer, other languages, malformed or absent figures
        (json.dumps({"error": {"code": "TooManyRequests", "message": "Too many requests.", "innerError": {}}}), None),
        ("Too many requests.", None),
        ("", None),
        ("<html><body>429 Too Many Requests</body></html>", None),
        (envelope("You can send requests again in ８ seconds."), None),
        ("Vous pouvez renvoyer des requêtes dans 8 secondes.", None),
        ("You can send requests again in -5 seconds.", None),
        ("You can send requests again in seconds.", None),
        ("You can send requests again in a while.", None),
        (CPU.format("soon"), None),
        (CPU.format("P"), None),
        (CPU.format("P1M"), None),  # months: no quota means that
        (CPU.format("99:99:99"), None),
        ("You can send requests again in " + "9" * 400 + " seconds.", None),
        ("API calls quota exceeded! maximum allowed 45 per 00:00:00", None),  # a zero window
        ("API calls quota exceeded! maximum allowed per 00:01:00", None),
        ('{"error": "not the envelope"}', None),
        ('{"error": {"code": "429", "message": 42}}', None),
        ("[" * 100_000, None),  # deeply nested JSON must not blow the stack
        ('{"error": {"message": "again in 8 seconds"', 8.0),  # truncated JSON is read as text
    ],
)
def test_the_body_gives_the_server_delay_or_none(body: str, expected: float | None) -> None:
    assert retry_after_from_body(body, NOW) == expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC), 60.0),  # on the boundary: the next one is a window away
        (datetime(2024, 1, 1, 12, 0, 59, 500_000, tzinfo=UTC), 0.5),
        (datetime(2024, 1, 1, 12, 0, 0, 1, tzinfo=UTC), 59.999999),
        (datetime(2024, 1, 1, 13, 0, 15, tzinfo=timezone(timedelta(hours=1))), 45.0),  # 12:00:15 UTC
    ],
)
def test_a_quota_window_waits_for_the_next_epoch_aligned_boundary(now: datetime, expected: float) -> None:
    body = envelope("API calls quota exceeded! maximum allowed 45 per 00:01:00")
    assert retry_after_from_body(body, now) == pytest.approx(expected, abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
    window=st.sampled_from(["00:00:10", "00:01:00", "00:15:00", "01:00:00", "1.00:00:00"]),
)
def test_a_window_delay_always_lands_on_a_boundary_within_one_window(now: datetime, window: str) -> None:
    hours, minutes, seconds = (int(part) for part in window.split(".")[-1].split(":"))
    length = hours * 3600 + minutes * 60 + seconds + (86400 if "." in window else 0)
    delay = retry_after_from_body(f"maximum allowed 45 per {window}", now)
    assert delay is not None
    assert 0 < delay <= length
    remainder = (now.timestamp() + delay) % length
    assert min(remainder, length - remainder) == pytest.approx(0, abs=1e-3)


# --- backoff -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "rand_value", "expected"),
    [
        (1, 1.0, 10.0),
        (2, 1.0, 20.0),
        (3, 1.0, 40.0),
        (5, 1.0, 160.0),
        (6, 1.0, 300.0),  # 320 capped
        (3, 0.5, 20.0),
        (3, 0.0, 0.0),
        (0, 1.0, 10.0),  # attempts count from 1
        (-7, 1.0, 10.0),
        (10**9, 1.0, 300.0),  # no overflow
        (3, 7.0, 40.0),  # a rand outside [0, 1] is clamped
        (3, -1.0, 0.0),
    ],
)
def test_backoff_is_capped_exponential_with_full_jitter(attempt: int, rand_value: float, expected: float) -> None:
    assert compute_backoff(attempt, base=10.0, cap=300.0, rand=lambda: rand_value) == expected


def test_backoff_refuses_a_negative_base_or_cap() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        compute_backoff(1, base=-1.0, cap=10.0, rand=always_one)
    with pytest.raises(ValueError, match="must not be negative"):
        compute_backoff(1, base=1.0, cap=-10.0, rand=always_one)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 2.0), (2, 4.0), (5, 32.0), (8, 256.0), (9, 300.0), (50, 300.0)],
)
def test_transient_faults_back_off_from_two_seconds_to_five_minutes(attempt: int, expected: float) -> None:
    assert transient_delay(attempt, rand=always_one) == Delay(expected, "backoff")


def test_a_transient_delay_respects_the_remaining_lifetime() -> None:
    assert transient_delay(9, rand=always_one, max_delay=12.0) == Delay(12.0, "backoff")
    assert transient_delay(9, rand=always_one, max_delay=-3.0) == Delay(0.0, "backoff")


# --- the decision --------------------------------------------------------------------------------------------

WINDOW_BODY = envelope("API calls quota exceeded! maximum allowed 45 per 00:01:00")
GRAPH_BODY = json.dumps({"error": {"code": "TooManyRequests", "message": "Too many requests.", "innerError": {}}})


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "12"}, WINDOW_BODY, Delay(12.0, "header")),
        ({"Retry-After": "12"}, "", Delay(12.0, "header")),
        ({"x-ms-retry-after-ms": "4000"}, WINDOW_BODY, Delay(4.0, "header")),
        ({}, WINDOW_BODY, Delay(30.0, "body")),
        ({}, envelope(SEND_AGAIN), Delay(8.0, "body")),
        ({}, CPU.format("PT5M"), Delay(300.0, "body")),
        ({"Retry-After": "garbage"}, WINDOW_BODY, Delay(30.0, "body")),
        ({"Retry-After": "-1"}, envelope(SEND_AGAIN), Delay(8.0, "body")),
        ({}, GRAPH_BODY, Delay(40.0, "backoff")),  # attempt 3, rand 1: 10 * 2**2
        ({}, "", Delay(40.0, "backoff")),
        ({"Retry-After": "soon"}, "Too many requests.", Delay(40.0, "backoff")),
    ],
)
def test_the_delay_trusts_the_header_then_the_body_then_backoff(
    headers: dict[str, str], body: str, expected: Delay
) -> None:
    # rand() = 1 for the backoff draw, then 0 for the spread, so the figures are exact
    draws = iter([1.0, 0.0]) if expected.source == "backoff" else iter([0.0])
    delay = throttle_delay(headers, body, attempt=3, now=NOW, rand=lambda: next(draws), max_delay=WEEK)
    assert delay == expected


@pytest.mark.parametrize(
    ("server", "spread_draw", "expected"),
    [
        ("10", 1.0, 11.0),  # 10% of 10 s
        ("60", 1.0, 62.0),  # at most 2 s
        ("60", 0.5, 61.0),
        ("60", 0.0, 60.0),
        ("0", 1.0, 0.0),
    ],
)
def test_the_spread_only_adds_and_stays_small(server: str, spread_draw: float, expected: float) -> None:
    delay = throttle_delay({"Retry-After": server}, "", attempt=1, now=NOW, rand=lambda: spread_draw, max_delay=WEEK)
    assert delay == Delay(expected, "header")


@pytest.mark.parametrize(
    ("retry_after", "max_delay", "expected"),
    [
        ("99999999999", WEEK, WEEK),
        ("604800", math.inf, WEEK + 2.0),   # the spread adds up to 2 s; the queue's cap is the retry policy's
        ("3600", 100.0, 100.0),
        ("3600", 0.0, 0.0),
        ("3600", -50.0, 0.0),  # the message has outlived its lifetime: never a negative delay
    ],
)
def test_the_delay_is_capped_at_the_remaining_lifetime(
    retry_after: str, max_delay: float, expected: float
) -> None:
    delay = throttle_delay({"Retry-After": retry_after}, "", attempt=1, now=NOW, rand=always_one, max_delay=max_delay)
    assert delay == Delay(expected, "header")


unit_interval = st.floats(min_value=0.0, max_value=1.0)
lifetimes = st.one_of(st.floats(min_value=-1e3, max_value=2e6), st.just(math.inf))


@settings(max_examples=400, deadline=None)
@given(
    server=st.one_of(
        st.integers(min_value=0, max_value=10**8).map(str),
        st.integers(min_value=0, max_value=10**9).map(lambda n: f"{n // 1000}.{n % 1000:03d}"),
    ),
    draws=st.lists(unit_interval, min_size=2, max_size=2),
    attempt=st.integers(min_value=-5, max_value=10**4),
    max_delay=lifetimes,
    as_ms=st.booleans(),
)
def test_the_delay_is_never_below_the_server_value_nor_above_the_caps(
    server: str, draws: list[float], attempt: int, max_delay: float, as_ms: bool
) -> None:
    headers = {"x-ms-retry-after-ms": server} if as_ms else {"Retry-After": server}
    said = float(server) / (1000.0 if as_ms else 1.0)
    pending = iter(draws)
    delay = throttle_delay(headers, "", attempt=attempt, now=NOW, rand=lambda: next(pending), max_delay=max_delay)
    caps = max_delay
    assert delay.source == "header"
    assert max(0.0, min(said, caps)) <= delay.seconds <= max(0.0, min(said + min(2.0, 0.1 * said), caps))


@settings(max_examples=300, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from(["Retry-After", "retry-after-ms", "x-ms-retry-after-ms", "X-Other"]), st.text(max_size=40)
    ),
    body=st.one_of(
        st.text(max_size=300),
        st.builds(
            lambda prefix, figure, suffix: f"{prefix}again in {figure}{suffix}",
            st.text(max_size=20),
            st.text(alphabet="0123456789.:PTHMSDms ,and", max_size=20),
            st.text(max_size=20),
        ),
    ),
    draws=st.lists(unit_interval, min_size=2, max_size=2),
    attempt=st.integers(min_value=-5, max_value=10**6),
    max_delay=lifetimes,
    now=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)),
)
def test_any_headers_and_body_give_a_delay_within_the_caps_and_never_raise(
    headers: dict[str, str],
    body: str,
    draws: list[float],
    attempt: int,
    max_delay: float,
    now: datetime,
) -> None:
    pending = iter(draws)
    delay = throttle_delay(headers, body, attempt=attempt, now=now, rand=lambda: next(pending), max_delay=max_delay)
    assert 0.0 <= delay.seconds <= max(0.0, max_delay)
    assert delay.source in ("header", "body", "backoff")


@settings(max_examples=300, deadline=None)
@given(
    attempt=st.integers(min_value=-3, max_value=10**6),
    base=st.floats(min_value=0.0, max_value=1e6),
    cap=st.floats(min_value=0.0, max_value=1e7),
    draw=unit_interval,
)
def test_backoff_stays_between_zero_and_its_ceiling(attempt: int, base: float, cap: float, draw: float) -> None:
    delay = compute_backoff(attempt, base=base, cap=cap, rand=lambda: draw)
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(max(attempt, 1) - 1, 1000))


@pytest.mark.timeout(10)  # a hang guard, not a timing assertion: quadratic backtracking took ~25 s here
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("You can send requests again in 1s" + " " * 65_000 + "x", 1.0),
        ("You can send requests again in 1s" + " ," * 30_000, 1.0),
        ("again in " + "1" * 65_000 + "x", None),
        ("maximum allowed " + "4" * 65_000 + " per", None),
        ("again in 1 s and " * 4_000, 1.0),
    ],
)
def test_a_hostile_body_is_read_in_linear_time(body: str, expected: float | None) -> None:
    assert retry_after_from_body(body, NOW) == expected
