"""Redrive: hunts that ended in a dead-letter record sent again under their own job ids, as fresh first attempts
(`python -m shared redrive`). The choice and the rules are pure (shared.core.redrive); this carries them out.

For each chosen record, in this order, each step safe to repeat:

    1. a blob destination's failure envelope (`<id>.failed.json`) is copied beside the record's journal entry and
       deleted, so the hunt run again is not answered by the old failure, and a new failure can be written
       (failure envelopes are create-only). Before the enqueue: afterwards the new run could write its own
       envelope first, and deleting would then remove the new one.
    2. the journal entry `redriven/<date>/<key>.<stamp>.json`: the record, with `redrive` {at, kind, done: false}
       (create-only)
    3. the job ledger entry: `queued` (before the enqueue, so a worker's `running` is never overwritten)
    4. the record deleted: its name `<date>/<key>.json` is free for a new failure of the same job (records are
       create-only). Before the enqueue, for the same reason as 1.
    5. the hunt enqueued, marked as the relay's copy: attempt 1, first enqueued now; or `--kept`: the
       delivery-only copy, which sends the kept body to the same destination with the same webhook-id, without
       a query or a quota call
    6. the journal entry: done, with `enqueued_at`

A crash before 5 leaves the journal entry not done: the next redrive enqueues it (nothing is lost). A crash
between 5 and 6 may enqueue it twice; the job id makes that harmless (a blob result is create-only and a second
copy finds it delivered; a webhook receiver drops the repeated webhook-id; a kept body is sent once, then marked
sent), and the next redrive first asks the job ledger whether the hunt is on its way or delivered. A record is
redriven at most once: once done, its entry is never chosen again.

A message still on the poison queue has no record yet: the poison handler (the Function's poison trigger, or the
worker) writes one within seconds. It is listed as skipped, never taken from the queue here, which would race the
handler and could run the hunt twice.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.app.relay import Relay
from shared.core.envelope import iso
from shared.core.errors import InvalidHuntRequest
from shared.core.hunt_request import HuntRequest, decode_hunt_request, message_json
from shared.core.job_states import JobState
from shared.core.redrive import (
    Facts,
    RecordName,
    Redrive,
    Selection,
    Skip,
    code_of,
    decide,
    envelope_archive_name,
    fresh,
    journal_name,
    parse_record_name,
    parse_when,
)
from shared.core.tenants import check_tenant, scope_of
from shared.delivery.blob import BlobDestination, BlobSink
from shared.delivery.pending import Kept, PendingDeliveries, Sent
from shared.delivery.targets import Target, resolve_destination

logger = logging.getLogger(__name__)

POISON_PEEK = 32   # the most messages a queue peek returns
POISON_WAITING = ("on the poison queue, not yet recorded: the poison handler records it within seconds (the "
                  "Function's poison trigger, or `python -m shared worker`); redrive it then")


class Redriver:
    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._settings = relay.settings
        self._records = relay.dead_letters
        self._pending = PendingDeliveries(relay.container(relay.settings.results_container))

    def run(self, selection: Selection, *, kept_only: bool = False, dry_run: bool = False) -> Iterator[dict[str, Any]]:
        """One line per chosen record (and per poison message waiting): what was done, or would be, or why not."""
        handled: set[str] = set()
        for blob in self._records.names(scope_of(selection.tenant) if selection.tenant else ""):
            name = parse_record_name(blob)
            if name is None or blob in handled or not selection.may_hold(name):
                continue
            record = self._records.load(blob)
            if record is None:
                continue
            step = record.get("redrive") if name.journal else None
            if name.journal and (not isinstance(step, dict) or step.get("done")):
                continue   # redriven already: chosen once only
            journal = blob if name.journal else journal_name(name, str(record.get("dead_lettered_at", "")))
            if not name.journal:   # a redrive cut short before it removed the record: its entry resumes it
                entry = self._records.load(journal)
                started = entry.get("redrive") if entry is not None else None
                if isinstance(started, dict):
                    if started.get("done"):
                        continue
                    step = started
            handled.add(journal)
            original = {k: v for k, v in record.items() if k != "redrive"}
            if not selection.matches(original):
                continue
            line = self._one(name, original, journal, step, kept_only=kept_only, dry_run=dry_run)
            if line is not None:
                yield line
        if not kept_only:
            yield from self._poison_waiting(selection)

    def _one(self, name: RecordName, record: dict[str, Any], journal: str, step: dict[str, Any] | None, *,
             kept_only: bool, dry_run: bool) -> dict[str, Any] | None:
        facts = self._facts(record, step)
        verdict = decide(facts, kept_only=kept_only)
        if verdict is None:
            return None
        line = {"id": record.get("key"), "tenant": record.get("tenant"), "code": code_of(record),
                "dead_lettered_at": record.get("dead_lettered_at"), "record": self._records.location(name.name),
                **({"resumed": True} if step is not None else {})}   # a redrive cut short, finished now
        if isinstance(verdict, Skip):
            if step is not None and verdict.ran and not dry_run:
                self._settle(journal, record, step, verdict.reason)
            return {"action": "skipped", **line, "reason": verdict.reason}
        assert facts.request is not None
        if dry_run:
            return {"action": "would-redrive", "kind": verdict.kind, **line}
        self._redrive(name, record, facts.request, verdict, journal, step)
        logger.info("hunt %s: redriven (%s) from %s", facts.request.id, verdict.kind, line["record"])
        return {"action": "redriven", "kind": verdict.kind, **line, "journal": self._records.location(journal)}

    def _facts(self, record: dict[str, Any], step: dict[str, Any] | None) -> Facts:
        interrupted = step is not None
        redriven_at = _when(step.get("at")) if step is not None else None
        try:
            request = self._request_of(record)
        except InvalidHuntRequest as error:
            return Facts(record, None, invalid=f"field {error.field!r}" if error.field else "the message",
                         interrupted=interrupted, redriven_at=redriven_at)
        kept = self._pending.load(request)
        entry = self._relay.jobs.get(request.tenant, request.id) if self._relay.jobs is not None else None
        return Facts(record, request, kept="waiting" if isinstance(kept, Kept) else "sent" if isinstance(kept, Sent)
                     else None, ledger_status=entry.status if entry else None,
                     ledger_updated_at=entry.updated_at if entry else None, interrupted=interrupted,
                     redriven_at=redriven_at)

    def _request_of(self, record: dict[str, Any]) -> HuntRequest:
        """The recorded message as a hunt, read as a producer's (no mark: the relay's own fields are dropped)."""
        message = record.get("message")
        raw = _raw_of(message if isinstance(message, dict) else {})
        request = decode_hunt_request(
            raw, message_id=str(record.get("message_id") or record.get("key") or "redrive"),
            default_api=self._settings.api, now=self._relay.clock(), default_tenant=record.get("tenant"),
            tenant_apis={name: t.api for name, t in self._settings.tenants.items() if t.api is not None})
        check_tenant(request.tenant, self._settings.tenants)
        return request

    def _redrive(self, name: RecordName, record: dict[str, Any], request: HuntRequest, how: Redrive, journal: str,
                 step: dict[str, Any] | None) -> None:
        now = self._relay.clock()
        archived = self._archive_failure_envelope(request, journal) if how.kind == "hunt" else None
        entry = {**record, "redrive": {**(step or {"at": iso(now)}), "kind": how.kind, "done": False,
                                       "failure_envelope": archived}}
        self._records.put(journal, entry)   # create-only: an interrupted run's entry stays as it was
        if self._relay.jobs is not None:
            self._relay.jobs.record(request.tenant, request.id, JobState("queued"))
        if not name.journal:
            self._records.remove(name.name)
        copy = fresh(request, now, delivery_only=how.kind == "kept")
        self._relay.hunt_queue.send_message(copy.to_message(self._relay.mark))
        entry["redrive"].update(done=True, enqueued_at=iso(self._relay.clock()))
        self._records.put(journal, entry, create_only=False)

    def _settle(self, journal: str, record: dict[str, Any], step: dict[str, Any], reason: str) -> None:
        self._records.put(journal, {**record, "redrive": {**step, "done": True, "settled": reason}},
                          create_only=False)

    def _archive_failure_envelope(self, request: HuntRequest, journal: str) -> str | None:
        """The blob destination's failure envelope for this job, moved beside the journal entry; its location (or
        the one an earlier, interrupted run moved it to), or None when there is none."""
        tenant = self._settings.tenants.get(request.tenant) if request.tenant else None
        target = resolve_destination(request.destination, self._settings, tenant)
        if not isinstance(target, Target) or not isinstance(target.destination, BlobDestination):
            return None
        sink = self._relay.sink_for(target)
        if not isinstance(sink, BlobSink):
            return None
        archive = envelope_archive_name(journal)
        blob = self._relay.container(target.destination.container).get_blob_client(sink.failure_name(request.id))
        try:
            download = blob.download_blob()
            data = download.readall()
        except ResourceNotFoundError:
            return self._records.location(archive) if self._records.exists(archive) else None
        self._records.put(archive, data)
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):   # never one written since
            blob.delete_blob(etag=download.properties.etag, match_condition=MatchConditions.IfNotModified)
        return self._records.location(archive)

    def _poison_waiting(self, selection: Selection) -> Iterator[dict[str, Any]]:
        if selection.codes and "Poison" not in selection.codes:
            return
        try:
            messages = list(self._relay.poison_queue.peek_messages(max_messages=POISON_PEEK))
        except ResourceNotFoundError:
            return
        for message in messages:
            job_id, tenant = _id_and_tenant(message.content, self._settings.default_tenant)
            queued_at: datetime | None = message.inserted_on
            if selection.tenant is not None and tenant != selection.tenant:
                continue
            if selection.ids and job_id not in selection.ids:
                continue
            if queued_at is not None and ((selection.since and queued_at < selection.since)
                                          or (selection.until and queued_at > selection.until)):
                continue
            yield {"action": "skipped", "source": "poison-queue", "id": job_id or message.id, "tenant": tenant,
                   "code": "Poison", "queued_at": iso(queued_at) if queued_at else None, "reason": POISON_WAITING}


def _when(value: object) -> datetime | None:
    try:
        return parse_when(str(value))
    except ValueError:
        return None


def _raw_of(message: dict[str, Any]) -> bytes:
    if isinstance(message.get("text"), str):
        return str(message["text"]).encode("utf-8", "surrogatepass")
    if isinstance(message.get("base64"), str):
        return base64.b64decode(str(message["base64"]))
    raise InvalidHuntRequest("", "the record holds no message")


def _id_and_tenant(content: object, default_tenant: str | None) -> tuple[str | None, str | None]:
    try:
        body = message_json(content if isinstance(content, str | bytes) else "")
    except InvalidHuntRequest:
        return None, default_tenant
    job_id, tenant = body.get("id"), body.get("tenant", default_tenant)
    return (job_id if isinstance(job_id, str) else None), (tenant if isinstance(tenant, str) else None)
