"""What happened to one queue message: an Outcome with a typed cause, the value observers receive.

    cause            status      what happened
    delivered        delivered   the result reached its destination (or a delivery-only retry delivered it)
    duplicate        duplicate   the job was delivered already; the redelivered message was completed
    throttled        requeued    the API answered 429: a copy waits for the quota's reset
    transient        requeued    a 5xx, a timeout, a reset, a broken stream: a copy waits a backoff
    gate_wait        requeued    the fleet's quota gate said not now: the same attempt waits, no call spent
    delivery_retry   requeued    the destination did not take the result: a delivery-only copy waits
    failed           failed      the hunt cannot succeed (`error_code` says why): a dead-letter record, and a
                                 failure envelope where a destination resolves
    poison           failed      the host gave up on the message after max dequeues: recorded, never run
    rejected         rejected    not a valid hunt request: a dead-letter record

The relay hands each Outcome to its observers (shared.app.observers) once the queue message's fate is decided:
the copy enqueued or the record written. Pure values: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

Status = Literal["delivered", "failed", "requeued", "rejected", "duplicate", "cancelled"]


class Cause(StrEnum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    GATE_WAIT = "gate_wait"
    DELIVERY_RETRY = "delivery_retry"
    SPLIT_CONTINUES = "split_continues"
    CANCELLED = "cancelled"
    FAILED = "failed"
    POISON = "poison"
    REJECTED = "rejected"


_STATUS: dict[Cause, Status] = {
    Cause.DELIVERED: "delivered", Cause.DUPLICATE: "duplicate", Cause.THROTTLED: "requeued",
    Cause.TRANSIENT: "requeued", Cause.GATE_WAIT: "requeued", Cause.DELIVERY_RETRY: "requeued",
    Cause.SPLIT_CONTINUES: "requeued", Cause.CANCELLED: "cancelled",
    Cause.FAILED: "failed", Cause.POISON: "failed", Cause.REJECTED: "rejected",
}


@dataclass(frozen=True)
class MessageInfo:
    """The queue message as it arrived: its bytes, the queue's id for it, and how often it was dequeued."""

    raw: bytes
    message_id: str
    dequeue_count: int | None = None


AttributeValue = str | int | float | bool


@dataclass(frozen=True)
class Step:
    """One timed step of a hunt's handling (`gate`, `token`, `api_call`, `delivery`): when it began and ended
    (nanoseconds since the epoch) and what it did, in attributes that never hold secrets, rows or query text."""

    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Timing:
    """When the relay handled the message, and its steps in order (recorded only while telemetry is on)."""

    start_ns: int
    end_ns: int
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Outcome:
    job_id: str
    cause: Cause
    detail: str = ""                # the error code of a failure, the reason of a requeue, else a note
    api: str | None = None
    rows: int | None = None
    location: str | None = None     # where the result (or the failure envelope) went
    delay: float | None = None      # how long a requeued copy waits
    error_code: str | None = None   # failed, poison, rejected: the code in the dead-letter record
    tenant: str | None = None       # the customer tenant of the hunt (shared.core.tenants), when it has one
    bytes: int | None = None        # delivered: the size of what the destination received
    attempt: int | None = None      # the hunt's attempt (a valid hunt request)
    first_enqueued_at: datetime | None = None
    timing: Timing | None = None    # set by the relay while telemetry is on (shared.app.steps)

    @property
    def status(self) -> Status:
        return _STATUS[self.cause]


class Observer(Protocol):
    """Sees every handled message's Outcome, once, after its fate is decided (a job ledger, telemetry, counters).
    An observer that raises is logged and skipped: it never changes what happened to the message."""

    def __call__(self, outcome: Outcome, message: MessageInfo) -> None: ...
