"""The job ledger: one table entity per job (HUNT_JOBS_TABLE), updated at every transition of every hunt, however it
arrived (shared.core.job_states has the states).

    PartitionKey  the hunt's tenant (`_home` for the home tenant), RowKey its job id
    status, updated_at, submitted_at, next_attempt_at, location, error_code, api, attempts,
    request_sha256 (HuntRequest.digest: what makes a re-submission the same hunt), expires_at

Writers:
    submit(request)        the HTTP front door: create-only "queued"; an existing entity is returned instead
    begin(request)         the processor, before anything else: "running" (one write for a hunt that came by
                           queue; an HTTP submission's is written with If-Match on what it read, so that a cancel
                           in between is never overwritten); whether the job was seen before, or cancelled. A hunt
                           that began before (a later attempt, a copy the quota gate sent back) begins only once
                           the gate lets it call: sent back again, its one write is the outcome's
    cancel(tenant, id)     a queued hunt only, with If-Match: "cancelled"
    the observer           (LedgerObserver) after every handled message: the outcome's state, one merge write

An entity is kept for HUNT_JOB_RETENTION after its last update (`expires_at`): readers treat an expired entity as
gone, and a sweep deletes them now and then (one writer in a hundred sweeps its partition). The ledger never holds
query text, rows or secrets: ids, states, times, locations and error codes only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage import NO_ENTITY_ECHO, create_if_missing
from shared.core.envelope import iso
from shared.core.hunt_request import HuntRequest
from shared.core.job_states import FINISHED, HOME_PARTITION, Begun, JobState, partition_of, state_of
from shared.core.outcome import Cause, MessageInfo, Outcome

logger = logging.getLogger(__name__)

SWEEP_CHANCE = 0.01
MAX_PARTITIONS_IN_FILTER = 10   # Table storage allows 15 comparisons in a filter; more tenants filter here
_CLEARED = {"next_attempt_at": "", "location": "", "error_code": ""}
MAX_CONFLICTS = 10


@dataclass(frozen=True)
class JobRecord:
    tenant: str | None
    id: str
    status: str
    updated_at: datetime
    submitted_at: datetime | None = None
    next_attempt_at: datetime | None = None
    location: str | None = None
    error_code: str | None = None
    api: str | None = None
    attempts: int | None = None
    request_sha256: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def as_dict(self) -> dict[str, Any]:
        found = {"id": self.id, "status": self.status, **({"tenant": self.tenant} if self.tenant else {}),
                 "updated_at": iso(self.updated_at)}
        for name in ("submitted_at", "next_attempt_at"):
            value = getattr(self, name)
            if value is not None:
                found[name] = iso(value)
        for name in ("location", "error_code", "api", "attempts"):
            if getattr(self, name) is not None:
                found[name] = getattr(self, name)
        return found


class JobLedger:
    def __init__(self, table: TableClient, *, clock: Callable[[], datetime], retention_seconds: float,
                 rand: Callable[[], float] = random.random) -> None:
        self._table = table
        self._clock = clock
        self._retention = timedelta(seconds=retention_seconds)
        self._rand = rand

    def ensure_table(self) -> None:
        create_if_missing(self._table.create_table, "the job ledger table")

    # --- reading ---------------------------------------------------------------------------------------------

    def get(self, tenant: str | None, job_id: str) -> JobRecord | None:
        entity = self._entity(tenant, job_id)
        return None if entity is None else _record(entity)

    def _entity(self, tenant: str | None, job_id: str) -> Any:
        try:
            entity = self._table.get_entity(partition_of(tenant), job_id)
        except ResourceNotFoundError:
            return None
        expires = _as_datetime(entity.get("expires_at"))
        return None if expires is not None and expires < self._clock() else entity

    def list(self, tenants: list[str | None], *, status: str | None, since: datetime | None, page_size: int,
             continuation: str | None) -> tuple[list[JobRecord], str | None]:
        """One page of the tenants' jobs, in the table's order (partition, then id); the token continues where the
        page ended."""
        partitions = {partition_of(t) for t in tenants}
        filters = ["expires_at ge @now"]
        if len(partitions) <= MAX_PARTITIONS_IN_FILTER:
            filters.insert(0, "(" + " or ".join(f"PartitionKey eq '{p}'" for p in sorted(partitions)) + ")")
        parameters: dict[str, Any] = {"now": self._clock()}
        if status is not None:
            filters.append("status eq @status")
            parameters["status"] = status
        if since is not None:
            filters.append("updated_at ge @since")
            parameters["since"] = since
        pages = self._table.query_entities(" and ".join(filters), parameters=parameters,
                                           results_per_page=page_size).by_page(
            continuation_token=_decode_token(continuation))
        page: list[Any] = list(next(pages, []))
        records = [_record(entity) for entity in page if entity["PartitionKey"] in partitions]
        token = getattr(pages, "continuation_token", None)
        return records, _encode_token(token) if token else None

    def updated_since(self, tenants: Sequence[str | None], since: datetime, *,
                      limit: int = 10_000) -> tuple[JobRecord, ...]:
        """The tenants' jobs updated since `since` (at most `limit`, in the table's order): what the ops page counts
        by state."""
        partitions = {partition_of(t) for t in tenants}
        filters = ["updated_at ge @since", "expires_at ge @now"]
        if len(partitions) <= MAX_PARTITIONS_IN_FILTER:
            filters.insert(0, "(" + " or ".join(f"PartitionKey eq '{p}'" for p in sorted(partitions)) + ")")
        found = []
        for entity in self._table.query_entities(" and ".join(filters), parameters={"since": since,
                                                                                   "now": self._clock()}):
            if entity["PartitionKey"] in partitions:
                found.append(_record(entity))
                if len(found) >= limit:
                    break
        return tuple(found)

    # --- writing ---------------------------------------------------------------------------------------------

    def submit(self, request: HuntRequest, api: str) -> tuple[JobRecord, bool]:
        """The queued entity for an HTTP submission, created; or the existing one (created False)."""
        now = self._clock()
        entity = {"PartitionKey": partition_of(request.tenant), "RowKey": request.id, "status": "queued",
                  "updated_at": now, "submitted_at": now, "api": api, "attempts": 0,
                  "request_sha256": request.digest(), "expires_at": now + self._retention}
        try:
            self._table.create_entity(entity, **NO_ENTITY_ECHO)
        except ResourceExistsError:
            existing = self._entity(request.tenant, request.id)
            if existing is not None:
                return _record(existing), False
            self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)   # an expired one: replaced
        return _record(entity), True

    def forget(self, tenant: str | None, job_id: str) -> None:
        """Deletes a job's entity: a submission whose message could not be queued."""
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(partition_of(tenant), job_id)

    def begin(self, request: HuntRequest) -> Begun:
        """The hunt is running; CANCELLED (and nothing written) when it was cancelled before it ran.

        One write in the common cases: a first attempt that came by queue creates its entity (create-only), and a
        later attempt or a copy the quota gate sent back (both began before, and so cannot have been cancelled:
        only a queued hunt can be) merges its state. Only a first attempt whose entity exists (an HTTP submission,
        a redelivered message) reads it, and writes with If-Match on what it read, so that a cancel in between is
        never overwritten.

        FIRST_SIGHT is the create-only write succeeding: no entity of this job was within its retention, so no
        run of it can have delivered a result (a run begins here first), and the processor need not look."""
        now = self._clock()
        partition = partition_of(request.tenant)
        update: dict[str, Any] = {"PartitionKey": partition, "RowKey": request.id, "status": "running",
                                  "updated_at": now, "api": request.api, "attempts": request.attempt,
                                  "request_sha256": request.digest(), "expires_at": now + self._retention}
        if request.began_before:
            self._table.upsert_entity(update, mode=UpdateMode.MERGE)
            return Begun.SEEN
        for _ in range(MAX_CONFLICTS):
            try:
                self._table.create_entity({**update, "submitted_at": request.first_enqueued_at or now},
                                          **NO_ENTITY_ECHO)
                return Begun.FIRST_SIGHT
            except ResourceExistsError:
                pass
            try:
                current = self._table.get_entity(partition, request.id)
            except ResourceNotFoundError:
                continue
            same_request = current.get("request_sha256") == update["request_sha256"]
            if current.get("status") == "cancelled" and same_request:
                return Begun.CANCELLED
            try:   # another request under this id (not the one cancelled or submitted) starts the entity afresh
                fresh = {**update, **_CLEARED, "submitted_at": request.first_enqueued_at or now}
                self._table.update_entity(update if same_request else fresh, etag=current.metadata[
                    "etag"], mode=UpdateMode.MERGE if same_request else UpdateMode.REPLACE,
                    match_condition=MatchConditions.IfNotModified)
                return Begun.SEEN
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        logger.warning("hunt %s: the job ledger entity kept changing; running it", request.id)
        return Begun.SEEN

    def cancel(self, tenant: str | None, job_id: str) -> JobRecord | None:
        """Cancels a queued hunt; returns the entity as it is after (None: unknown). A hunt that is not queued is
        returned unchanged (the caller answers 409)."""
        for _ in range(MAX_CONFLICTS):
            current = self._entity(tenant, job_id)
            if current is None or current.get("status") != "queued":
                return None if current is None else _record(current)
            now = self._clock()
            update = {"PartitionKey": partition_of(tenant), "RowKey": job_id, "status": "cancelled",
                      "updated_at": now, "expires_at": now + self._retention}
            try:
                self._table.update_entity(update, mode=UpdateMode.MERGE, etag=current.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                return _record({**current, **update})
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        return self.get(tenant, job_id)

    def record(self, tenant: str | None, job_id: str, state: JobState, *, only_if_absent: bool = False) -> None:
        """The state after a handled message. Fields a state does not have are cleared (a merge keeps what it is
        not given). `only_if_absent`: a message that was not a valid hunt never overwrites a job's entity."""
        now = self._clock()
        entity: dict[str, Any] = {"PartitionKey": partition_of(tenant), "RowKey": job_id, "status": state.status,
                                  "updated_at": now, "expires_at": now + self._retention,
                                  "next_attempt_at": state.next_attempt_at or "", "location": state.location or "",
                                  "error_code": state.error_code or ""}
        if only_if_absent:
            with contextlib.suppress(ResourceExistsError):
                self._table.create_entity(entity, **NO_ENTITY_ECHO)
            return
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)
        if self._rand() < SWEEP_CHANCE:
            self._sweep(entity["PartitionKey"], now)

    def _sweep(self, partition: str, now: datetime) -> None:
        expired = self._table.query_entities("PartitionKey eq @p and expires_at lt @now",
                                             parameters={"p": partition, "now": now}, select=["RowKey"])
        for entity in expired:
            with contextlib.suppress(ResourceNotFoundError):
                self._table.delete_entity(partition, entity["RowKey"])


class LedgerObserver:
    """The outcome of every handled message, as the ledger's state of its job (shared.core.outcome.Observer).
    A write that fails is tried once more: a lost terminal state would leave the job `running` to its pollers."""

    def __init__(self, ledger: JobLedger, clock: Callable[[], datetime]) -> None:
        self._ledger = ledger
        self._clock = clock

    def __call__(self, outcome: Outcome, message: MessageInfo) -> None:
        rejected = outcome.cause in (Cause.REJECTED,) or outcome.error_code == "Unreadable"
        for tries_left in (1, 0):
            try:
                self._ledger.record(outcome.tenant, outcome.job_id, state_of(outcome, self._clock()),
                                    only_if_absent=rejected)
                return
            except AzureError:
                if not tries_left:
                    raise


def _record(entity: Any) -> JobRecord:
    partition = str(entity["PartitionKey"])
    attempts = entity.get("attempts")
    return JobRecord(
        tenant=None if partition == HOME_PARTITION else partition, id=str(entity["RowKey"]),
        status=str(entity.get("status")), updated_at=_as_datetime(entity.get("updated_at")) or datetime.now(UTC),
        submitted_at=_as_datetime(entity.get("submitted_at")),
        next_attempt_at=_as_datetime(entity.get("next_attempt_at")), location=entity.get("location") or None,
        error_code=entity.get("error_code") or None, api=entity.get("api"),
        attempts=int(attempts) if isinstance(attempts, int) else None, request_sha256=entity.get("request_sha256"))


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None



def _encode_token(token: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode().rstrip("=")


def _decode_token(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        raise ValueError("the continuation token is not one this API gave") from None
