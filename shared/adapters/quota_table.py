"""The fleet-wide quota gate: every instance asks before it calls the API, so a backlog drains at the tenant's
quota rate and a 429 seen by one instance pauses them all.

State lives in one storage table (HUNT_GATE_TABLE), one partition per API and tenant (PartitionKey the key):
- the state entity (RowKey "state"; its fields: shared.core.quota), so that one read and one conditional write
  decide an admission;
- one booking row per process (RowKey "booking-<process>"): the places in later windows it gave the hunts it
  turned away.
One read (a query of the partition) brings the state and every booking row.

Every change of the state is an optimistic-concurrency write (If-Match on the ETag, or create-if-absent), retried
on conflict, so several processes on several machines share one budget. Each process keeps the entity it last read
or wrote: alone, an admission costs one write; when another instance wrote in between, the write is refused (412)
and the gate reads again. While other instances are writing too (a write was refused in the last
CONTENDED_SECONDS), a kept copy older than KEPT_FRESH_SECONDS is read again before an admission: it is almost
always stale then, and its write would be refused. What calls spent is settled with the next admission's write, or
on its own once it is worth one.

A booking row has one writer, its process, so its writes are unconditional and never refused: turning a hunt away
costs the read and that one write, and never races the admissions for the state. A process books against the rows
as it last read them; two that book the same place at once overbook a window by one, and the hunt that finds it
full is booked again (a place is never left unspent).

A decision to wait taken on a stale copy is still right: counts only grow within a window and a pause is only
extended. A booking is made on a copy read less than KEPT_FRESH_SECONDS ago, so that the others' bookings are
seen. A booking row whose places have all passed is deleted by whichever process reads it once it has not been
written for BOOKING_ROW_IDLE_SECONDS (its process stopped, or has turned nothing away since). The decision itself
is pure (shared.core.quota).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import NO_ENTITY_ECHO, create_if_missing
from shared.core.apis import API_NAMES
from shared.core.quota import (
    Admit,
    GateUsage,
    RuntimeWindow,
    Wait,
    Window,
    admitted,
    booked,
    booked_running_time,
    bookings_of,
    bookings_text,
    charged,
    counts_at,
    decide,
    gate_usage,
    runtime_used_at,
)
from shared.core.settings import Settings
from shared.core.tenants import TenantConfig

logger = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 20
SETTLE_TRIES = 3               # a settlement of its own gives up after this many refused writes (the next one, or
                               # the next admission's write, carries the amount)
CONFLICT_PAUSE_FIRST = 0.01   # seconds, at most, before an admission's first retry after a conflict; doubling
CONFLICT_PAUSE_MAX = 0.16
FIRST_ESTIMATE_SECONDS = 1.0   # a call's running time before this process has seen one
ESTIMATE_WEIGHT = 0.2          # the moving average's weight of the latest call
SETTLE_SECONDS = 0.5           # estimates missed by less than this (summed) wait for a later write
KEPT_FRESH_SECONDS = 0.1       # contended, an admission writes on a kept copy this young; an older one is read first
CONTENDED_SECONDS = 30.0       # how long after a refused write the gate counts as contended
STATE_ROW = "state"
BOOKING_ROW_PREFIX = "booking-"   # + the process's own id: its booking row
BOOKING_FIELD = re.compile(r"[qr]\d+")   # a booking row's fields (shared.core.quota): q<seconds>, r<seconds>
BOOKING_ROW_IDLE_SECONDS = 600.0   # a booking row with only passed places, unwritten this long, is deleted


class _Ticket:
    """One admission request of a handler, decided by whichever thread writes for the batch it is in."""

    __slots__ = ("error", "verdict")

    def __init__(self) -> None:
        self.verdict: Admit | Wait | None = None
        self.error: BaseException | None = None   # storage failed while deciding its batch


class QuotaGate:
    def __init__(self, table: TableClient, *, key: str, windows: Sequence[Window], clock: Callable[[], datetime],
                 rand: Callable[[], float], runtime: Sequence[RuntimeWindow] = ()) -> None:
        self._table = table
        self._key = key
        self._windows = tuple(windows)
        self._runtime = tuple(runtime)
        # This process's estimate of one call's running time (a moving average of what calls spent), and the
        # settlements too small to be worth a write yet (shared.core.quota: r<seconds>_used).
        self._estimate: float | None = None
        self._unsettled = 0.0
        self._clock = clock
        self._rand = rand
        self._lock = threading.Lock()   # one decision at a time per process: the kept copy stays consistent
        self._waiting: list[_Ticket] = []   # admissions asked for and not decided yet (decided together)
        self._waiting_lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._etag: str | None = None   # None with a state: the entity does not exist yet
        self._kept_at = 0.0   # time.monotonic() when the kept copy was read or written
        # The places this process booked (its booking row: it alone writes it), and the other processes' as last
        # read (summed): by booking field (q<seconds>, r<seconds>), then window index.
        self._row = f"{BOOKING_ROW_PREFIX}{uuid.uuid4().hex}"
        self._mine: dict[str, dict[int, float]] = {}
        self._others: dict[str, dict[int, float]] = {}
        self._read_at = 0.0   # time.monotonic() when the partition (the others' bookings with it) was last read
        self._contended_until = 0.0   # time.monotonic() until which other instances count as writing too

    def admit(self) -> Admit | Wait:
        """Take one call from the shared budget, or say how long to wait. Never blocks on the budget.

        The process's concurrent requests are decided together (a group commit): whichever thread holds the
        gate's lock takes every request waiting for it and writes their admissions and bookings in one
        conditional write, so that a process's handlers do not race each other for the entity (each write that
        loses the race costs a read and a write more, for every instance)."""
        ticket = _Ticket()
        with self._waiting_lock:
            self._waiting.append(ticket)
        with self._lock:
            if ticket.verdict is None and ticket.error is None:   # not decided by the lock's previous holder
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                try:
                    self._decide_together(batch)
                except BaseException as error:   # each handler of the batch meets the storage error itself
                    for waiting in batch:
                        waiting.error = error
        if ticket.error is not None:
            raise ticket.error
        assert ticket.verdict is not None
        return ticket.verdict

    def _decide_together(self, batch: list[_Ticket]) -> None:
        """Every ticket's verdict from one read and one write (retried on conflict, all together, after a short
        random pause that doubles: when many instances race for the entity, most of the next round's writes
        would lose again)."""
        self._forget_if_stale()
        conflicts, read_for_booking = 0, False
        while conflicts < MAX_CONFLICT_RETRIES:
            self._pause_after(conflicts)
            now = self._clock()
            new = self._kept_state()
            settling = self._unsettled
            if self._runtime and settling:   # what calls spent since, settled in the same write
                new = self._settled(new, now, settling)
            verdicts: list[Admit | Wait] = []
            booking: dict[str, dict[int, float]] = {}   # the places this batch takes in later windows
            for _ticket in batch:
                estimate = self._estimate_with(new) if self._runtime else 0.0
                verdict = decide(now=now, paused_until=_as_datetime(new.get("paused_until")),
                                 counts=counts_at(new, self._windows, now), windows=self._windows, rand=self._rand,
                                 runtime=self._runtime, runtime_used=runtime_used_at(new, self._runtime, now),
                                 estimate=estimate)
                if isinstance(verdict, Wait):
                    verdict = self._booked_wait(verdict, now, estimate, booking)
                else:
                    new = admitted(new, self._windows, now)
                    if self._runtime:
                        new = charged(new, self._runtime, now, estimate)
                verdicts.append(verdict)
            if booking and not read_for_booking and time.monotonic() - self._read_at > KEPT_FRESH_SECONDS:
                self._state, read_for_booking = None, True   # book on what the others booked lately: read again
                continue
            if new is self._state or self._write(new):   # nothing to write: every ticket waits, or was booked
                self._unsettled -= settling
                if booking:
                    self._book(booking, now)
                for ticket, verdict in zip(batch, verdicts, strict=True):
                    ticket.verdict = verdict
                return
            conflicts += 1
        for ticket in batch:   # come back shortly rather than spin
            ticket.verdict = Wait(1.0 + self._rand(), "the quota gate is contended")

    def _estimate_with(self, state: dict[str, Any]) -> float:
        """This process's estimate; before its first call, the fleet's (what another process last settled with)."""
        if self._estimate is not None:
            return self._estimate
        shared = state.get("r_estimate")
        return float(shared) if isinstance(shared, int | float) and shared >= 0 else FIRST_ESTIMATE_SECONDS

    def spent(self, seconds: float, reserved: float, *, learn: bool = True) -> None:
        """A call admitted with `reserved` seconds of running time spent `seconds`: the estimate learns (from
        answered queries only: a 429 in milliseconds says nothing of a query's cost), and the difference is
        settled in the shared running-time windows once it is worth a write. Never raises: a settlement that
        storage refuses waits for the next one, and never changes a hunt's fate."""
        if not self._runtime:
            return
        with self._lock:
            if learn:
                self._estimate = seconds if self._estimate is None else \
                    (1 - ESTIMATE_WEIGHT) * self._estimate + ESTIMATE_WEIGHT * seconds
            self._unsettled += seconds - reserved
            if abs(self._unsettled) < SETTLE_SECONDS:
                return
            self._forget_if_stale()
            try:
                for tries in range(SETTLE_TRIES):   # the admissions wait on this lock: few tries
                    self._pause_after(tries + 1 if tries else 0)   # 20, then 40 ms at most
                    if self._write(self._settled(self._kept_state(), self._clock(), self._unsettled)):
                        self._unsettled = 0.0
                        return
            except AzureError as error:
                logger.warning("quota gate %s: the running time could not be settled (%s); it is kept for the next "
                               "settlement", self._key, type(error).__name__)
                return
        logger.info("quota gate %s: the running time was not settled in %s tries; the next write carries it",
                    self._key, SETTLE_TRIES)

    def _pause_after(self, conflicts: int) -> None:
        """A random pause after `conflicts` refused writes in a row (none before the first write): under
        CONFLICT_PAUSE_FIRST after the first, doubling up to CONFLICT_PAUSE_MAX, so that instances racing for the
        entity spread their next writes."""
        if conflicts:
            time.sleep(self._rand() * min(CONFLICT_PAUSE_MAX, CONFLICT_PAUSE_FIRST * 2 ** (conflicts - 1)))

    def _settled(self, state: dict[str, Any], now: datetime, seconds: float) -> dict[str, Any]:
        settled = charged(state, self._runtime, now, seconds)
        if self._estimate is not None:
            settled["r_estimate"] = self._estimate   # a process that starts later begins from it
        return settled

    def pause_until(self, until: datetime) -> None:
        """Record that the API throttled us: no instance calls before `until` (an earlier time never shortens it)."""
        with self._lock:
            for conflicts in range(MAX_CONFLICT_RETRIES):
                self._pause_after(conflicts)   # the instances that met the same 429 spread their next writes
                state = self._kept_state()
                current = _as_datetime(state.get("paused_until"))
                if current is not None and current >= until:
                    return
                if self._write({**state, "paused_until": until}):
                    return
        logger.warning("quota gate %s: could not record the pause after %s tries", self._key, MAX_CONFLICT_RETRIES)

    def _forget_if_stale(self) -> None:
        """While other instances write too, read the entity again before writing when the kept copy is older than
        KEPT_FRESH_SECONDS: another instance has most likely written since, and a write on it would be refused.
        An instance alone keeps writing on its copy (one write an admission)."""
        now = time.monotonic()
        if self._state is not None and self._etag is not None and now < self._contended_until and \
                now - self._kept_at > KEPT_FRESH_SECONDS:
            self._state = None

    def _kept_state(self) -> dict[str, Any]:
        if self._state is None:
            self._read()
        assert self._state is not None
        return self._state

    def _read(self) -> None:
        """The partition in one query: the state (and its ETag) and the other processes' bookings of later
        windows, summed. Booking rows left idle with nothing to come are deleted on the way."""
        try:
            rows = list(self._table.query_entities("PartitionKey eq @key", parameters={"key": self._key}))
        except ResourceNotFoundError:   # no table yet
            rows = []
        now = self._clock()
        state: dict[str, Any] = {}
        etag: str | None = None
        others: dict[str, dict[int, float]] = {}
        for row in rows:
            name = str(row.get("RowKey"))
            if name == STATE_ROW:
                state, etag = dict(row), row.metadata["etag"]
            elif name.startswith(BOOKING_ROW_PREFIX) and name != self._row:
                ahead = {field: self._ahead(field, bookings_of(text), now)
                         for field, text in row.items() if BOOKING_FIELD.fullmatch(field)}
                for field, places in ahead.items():
                    for index, amount in places.items():
                        _add(others, field, index, amount)
                if not any(ahead.values()):
                    self._delete_if_idle(row, now)
        self._state, self._etag, self._others = state, etag, others
        self._kept_at = self._read_at = time.monotonic()

    @staticmethod
    def _ahead(field: str, places: dict[int, float], now: datetime) -> dict[int, float]:
        """The places of windows still to come (after the current one) of a booking field (q<seconds>)."""
        current = int(now.timestamp()) // int(field[1:])
        return {index: amount for index, amount in places.items() if index > current}

    def _delete_if_idle(self, row: Any, now: datetime) -> None:
        """Another process's booking row with nothing to come, unwritten for BOOKING_ROW_IDLE_SECONDS: deleted if
        it is still as read (its process may book again: it then writes the row anew)."""
        written = _as_datetime(row.metadata.get("timestamp"))
        if written is None or (now - written).total_seconds() < BOOKING_ROW_IDLE_SECONDS:
            return
        with contextlib.suppress(AzureError):   # another reader deleted it first, or storage is away: no matter
            self._table.delete_entity(row, etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified)

    def _booked_wait(self, verdict: Wait, now: datetime, estimate: float,
                     booking: dict[str, dict[int, float]]) -> Wait:
        """A hunt turned away by a call or running-time budget takes a place in a later window (added to this
        batch's `booking`), so that the backlog comes back spread over the windows it needs rather than all at the
        next boundary; the Wait until then. A pause books nothing."""
        if verdict.window is not None:
            field = f"q{verdict.window.seconds}"
            index, delay = booked(verdict.window, now, self._taken(field, booking), self._rand)
            _add(booking, field, index, 1)
        elif verdict.runtime_window is not None:
            field = f"r{verdict.runtime_window.seconds}"
            index, delay = booked_running_time(verdict.runtime_window, now, self._taken(field, booking), estimate,
                                               self._rand)
            _add(booking, field, index, estimate)
            if self._windows:   # and a call place in it
                delay = self._call_place(booking, now, index * verdict.runtime_window.seconds)
        else:
            return verdict
        return Wait(delay, verdict.reason)

    def _call_place(self, booking: dict[str, dict[int, float]], now: datetime, not_before: int) -> float:
        """A hunt booked into a later running-time window also takes a place in one of its call windows (the
        shortest kind: the first from the window's start with places left), and comes back then. The copies
        booked into a running-time window so come back spread over its call windows, as they can be admitted,
        rather than all at its start, where most would meet a full call window and be booked again (a run each)
        while holding every worker's slots. The delay until that call window opens."""
        window = min(self._windows, key=lambda w: w.seconds)
        field = f"q{window.seconds}"
        index, delay = booked(window, now, self._taken(field, booking), self._rand, not_before=not_before)
        _add(booking, field, index, 1)
        return delay

    def _taken(self, field: str, booking: dict[str, dict[int, float]]) -> dict[int, float]:
        """The places taken in each later window of a booking field: the others' as read, this process's, and
        this batch's so far."""
        taken = dict(self._others.get(field, {}))
        for places in (self._mine.get(field, {}), booking.get(field, {})):
            for index, amount in places.items():
                taken[index] = taken.get(index, 0.0) + amount
        return taken

    def _book(self, booking: dict[str, dict[int, float]], now: datetime) -> None:
        """This batch's places, written to this process's booking row with the ones it still holds (passed ones
        dropped). The row has no other writer: the write replaces it, unconditionally. A write storage refuses
        changes no hunt's fate (a booking only spreads hunts out): the places are kept, and the next write
        carries them."""
        mine = {field: self._ahead(field, places, now) for field, places in self._mine.items()}
        for field, places in booking.items():
            for index, amount in places.items():
                _add(mine, field, index, amount)
        self._mine = {field: places for field, places in mine.items() if places}
        try:
            self._table.upsert_entity({"PartitionKey": self._key, "RowKey": self._row,
                                       **{field: bookings_text(places) for field, places in self._mine.items()}},
                                      mode=UpdateMode.REPLACE)
        except AzureError as error:
            logger.warning("quota gate %s: the booking row could not be written (%s); its places are kept for the "
                           "next write", self._key, type(error).__name__)

    def _write(self, state: dict[str, Any]) -> bool:
        """Create the entity, or replace the kept copy if nobody changed it since; False (and forget it) on a
        conflict. Any other storage error propagates with the kept copy forgotten."""
        entity = {**state, "PartitionKey": self._key, "RowKey": STATE_ROW}
        self._state = None
        try:
            if self._etag is None:
                reply = self._table.create_entity(entity, **NO_ENTITY_ECHO)
            else:
                reply = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=self._etag,
                                                  match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            self._contended_until = time.monotonic() + CONTENDED_SECONDS
            return False
        self._state, self._etag = state, reply["etag"]
        self._kept_at = time.monotonic()
        return True


def _add(places: dict[str, dict[int, float]], field: str, index: int, amount: float) -> None:
    window = places.setdefault(field, {})
    window[index] = window.get(index, 0.0) + amount


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


class QuotaGates:
    """One QuotaGate per API and tenant, over one table: the home tenant's (keyed by AZURE_TENANT_ID, with the
    relay's windows) and each customer tenant's (keyed `<api>-tenant-<name>`, with its own `quota`), so that one
    tenant's budget and pauses never touch another's. `usage()` reads every gate for operators, changing nothing."""

    def __init__(self, table: TableClient, settings: Settings, *, clock: Callable[[], datetime],
                 rand: Callable[[], float]) -> None:
        self._table = table
        self._clock = clock
        self._settings = settings
        self._windows = _windows(settings.quota_windows)
        self._home = re.sub(r"[^A-Za-z0-9-]", "-", settings.tenant_id or "tenant")
        self._gates: dict[tuple[str, str | None], QuotaGate] = {}
        self._lock = threading.Lock()
        self._rand = rand

    def ensure_table(self) -> None:
        create_if_missing(self._table.create_table, "the quota gate table")

    def _gate(self, api: str, tenant: TenantConfig | None) -> QuotaGate:
        key = (api, None if tenant is None else tenant.name)
        with self._lock:
            if key not in self._gates:
                name, windows = self._key_of(api, tenant)
                self._gates[key] = QuotaGate(self._table, key=name, windows=windows, clock=self._clock,
                                             rand=self._rand, runtime=self._runtime_of(tenant))
            return self._gates[key]

    def _runtime_of(self, tenant: TenantConfig | None) -> list[RuntimeWindow]:
        """The running-time budget: the tenant's own `runtime_budget`, else HUNT_RUNTIME_BUDGET."""
        pairs = tenant.runtime_budget if tenant is not None and tenant.runtime_budget is not None \
            else self._settings.runtime_budget
        return [RuntimeWindow(seconds=seconds, budget=budget) for budget, seconds in pairs]

    def _key_of(self, api: str, tenant: TenantConfig | None) -> tuple[str, list[Window]]:
        """The gate's entity key (PartitionKey) and its windows."""
        if tenant is None:
            return f"{api}-{self._home}", self._windows
        return f"{api}-tenant-{tenant.name}", _windows(tenant.quota_windows) if tenant.quota_windows else self._windows

    def usage(self) -> list[GateUsage]:
        """Every gate as it holds now, read-only: each gate of the settings (the API hunts run on by default, for
        the home tenant or, with HUNT_TENANTS, for each tenant), used or not, and every other gate that has an
        entity (another API, a tenant removed). Home first, then tenants by name; APIs in their order."""
        now = self._clock()
        try:
            entities = {str(e["PartitionKey"]): dict(e) for e in self._table.query_entities(
                "RowKey eq @row", parameters={"row": STATE_ROW})}
        except ResourceNotFoundError:   # no table yet: no gate has admitted a call
            entities = {}
        tenants: list[TenantConfig | None] = [None, *sorted(self._settings.tenants.values(), key=lambda t: t.name)]
        default = {None if t is None else t.name: (t.api if t is not None and t.api else self._settings.api)
                   for t in tenants}
        found: list[GateUsage] = []
        for tenant in tenants:
            name = None if tenant is None else tenant.name
            for api in API_NAMES:
                key, windows = self._key_of(api, tenant)
                always = api == default[name] and (tenant is not None or not self._settings.tenants)
                if always or key in entities:
                    found.append(gate_usage(entities.pop(key, {}), windows, now, api=api, tenant=name, key=key))
        for key, state in sorted(entities.items()):   # gates no setting names any more
            api, _, rest = key.partition("-")
            stale = rest[len("tenant-"):] if rest.startswith("tenant-") else None
            found.append(gate_usage(state, self._windows, now, api=api, tenant=stale, key=key, configured=False))
        return found

    def admit(self, api: str, tenant: TenantConfig | None = None) -> Admit | Wait:
        return self._gate(api, tenant).admit()

    def throttled(self, api: str, seconds: float, tenant: TenantConfig | None = None) -> None:
        self._gate(api, tenant).pause_until(self._clock() + timedelta(seconds=seconds))

    def spent(self, api: str, seconds: float, tenant: TenantConfig | None = None, *, reserved: float = 0.0,
              learn: bool = True) -> None:
        """A call's running time, once it answered (shared.core.quota: r<seconds>_used)."""
        self._gate(api, tenant).spent(seconds, reserved, learn=learn)


def _windows(pairs: Sequence[tuple[int, int]]) -> list[Window]:
    return [Window(seconds=seconds, limit=calls) for calls, seconds in pairs]
