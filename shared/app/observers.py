"""Observers of the relay's outcomes (shared.core.outcome.Observer): each sees every handled message once, after
its fate is decided. The job ledger and telemetry plug in here; counting is the one the relay ships today.
"""

from __future__ import annotations

import threading
from collections import Counter

from shared.core.outcome import Cause, MessageInfo, Outcome


class CauseCounts:
    """How many handled messages ended with each cause (safe across the worker's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Cause] = Counter()

    def __call__(self, outcome: Outcome, message: MessageInfo) -> None:
        with self._lock:
            self._counts[outcome.cause] += 1

    def snapshot(self) -> dict[Cause, int]:
        with self._lock:
            return dict(self._counts)
