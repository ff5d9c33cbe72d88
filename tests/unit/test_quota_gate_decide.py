"""The quota gate's decision, as a table: admit, or wait until the pause or the fullest window ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.quota_gate import Admit, Wait, Window, decide

NOW = datetime(2026, 11, 23, 12, 0, 42, tzinfo=UTC)   # 42 s into a minute, 42 s into an hour
MINUTE, HOUR = Window(60, 45), Window(3600, 1500)


def no_jitter() -> float:
    return 0.0


@pytest.mark.parametrize(("paused_until", "counts", "expected"), [
    (None, [0, 0], Admit()),
    (None, [44, 1499], Admit()),
    (None, [45, 0], Wait(18.0, "the shared call budget for this window is spent")),
    (None, [0, 1500], Wait(3558.0, "the shared call budget for this window is spent")),
    (None, [45, 1500], Wait(3558.0, "the shared call budget for this window is spent")),
    (NOW + timedelta(seconds=30), [0, 0], Wait(30.0, "paused by a 429")),
    (NOW - timedelta(seconds=1), [0, 0], Admit()),
])
def test_the_gate_admits_or_says_how_long_to_wait(paused_until, counts, expected):
    assert decide(now=NOW, paused_until=paused_until, counts=counts, windows=[MINUTE, HOUR], rand=no_jitter) == expected


def test_windows_are_aligned_on_the_epoch_like_the_services():
    assert MINUTE.row_key(NOW) == f"w60-{int(NOW.timestamp()) - 42}"
    assert MINUTE.seconds_left(NOW) == 18.0


def test_jitter_only_adds_and_stays_under_a_second():
    verdict = decide(now=NOW, paused_until=None, counts=[45], windows=[MINUTE], rand=lambda: 0.999)
    assert isinstance(verdict, Wait) and 18.0 <= verdict.seconds < 19.0
