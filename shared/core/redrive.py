"""Redrive, pure: which dead-letter records an operator chose, what each one becomes, and the fresh hunt it is sent
as (`python -m shared redrive`; the storage side is shared.app.redrive).

Names in the dead-letter container (shared.adapters.dead_letters), under a tenant's scope (`tenants/<name>/`):

    <yyyy>/<mm>/<dd>/<key>.json                         a record, as the relay wrote it
    redriven/<yyyy>/<mm>/<dd>/<key>.<stamp>.json        the same record once redriven (the journal entry; `stamp`
                                                        is its dead_lettered_at, so one record has one entry),
                                                        with `redrive`: {at, kind, enqueued_at, failure_envelope}
    redriven/<yyyy>/<mm>/<dd>/<key>.<stamp>.failed.json a blob destination's failure envelope, moved aside

Anything else there (skipped schedule slots) is not a record. A record's code is its `reason` (the failure code:
`GaveUp`, `QueryError`, `Poison` ...).

`decide` says what a chosen record becomes: a hunt run again (`Redrive("hunt")`), its kept body sent again
(`Redrive("kept")`), or `Skip(reason)`. `fresh` is the hunt as a first attempt: the relay-kept fields dropped, so it
gets all its attempts and its whole age again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from shared.core.hunt_request import HuntRequest

JOURNAL = "redriven/"
_NAME = re.compile(r"(?:tenants/(?P<tenant>[a-z0-9-]{1,32})/)?(?P<journal>redriven/)?"
                   r"(?P<day>\d{4}/\d{2}/\d{2})/(?P<file>[A-Za-z0-9][A-Za-z0-9_.-]*)\.json")
# Codes whose hunt cannot succeed as it was sent: redriving them would only fail again.
NOT_REDRIVABLE = {
    "InvalidHuntRequest": "rejected: the message is not a valid hunt request and cannot succeed as sent; fix it and "
                          "send it as a new message",
    "Unreadable": "the message could not be read as a hunt; its raw bytes are in the record",
    "Conflict": "another request under this job id waited for its delivery; send this one again under its own id",
}
UNFINISHED = ("queued", "running", "throttled", "retrying")


@dataclass(frozen=True)
class RecordName:
    name: str
    tenant: str | None
    day: date
    file: str        # the file name without `.json`: `<key>` (a record) or `<key>.<stamp>` (a journal entry)
    journal: bool


def parse_record_name(name: str) -> RecordName | None:
    """A dead-letter record's or journal entry's name, or None for any other blob (a failure envelope moved
    aside, a skipped schedule slot)."""
    found = _NAME.fullmatch(name)
    if found is None or found["file"].endswith(".failed"):
        return None
    try:
        day = datetime.strptime(found["day"], "%Y/%m/%d").date()
    except ValueError:
        return None
    return RecordName(name, found["tenant"], day, found["file"], found["journal"] is not None)


def journal_name(record: RecordName, dead_lettered_at: str) -> str:
    """Where a record goes once redriven: one name per record (its time), so a second failure of the same job on
    the same day, recorded again under `<date>/<key>.json`, is redriven to a name of its own."""
    stamp = re.sub(r"[^0-9TZ]", "", dead_lettered_at) or "unknown"
    scope = f"tenants/{record.tenant}/" if record.tenant else ""
    return f"{scope}{JOURNAL}{record.day:%Y/%m/%d}/{record.file}.{stamp}.json"


def envelope_archive_name(journal: str) -> str:
    return journal.removesuffix(".json") + ".failed.json"


def parse_when(text: str, *, end_of_day: bool = False) -> datetime:
    """`2026-12-01` (the day's start, or with `end_of_day` its end) or an ISO 8601 time (UTC when it names no
    zone); ValueError naming the forms."""
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(), UTC)
            return moment + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else moment
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (2026-12-01) or an ISO 8601 time (2026-12-01T10:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    """The records an operator chose. With no filter at all nothing is chosen, unless `everything`."""

    codes: frozenset[str] = frozenset()
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: frozenset[str] = frozenset()
    everything: bool = False

    @property
    def filtered(self) -> bool:
        return bool(self.codes or self.tenant or self.since or self.until or self.ids)

    def may_hold(self, name: RecordName) -> bool:
        """By the name alone (before the record is read): its tenant and day, and the id it is named after."""
        if self.tenant is not None and name.tenant != self.tenant:
            return False
        if self.since is not None and name.day < self.since.astimezone(UTC).date():
            return False
        if self.until is not None and name.day > self.until.astimezone(UTC).date():
            return False
        return not self.ids or any(name.file == i or name.file.startswith(i + ".") for i in self.ids)

    def matches(self, record: Mapping[str, Any]) -> bool:
        if self.codes and code_of(record) not in self.codes:
            return False
        if self.ids and record.get("key") not in self.ids:
            return False
        if self.tenant is not None and record.get("tenant") != self.tenant:
            return False
        if self.since is None and self.until is None:
            return True
        at = recorded_at(record)
        return at is not None and (self.since is None or at >= self.since) and (self.until is None or at <= self.until)


def code_of(record: Mapping[str, Any]) -> str:
    error = record.get("error")
    code = record.get("reason") or (error.get("code") if isinstance(error, dict) else None)
    return str(code or "")


def recorded_at(record: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_when(str(record["dead_lettered_at"]))
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class Redrive:
    kind: Literal["hunt", "kept"]   # run the hunt again, or send its kept body again (no query, no quota)


@dataclass(frozen=True)
class Skip:
    reason: str
    ran: bool = False   # the job ledger saw the hunt run since it was redriven: its journal entry is settled


@dataclass(frozen=True)
class Facts:
    """What storage says about a chosen record's job."""

    record: Mapping[str, Any]
    request: HuntRequest | None       # the recorded message as a hunt (None: it is not one now)
    invalid: str = ""                 # why it is not (a field name, never a value)
    kept: Literal["waiting", "sent"] | None = None   # the job's kept delivery (shared.delivery.pending)
    ledger_status: str | None = None
    ledger_updated_at: datetime | None = None
    interrupted: bool = False   # a journal entry not done: its run was cut short, maybe before the enqueue
    redriven_at: datetime | None = None   # that run's time


def decide(facts: Facts, *, kept_only: bool) -> Redrive | Skip | None:
    """What the record becomes; None: not a candidate of this run (`--kept` and no kept body waits)."""
    code = code_of(facts.record)
    if code in NOT_REDRIVABLE:
        return None if kept_only else Skip(NOT_REDRIVABLE[code])
    if facts.request is None:
        return None if kept_only else Skip(f"the recorded message is no longer a valid hunt here ({facts.invalid})")
    if kept_only and facts.kept != "waiting":
        return None
    at = recorded_at(facts.record)
    status, updated = facts.ledger_status, facts.ledger_updated_at
    if facts.interrupted and status not in (None, "queued") and updated is not None and \
            facts.redriven_at is not None and updated > facts.redriven_at:
        return Skip(f"the redriven hunt was enqueued and has run since (job ledger: {status})", ran=True)
    if status in UNFINISHED and not (facts.interrupted and status == "queued"):
        return Skip(f"the job is {status} (job ledger): it is on its way already")
    if status == "delivered" and updated is not None and at is not None and updated > at:
        return Skip(f"the job was delivered after this record (job ledger, {updated:%Y-%m-%dT%H:%M:%SZ})")
    if kept_only:
        return Redrive("kept")
    if facts.kept == "waiting":
        return Skip("its result or failure envelope is kept for delivery: `redrive --kept` sends it again without "
                    "running the query")
    return Redrive("hunt")


def fresh(request: HuntRequest, now: datetime, *, delivery_only: bool = False) -> HuntRequest:
    """The hunt as a first attempt enqueued `now`: every relay-kept field dropped (attempt, first enqueue, last
    error, a delivery-only mark; the mark itself is made afresh when it is encoded). `delivery_only`: the copy
    that sends the job's kept body again."""
    first = replace(request, attempt=1, first_enqueued_at=now, last_error=None, pending_delivery=None, dropped=(),
                    requested_api=None, warnings=())
    return first.delivery_only() if delivery_only else first
