"""The fleet-wide quota gate: every instance asks before it calls the API, so a backlog drains at the tenant's
quota rate and a 429 seen by one instance pauses them all.

State lives in one storage table (HUNT_GATE_TABLE), one partition per API and tenant key:

    RowKey "pause"              paused_until: no call before this time (set from a 429's delay; only extended)
    RowKey "w<seconds>-<start>" calls admitted in that window (epoch-aligned, like the service's own windows)

Every change is an optimistic-concurrency write (If-Match on the entity's ETag, or create-if-absent), retried on
conflict, so several processes on several machines share one budget. The decision itself is pure
(`decide`): given the pause, the counts and the limits, admit now or wait until the moment a slot frees.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

logger = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 20


@dataclass(frozen=True)
class Window:
    seconds: int
    limit: int

    def start(self, now: datetime) -> int:
        epoch = int(now.timestamp())
        return epoch - epoch % self.seconds

    def row_key(self, now: datetime) -> str:
        return f"w{self.seconds}-{self.start(now)}"

    def seconds_left(self, now: datetime) -> float:
        return self.start(now) + self.seconds - now.timestamp()


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


class QuotaGate:
    def __init__(self, table: TableClient, *, key: str, windows: Sequence[Window], clock: Callable[[], datetime],
                 rand: Callable[[], float]) -> None:
        self._table = table
        self._key = key
        self._windows = tuple(windows)
        self._clock = clock
        self._rand = rand

    def admit(self) -> Admit | Wait:
        """Take one call from the shared budget, or say how long to wait. Never blocks."""
        now = self._clock()
        paused = self._get("pause")
        verdict = decide(now=now, paused_until=_as_datetime(paused.get("paused_until")) if paused else None,
                         counts=(), windows=(), rand=self._rand)
        if isinstance(verdict, Wait):
            return verdict
        for window in self._windows:
            for _ in range(MAX_CONFLICT_RETRIES):
                entity = self._get(window.row_key(now))
                verdict = decide(now=now, paused_until=None, counts=[int(entity["calls"]) if entity else 0],
                                 windows=[window], rand=self._rand)
                if isinstance(verdict, Wait):
                    return verdict
                if self._increment(window.row_key(now), entity):
                    break
            else:  # heavy contention: come back shortly rather than spin
                return Wait(1.0 + self._rand(), "the quota gate is contended")
        return Admit()

    def pause_until(self, until: datetime) -> None:
        """Record that the API throttled us: no instance calls before `until` (an earlier time never shortens it)."""
        for _ in range(MAX_CONFLICT_RETRIES):
            entity = self._get("pause")
            if entity is None:
                try:
                    self._table.create_entity({"PartitionKey": self._key, "RowKey": "pause", "paused_until": until})
                    return
                except ResourceExistsError:
                    continue
            current = _as_datetime(entity.get("paused_until"))
            if current is not None and current >= until:
                return
            entity["paused_until"] = until
            try:
                self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                return
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        logger.warning("quota gate %s: could not record the pause after %s tries", self._key, MAX_CONFLICT_RETRIES)

    def _get(self, row_key: str) -> Any:
        try:
            return self._table.get_entity(self._key, row_key)
        except ResourceNotFoundError:
            return None

    def _increment(self, row_key: str, entity: Any) -> bool:
        try:
            if entity is None:
                self._table.create_entity({"PartitionKey": self._key, "RowKey": row_key, "calls": 1})
            else:
                entity["calls"] = int(entity["calls"]) + 1
                self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False
        return True


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None

