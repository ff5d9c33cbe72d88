"""The fleet-wide quota gate: every instance asks before it calls the API, so a backlog drains at the tenant's
quota rate and a 429 seen by one instance pauses them all.

State lives in one storage table (HUNT_GATE_TABLE), one entity per API and tenant (PartitionKey the key,
RowKey "state"), so that one read and one conditional write decide an admission:

    paused_until        no call before this time (set from a 429's delay; only ever extended)
    w<seconds>_start    the start of the window the counts below belong to (epoch-aligned, like the service's)
    w<seconds>_calls    calls admitted in that window
    w<seconds>_next     calls admitted in that window's last moments, counted in the next window as well: such a
                        call may reach the API only after the boundary, so it takes a slot on both sides

Every change is an optimistic-concurrency write (If-Match on the ETag, or create-if-absent), retried on conflict,
so several processes on several machines share one budget. Each process keeps the entity it last read or wrote:
alone, an admission costs one write; when another instance wrote in between, the write is refused (412) and the
gate reads again. A decision to wait taken on a stale copy is still right: counts only grow within a window and a
pause is only extended. The decision itself is pure (`decide`, `counts_at`, `admitted`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

logger = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 20
STATE_ROW = "state"
MAX_EDGE_SECONDS = 1.0   # how close to a window's end a call also counts in the next window


@dataclass(frozen=True)
class Window:
    seconds: int
    limit: int

    def start(self, now: datetime) -> int:
        epoch = int(now.timestamp())
        return epoch - epoch % self.seconds

    def seconds_left(self, now: datetime) -> float:
        return self.start(now) + self.seconds - now.timestamp()

    def at_edge(self, now: datetime) -> bool:
        """In the window's last moments: a call admitted now may reach the API in the next window."""
        return self.seconds_left(now) <= min(MAX_EDGE_SECONDS, self.seconds / 20)


@dataclass(frozen=True)
class Admit:
    pass


@dataclass(frozen=True)
class Wait:
    seconds: float
    reason: str


def decide(*, now: datetime, paused_until: datetime | None, counts: Sequence[int], windows: Sequence[Window],
           rand: Callable[[], float]) -> Admit | Wait:
    """Admit when not paused and every window has room; else wait until the pause or the fullest window ends.
    A small jitter (up to 1 s) spreads the hunts that wait for the same moment."""
    if paused_until is not None and paused_until > now:
        return Wait((paused_until - now).total_seconds() + rand(), "paused by a 429")
    waits = [w.seconds_left(now) for w, n in zip(windows, counts, strict=True) if n >= w.limit]
    if waits:
        return Wait(max(waits) + rand(), "the shared call budget for this window is spent")
    return Admit()


def counts_at(state: Mapping[str, Any], windows: Sequence[Window], now: datetime) -> list[int]:
    """Calls already counted in each window that holds `now` (what the previous window carried over included)."""
    counts = []
    for window in windows:
        start = state.get(f"w{window.seconds}_start")
        if start == window.start(now):
            counts.append(int(state.get(f"w{window.seconds}_calls", 0)))
        elif start == window.start(now) - window.seconds:
            counts.append(int(state.get(f"w{window.seconds}_next", 0)))
        else:
            counts.append(0)
    return counts


def admitted(state: Mapping[str, Any], windows: Sequence[Window], now: datetime) -> dict[str, Any]:
    """The state with one more call admitted at `now` in every window."""
    new = dict(state)
    for window, count in zip(windows, counts_at(state, windows, now), strict=True):
        same_window = state.get(f"w{window.seconds}_start") == window.start(now)
        carried = int(state.get(f"w{window.seconds}_next", 0)) if same_window else 0
        new[f"w{window.seconds}_start"] = window.start(now)
        new[f"w{window.seconds}_calls"] = count + 1
        new[f"w{window.seconds}_next"] = carried + 1 if window.at_edge(now) else carried
    return new


class QuotaGate:
    def __init__(self, table: TableClient, *, key: str, windows: Sequence[Window], clock: Callable[[], datetime],
                 rand: Callable[[], float]) -> None:
        self._table = table
        self._key = key
        self._windows = tuple(windows)
        self._clock = clock
        self._rand = rand
        self._lock = threading.Lock()   # one admission at a time per process: the kept copy stays consistent
        self._state: dict[str, Any] | None = None
        self._etag: str | None = None   # None with a state: the entity does not exist yet

    def admit(self) -> Admit | Wait:
        """Take one call from the shared budget, or say how long to wait. Never blocks on the budget."""
        with self._lock:
            for _ in range(MAX_CONFLICT_RETRIES):
                now = self._clock()
                state = self._kept_state()
                verdict = decide(now=now, paused_until=_as_datetime(state.get("paused_until")),
                                 counts=counts_at(state, self._windows, now), windows=self._windows, rand=self._rand)
                if isinstance(verdict, Wait) or self._write(admitted(state, self._windows, now)):
                    return verdict
            return Wait(1.0 + self._rand(), "the quota gate is contended")   # come back shortly rather than spin

    def pause_until(self, until: datetime) -> None:
        """Record that the API throttled us: no instance calls before `until` (an earlier time never shortens it)."""
        with self._lock:
            for _ in range(MAX_CONFLICT_RETRIES):
                state = self._kept_state()
                current = _as_datetime(state.get("paused_until"))
                if current is not None and current >= until:
                    return
                if self._write({**state, "paused_until": until}):
                    return
        logger.warning("quota gate %s: could not record the pause after %s tries", self._key, MAX_CONFLICT_RETRIES)

    def _kept_state(self) -> dict[str, Any]:
        if self._state is None:
            try:
                entity = self._table.get_entity(self._key, STATE_ROW)
                self._state, self._etag = dict(entity), entity.metadata["etag"]
            except ResourceNotFoundError:
                self._state, self._etag = {}, None
        return self._state

    def _write(self, state: dict[str, Any]) -> bool:
        """Create the entity, or replace the kept copy if nobody changed it since; False (and forget it) on a
        conflict. Any other storage error propagates with the kept copy forgotten."""
        entity = {**state, "PartitionKey": self._key, "RowKey": STATE_ROW}
        self._state = None
        try:
            if self._etag is None:
                reply = self._table.create_entity(entity)
            else:
                reply = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=self._etag,
                                                  match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False
        self._state, self._etag = state, reply["etag"]
        return True


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None
