"""The job ledger's states (shared.adapters.job_ledger): where a hunt is, whatever way it arrived.

    queued      accepted over HTTP, not yet taken by a worker (only a queued hunt can be cancelled)
    running     a worker holds it now
    throttled   back on the queue for the quota (a 429, or the fleet's quota gate): `next_attempt_at` says when
    retrying    back on the queue for a transient fault, a destination that said "not now", or a split hunt's next
                parts: `next_attempt_at` says when
    delivered   its result reached the destination (`location`)
    failed      it ended with a failure envelope or a dead-letter record (`error_code`)
    poison      the host gave up on the message; a dead-letter record holds it
    cancelled   cancelled before it ran; it ends without an API call

Pure: `state_of(outcome, now)` is the ledger's view of one handled message; `retry_after(state, now)` what a poller
is told to wait.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Literal

from shared.core.outcome import Cause, Outcome

JobStatus = Literal["queued", "running", "throttled", "retrying", "delivered", "failed", "poison", "cancelled"]
FINISHED: frozenset[str] = frozenset({"delivered", "failed", "poison", "cancelled"})
STATUS_ORDER: tuple[JobStatus, ...] = ("queued", "running", "throttled", "retrying", "delivered", "failed", "poison",
                                       "cancelled")
POLL_SECONDS = 2   # what a poller of an unfinished hunt that has no next attempt is told to wait
HOME_PARTITION = "_home"   # the home tenant's partition: no tenant name can be it (names hold no '_')


class Begun(Enum):
    """What the ledger answers as a hunt begins (JobLedger.begin)."""

    FIRST_SIGHT = "first_sight"   # its entity was created now: no run of this job can have delivered anything
    SEEN = "seen"                 # it was known (a retry, a redelivered message, an HTTP submission)
    CANCELLED = "cancelled"       # cancelled before it ran: it does not run


_STATUS_OF: dict[Cause, JobStatus] = {
    Cause.DELIVERED: "delivered", Cause.DUPLICATE: "delivered", Cause.THROTTLED: "throttled",
    Cause.GATE_WAIT: "throttled", Cause.TRANSIENT: "retrying", Cause.DELIVERY_RETRY: "retrying",
    Cause.SPLIT_CONTINUES: "retrying", Cause.FAILED: "failed", Cause.POISON: "poison", Cause.REJECTED: "failed",
    Cause.CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class JobState:
    status: JobStatus
    next_attempt_at: datetime | None = None
    location: str | None = None
    error_code: str | None = None


def state_of(outcome: Outcome, now: datetime) -> JobState:
    status = _STATUS_OF[outcome.cause]
    next_at = now + timedelta(seconds=outcome.delay) if outcome.delay is not None and status in (
        "throttled", "retrying") else None
    return JobState(status, next_at, outcome.location, outcome.error_code)


def partition_of(tenant: str | None) -> str:
    return HOME_PARTITION if tenant is None else tenant


def retry_after(status: str, next_attempt_at: datetime | None, now: datetime) -> int:
    """Whole seconds until the hunt's next attempt (at least 1), else a short poll."""
    if status in ("throttled", "retrying") and next_attempt_at is not None:
        return max(1, math.ceil((next_attempt_at - now).total_seconds()))
    return POLL_SECONDS
