"""The quota gate's decision, as a table: admit, or wait until the pause or the fullest window ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.quota_table import Admit, Wait, Window, admitted, counts_at, decide
from shared.core.quota import WindowUsage, gate_usage

NOW = datetime(2026, 11, 23, 12, 0, 42, tzinfo=UTC)   # 42 s into a minute, 42 s into an hour
MINUTE, HOUR = Window(60, 45), Window(3600, 1500)


def no_jitter() -> float:
    return 0.0


@pytest.mark.parametrize(("paused_until", "counts", "expected"), [
    (None, [0, 0], Admit()),
    (None, [44, 1499], Admit()),
    (None, [45, 0], Wait(18.0, "the shared call budget for this window is spent", MINUTE)),
    (None, [0, 1500], Wait(3558.0, "the shared call budget for this window is spent", HOUR)),
    (None, [45, 1500], Wait(3558.0, "the shared call budget for this window is spent", HOUR)),
    (NOW + timedelta(seconds=30), [0, 0], Wait(30.0, "paused by a 429")),
    (NOW - timedelta(seconds=1), [0, 0], Admit()),
])
def test_the_gate_admits_or_says_how_long_to_wait(paused_until, counts, expected):
    assert decide(now=NOW, paused_until=paused_until, counts=counts, windows=[MINUTE, HOUR], rand=no_jitter) == expected


def test_windows_are_aligned_on_the_epoch_like_the_services():
    assert MINUTE.start(NOW) == int(NOW.timestamp()) - 42
    assert MINUTE.seconds_left(NOW) == 18.0


def test_jitter_only_adds_and_stays_under_a_second():
    verdict = decide(now=NOW, paused_until=None, counts=[45], windows=[MINUTE], rand=lambda: 0.999)
    assert isinstance(verdict, Wait) and 18.0 <= verdict.seconds < 19.0


def admit_at(state, *moments):
    for moment in moments:
        state = admitted(state, [MINUTE, HOUR], moment)
    return state


def test_admissions_are_counted_in_every_window_and_a_new_window_starts_from_zero():
    state = admit_at({}, NOW, NOW, NOW)
    assert counts_at(state, [MINUTE, HOUR], NOW) == [3, 3]
    next_minute = NOW + timedelta(seconds=30)
    assert counts_at(state, [MINUTE, HOUR], next_minute) == [0, 3]
    assert counts_at(admit_at(state, next_minute), [MINUTE, HOUR], next_minute) == [1, 4]
    assert counts_at(state, [MINUTE, HOUR], NOW + timedelta(hours=1)) == [0, 0]


def test_a_call_admitted_in_a_windows_last_moment_takes_a_slot_in_the_next_window_too():
    last_moment = NOW + timedelta(seconds=17.5)   # 0.5 s before the minute ends
    state = admit_at({}, NOW, last_moment)
    assert counts_at(state, [MINUTE, HOUR], last_moment) == [2, 2]
    just_after = NOW + timedelta(seconds=18.2)
    assert counts_at(state, [MINUTE], just_after) == [1]           # the late call, carried over
    assert counts_at(admit_at(state, just_after), [MINUTE], just_after) == [2]
    two_minutes_on = NOW + timedelta(seconds=90)
    assert counts_at(state, [MINUTE], two_minutes_on) == [0]       # a carry reaches only the next window


@pytest.mark.parametrize(("window", "seconds_into", "at_edge"), [
    (Window(60, 45), 58.9, False), (Window(60, 45), 59.0, True), (Window(60, 45), 59.9, True),
    (Window(10, 20), 9.4, False), (Window(10, 20), 9.5, True),     # short windows: the last 5%
    (Window(3600, 1500), 3598.9, False), (Window(3600, 1500), 3599.2, True),
])
def test_the_edge_is_the_last_second_or_the_last_twentieth_of_short_windows(window, seconds_into, at_edge):
    start = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert window.at_edge(start + timedelta(seconds=seconds_into)) is at_edge


def test_usage_shows_each_windows_calls_used_and_left_and_when_it_resets():
    state = {**admit_at({}, NOW, NOW, NOW), "paused_until": NOW + timedelta(seconds=30)}
    usage = gate_usage(state, [MINUTE, HOUR], NOW, api="graph", tenant="contoso", key="graph-tenant-contoso")
    assert usage.windows == (
        WindowUsage(60, 45, 3, 42, datetime(2026, 11, 23, 12, 1, tzinfo=UTC)),
        WindowUsage(3600, 1500, 3, 1497, datetime(2026, 11, 23, 13, 0, tzinfo=UTC)))
    assert usage.paused_until == NOW + timedelta(seconds=30)
    assert usage.as_dict()["windows"][0] == {"seconds": 60, "limit": 45, "used": 3, "left": 42,
                                             "resets_at": "2026-11-23T12:01:00Z"}
    assert usage.as_dict()["paused_until"] == "2026-11-23T12:01:12Z"


@pytest.mark.parametrize(("state", "used", "left", "paused"), [
    ({}, [0, 0], [45, 1500], None),                                       # a gate never used: its whole budget
    ({"paused_until": NOW - timedelta(seconds=1)}, [0, 0], [45, 1500], None),   # a pause that has ended
    ({"paused_until": (NOW + timedelta(seconds=5)).replace(tzinfo=None)}, [0, 0], [45, 1500],
     NOW + timedelta(seconds=5)),                                         # the table's naive time is UTC
    ({"w60_start": MINUTE.start(NOW) - 60, "w60_calls": 45, "w60_next": 2}, [2, 0], [43, 1500], None),   # carried
    ({"w60_start": MINUTE.start(NOW), "w60_calls": 50}, [50, 0], [0, 1500], None),   # over the limit: 0 left
])
def test_usage_reads_the_counts_and_the_pause_that_hold_now(state, used, left, paused):
    usage = gate_usage(state, [MINUTE, HOUR], NOW, api="mde", tenant=None)
    assert [w.used for w in usage.windows] == used
    assert [w.left for w in usage.windows] == left
    assert usage.paused_until == paused


# --- running time (HUNT_RUNTIME_BUDGET) -------------------------------------------------------------------------

def test_running_time_is_reserved_per_window_and_defers_before_the_budget_is_spent():
    from shared.core.quota import RuntimeWindow, charged, runtime_used_at

    runtime = [RuntimeWindow(seconds=3600, budget=10.0), RuntimeWindow(seconds=86400, budget=15.0)]
    now = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    state = charged({}, runtime, now, 6.0)
    assert runtime_used_at(state, runtime, now) == [6.0, 6.0]

    def verdict(state, estimate):  # type: ignore[no-untyped-def]
        return decide(now=now, paused_until=None, counts=[], windows=[], rand=lambda: 0.0, runtime=runtime,
                      runtime_used=runtime_used_at(state, runtime, now), estimate=estimate)

    assert verdict(state, 4.0) == Admit(4.0)
    waited = verdict(state, 4.5)
    assert isinstance(waited, Wait) and waited.seconds == 1800 and "running-time" in waited.reason
    # A settlement below the estimate gives the time back; never below zero.
    assert runtime_used_at(charged(state, runtime, now, -8.0), runtime, now) == [0.0, 0.0]
    # The next hour's window starts empty; the day's still holds what was spent.
    later = datetime(2026, 12, 1, 11, 0, 1, tzinfo=UTC)
    assert runtime_used_at(state, runtime, later) == [0.0, 6.0]
    # An empty window admits one call, whatever its estimate.
    assert verdict({}, 100.0) == Admit(100.0)


def test_a_turned_away_hunt_books_a_place_in_the_first_later_window_with_room():
    from shared.core.quota import booked

    window = Window(10, 3)
    now = datetime(2026, 12, 1, 12, 0, 3, tzinfo=UTC)   # 3 s into a 10 s window
    taken: dict[int, float] = {}
    delays = []
    for _ in range(7):
        index, delay = booked(window, now, taken, no_jitter)
        taken[index] = taken.get(index, 0) + 1
        delays.append(delay)
    assert delays == [7.0, 7.0, 7.0, 17.0, 17.0, 17.0, 27.0]   # three places a window, the windows in order
    # A window left with room (its places given back, or booked from an old copy) is filled first.
    first = int(now.timestamp()) // 10 + 1
    assert booked(window, now, {**taken, first + 1: 2}, no_jitter) == (first + 1, 17.0)
    # Once that window has begun, bookings start from the one after it.
    later = datetime(2026, 12, 1, 12, 0, 41, tzinfo=UTC)
    assert booked(window, later, taken, no_jitter)[1] == 9.0
    # Not before a given start: the first window from there with room (one starting mid-window: the next one).
    start = int(now.timestamp()) + 57   # 12:01:00
    assert booked(window, now, taken, no_jitter, not_before=start) == (start // 10, 57.0)
    assert booked(window, now, {start // 10: 3}, no_jitter, not_before=start - 5) == (start // 10 + 1, 67.0)


def test_a_hunt_the_running_time_budget_turned_away_books_its_estimate_in_a_later_window():
    from shared.core.quota import RuntimeWindow, booked_running_time, charged, runtime_used_at

    window = RuntimeWindow(seconds=30, budget=0.5)   # booked up to twice its budget (RUNTIME_OVERBOOKING)
    now = datetime(2026, 12, 1, 12, 0, 10, tzinfo=UTC)   # 10 s into a 30 s window
    spent = charged({}, [window], now, 0.5)
    waited = decide(now=now, paused_until=None, counts=[], windows=[], rand=no_jitter, runtime=[window],
                    runtime_used=runtime_used_at(spent, [window], now), estimate=0.4)
    assert isinstance(waited, Wait) and waited.runtime_window == window and waited.seconds == 20.0
    taken: dict[int, float] = {}
    delays = []
    for _ in range(6):
        index, delay = booked_running_time(window, now, taken, 0.4, no_jitter)
        taken[index] = taken.get(index, 0.0) + 0.4
        delays.append(delay)
    assert delays == [20.0, 20.0, 50.0, 50.0, 80.0, 80.0]   # two estimates of 0.4 s fit twice a 0.5 s budget
    # An estimate above the whole budget still takes a window of its own, never none.
    assert booked_running_time(window, now, {}, 5.0, no_jitter)[1] == 20.0
    # Once the booked window has begun, bookings start from the one after it.
    assert booked_running_time(window, datetime(2026, 12, 1, 12, 2, 1, tzinfo=UTC), taken, 0.4, no_jitter)[1] == 29.0


def test_a_booking_row_reads_back_what_was_written_and_leaves_out_what_does_not_read():
    from shared.core.quota import bookings_of, bookings_text

    places = {59_012_345: 3.0, 59_012_344: 0.4567, 59_012_346: 40.0}
    text = bookings_text(places)
    assert text == "59012344:0.457;59012345:3;59012346:40"   # in window order, three decimals at most
    assert bookings_of(text) == {59_012_344: 0.457, 59_012_345: 3.0, 59_012_346: 40.0}
    assert bookings_of("59012344:2;x:1;59012345;:3;59012346:two;59012344:1") == {59_012_344: 3.0}
    assert bookings_of("1:nan;2:inf;3:-1;4:0;5:1") == {5: 1.0}
    assert bookings_of("") == {} and bookings_of(None) == {} and bookings_of(7) == {}
