"""The destinations' circuit breakers, shared by every instance: one entity per destination in HUNT_BREAKER_TABLE
(PartitionKey "breaker", RowKey the destination's key: `<tenant or home>.<destination name>`, or
`<tenant or home>.inline.<host>` for an inline webhook URL). The decisions are pure (shared.core.breaker).

Reads are kept for a few seconds per process (a delivery costs no table read while the circuit is closed and
quiet); every write is conditional on the entity's ETag, so two instances never both take the probe. A table that
does not answer never stops a delivery: the breaker then lets every delivery through (and says so in the log).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import NO_ENTITY_ECHO, create_if_missing
from shared.core import breaker
from shared.core.breaker import BreakerPolicy, Hold, Probe, Send, Verdict

logger = logging.getLogger(__name__)

PARTITION = "breaker"
CACHE_SECONDS = 5.0
MAX_CONFLICT_RETRIES = 5
_FIELDS = ("state", "failures", "first_failure_at", "opened_at", "open_until", "probe_until", "reason")


@dataclass(frozen=True)
class BreakerView:
    """One destination's circuit, for the ops page, the gauge and `python -m shared breaker`."""

    key: str
    state: breaker.State
    failures: int
    opened_at: datetime | None
    open_until: datetime | None
    reason: str | None

    @property
    def is_open(self) -> bool:
        return self.state != "closed"


class Breakers:
    def __init__(self, table: TableClient, policy: BreakerPolicy, *, clock: Callable[[], datetime]) -> None:
        self._table = table
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, dict[str, Any], str | None]] = {}   # key -> (read at, state, etag)

    def ensure_table(self) -> None:
        create_if_missing(self._table.create_table, "the circuit breaker table")

    # --- one delivery -----------------------------------------------------------------------------------------

    def verdict(self, key: str) -> Verdict:
        """Send, Probe (this instance holds the probe now) or Hold."""
        try:
            for fresh in (False, True):   # a claim lost to a stale kept copy reads again and decides again
                state, etag = self._read(key, fresh=fresh)
                verdict = breaker.decide(state, self._clock())
                if not isinstance(verdict, Probe):
                    return verdict
                if self._write(key, breaker.claimed(state, self._clock()), etag):
                    logger.info("destination %s: its circuit is open; this delivery is the probe", key)
                    return verdict
            return Hold(breaker.PROBE_SECONDS, "another instance is probing the destination")
        except AzureError as error:
            logger.warning("destination %s: the breaker table did not answer (%s); delivering anyway", key,
                           type(error).__name__)
            return Send()

    def delivered(self, key: str) -> None:
        """A success: free when the kept copy is closed and clear (no table call)."""
        self._change(key, breaker.after_success, fresh=False)

    def failed(self, key: str, reason: str) -> None:
        self._change(key, lambda state: breaker.after_failure(state, self._clock(), self.policy, reason))

    def gone(self, key: str, reason: str) -> None:
        self._change(key, lambda state: breaker.after_gone(state, self._clock(), reason))

    def close(self, key: str) -> bool:
        """The operator's close: False when the table has no circuit of that key."""
        try:
            self._table.get_entity(PARTITION, key)
        except ResourceNotFoundError:
            return False
        self._table.upsert_entity({"PartitionKey": PARTITION, "RowKey": key, **_stored(breaker.closed())},
                                  mode=UpdateMode.REPLACE)
        with self._lock:
            self._kept.pop(key, None)
        logger.warning("destination %s: its circuit was closed by an operator", key)
        return True

    def views(self) -> list[BreakerView]:
        """Every destination the table knows, open ones first."""
        views = [_view(str(entity["RowKey"]), dict(entity))
                 for entity in self._table.query_entities(f"PartitionKey eq '{PARTITION}'")]
        return sorted(views, key=lambda view: (not view.is_open, view.key))

    # --- storage ----------------------------------------------------------------------------------------------

    def _read(self, key: str, *, fresh: bool = False) -> tuple[dict[str, Any], str | None]:
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and not fresh and now - kept[0] < CACHE_SECONDS:
            return kept[1], kept[2]
        try:
            entity = self._table.get_entity(PARTITION, key)
            state, etag = _loaded(dict(entity)), entity.metadata["etag"]
        except ResourceNotFoundError:
            state, etag = {}, None
        with self._lock:
            self._kept[key] = (now, state, etag)
        return state, etag

    def _write(self, key: str, state: dict[str, Any], etag: str | None) -> bool:
        entity = {"PartitionKey": PARTITION, "RowKey": key, **_stored(state)}
        try:
            if etag is None:
                reply = self._table.create_entity(entity, **NO_ENTITY_ECHO)
            else:
                reply = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                                  match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            with self._lock:
                self._kept.pop(key, None)
            return False
        with self._lock:
            self._kept[key] = (time.monotonic(), state, reply["etag"])
        return True

    def _change(self, key: str, change: Callable[[dict[str, Any]], dict[str, Any] | None], *,
                fresh: bool = True) -> None:
        """Applies `change` to the stored state, read afresh (a failure must count on the shared count), retried
        on a conflict."""
        try:
            for attempt in range(MAX_CONFLICT_RETRIES):
                state, etag = self._read(key, fresh=fresh or attempt > 0)
                new = change(state)
                if new is None:
                    return
                if self._write(key, new, etag):
                    if breaker.state_of(new) != breaker.state_of(state):
                        logger.warning("destination %s: its circuit is now %s (%s)", key, breaker.state_of(new),
                                       new.get("reason") or "delivered")
                    return
            logger.warning("destination %s: the breaker could not record the delivery's answer after %s tries", key,
                           MAX_CONFLICT_RETRIES)
        except AzureError as error:
            logger.warning("destination %s: the breaker table did not answer (%s)", key, type(error).__name__)


def _stored(state: dict[str, Any]) -> dict[str, Any]:
    """The fields as an entity holds them (a None field is left out: REPLACE drops it)."""
    return {name: state[name] for name in _FIELDS if state.get(name) is not None}


def _loaded(entity: dict[str, Any]) -> dict[str, Any]:
    state = {name: entity.get(name) for name in _FIELDS}
    for name in ("first_failure_at", "opened_at", "open_until", "probe_until"):
        value = state[name]
        if isinstance(value, datetime) and value.tzinfo is None:
            state[name] = value.replace(tzinfo=UTC)
    if state["failures"] is not None:
        state["failures"] = int(state["failures"])
    return state


def _view(key: str, entity: dict[str, Any]) -> BreakerView:
    state = _loaded(entity)
    return BreakerView(key, breaker.state_of(state), int(state.get("failures") or 0), state.get("opened_at"),
                       state.get("open_until"), state.get("reason"))
