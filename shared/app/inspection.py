"""`python -m shared inspect ID`: everything stored about one job, as one JSON document, under the job's tenant's
scope (shared.core.tenants), for an operator asking "what happened to job X?".

    ledger         the job ledger's entry (shared.adapters.job_ledger), "off" when there is no ledger
    blobs          in the results container and every blob destination's container the tenant may use, the blobs
                   named after the job: results, failure envelopes, links, split parts (name, size, type, times,
                   the envelope fields a csv or ndjson result carries as metadata; a failure envelope's error
                   code). Never their content: rows are customer data
    dead_letters   its records, any date, redriven ones included (their journal entries), each without the raw
                   message (which holds the query): its size instead
    kept_delivery  the body kept for a delivery-only retry: size, rows, when kept, when sent; not the body
    poison_queue   messages for the job still on the poison queue, not yet recorded

Dead-letter records are found by listing the tenant's scope of the dead-letter container: an operator's command
may read the whole list, the relay itself never does.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobProperties

from shared.adapters.split_parts import PARTS_PREFIX as SPLIT_PREFIX
from shared.app.relay import Relay
from shared.core.envelope import iso
from shared.core.errors import InvalidHuntRequest
from shared.core.hunt_request import message_json
from shared.core.redrive import parse_record_name
from shared.core.tenants import scope_of
from shared.delivery.blob import BlobDestination
from shared.delivery.links import LINK_PREFIX
from shared.delivery.pending import PendingDeliveries

POISON_PEEK = 32


def inspect_job(relay: Relay, job_id: str, tenant: str | None) -> dict[str, Any]:
    settings = relay.settings
    found: dict[str, Any] = {"id": job_id, **({"tenant": tenant} if tenant else {})}
    entry = relay.jobs.get(tenant, job_id) if relay.jobs is not None else None
    found["ledger"] = "off" if relay.jobs is None else entry.as_dict() if entry else None
    found["blobs"] = _blobs(relay, job_id, tenant)
    found["dead_letters"] = _dead_letters(relay, job_id, tenant)
    found["kept_delivery"] = PendingDeliveries(relay.container(settings.results_container)).describe(job_id, tenant)
    found["poison_queue"] = _poisoned(relay, job_id, tenant)
    return found


def anything_found(found: dict[str, Any]) -> bool:
    return bool(isinstance(found["ledger"], dict) or found["blobs"] or found["dead_letters"]
                or found["kept_delivery"] or found["poison_queue"])


def _blobs(relay: Relay, job_id: str, tenant: str | None) -> list[dict[str, Any]]:
    settings, scope = relay.settings, scope_of(tenant)
    owned = settings.tenants[tenant].destinations if tenant else tuple(settings.destinations)
    places = {(settings.results_container, scope + folder) for folder in ("", LINK_PREFIX, SPLIT_PREFIX)}
    for name in owned:
        destination = settings.destinations.get(name)
        if isinstance(destination, BlobDestination):
            places.add((destination.container, scope + destination.prefix))
    blobs: list[dict[str, Any]] = []
    for container_name, prefix in sorted(places):
        container = relay.container(container_name)
        try:
            listed = list(container.list_blobs(name_starts_with=prefix + job_id, include=["metadata"]))
        except ResourceNotFoundError:
            continue
        for blob in listed:
            rest = str(blob.name)[len(prefix) + len(job_id):]
            if rest.startswith("."):   # the job's own names only: `<id>.json`, not `<id>-2.json`
                blobs.append(_blob(relay, container_name, prefix, blob))
    return blobs


def _blob(relay: Relay, container: str, prefix: str, blob: BlobProperties) -> dict[str, Any]:
    name = str(blob.name)
    kind = "split_part" if prefix.endswith(SPLIT_PREFIX) else "link" if prefix.endswith(LINK_PREFIX) else \
        "failure_envelope" if name.endswith(".failed.json") else "result"
    found: dict[str, Any] = {"kind": kind, "location": f"{container}/{name}", "bytes": blob.size,
                             "content_type": blob.content_settings.content_type,
                             "created_at": _iso(blob.creation_time), "modified_at": _iso(blob.last_modified)}
    hunt_fields = {k: v for k, v in (blob.metadata or {}).items() if k.startswith("hunt_")}
    if hunt_fields:
        found["metadata"] = hunt_fields
    if kind == "failure_envelope":
        try:
            envelope = json.loads(relay.container(container).download_blob(name).readall())
            error = envelope.get("error") or {}
            found.update(status=envelope.get("status"), error_code=error.get("code"),
                         completed_at=envelope.get("completed_at"))
        except (ResourceNotFoundError, ValueError, AttributeError):
            pass
    return found


def _dead_letters(relay: Relay, job_id: str, tenant: str | None) -> list[dict[str, Any]]:
    records = relay.dead_letters
    found = []
    for blob in records.names(scope_of(tenant)):
        name = parse_record_name(blob)
        if name is None or name.tenant != tenant or not (name.file == job_id or name.file.startswith(job_id + ".")):
            continue
        record = records.load(blob)
        key = str(record.get("key")) if record is not None else ""
        if record is None or (key != job_id and not key.startswith(job_id + ".conflict.")):
            continue
        message = record.pop("message", None)
        if isinstance(message, dict):
            encoding = "text" if "text" in message else "base64"
            record["message"] = {"encoding": encoding, "chars": len(str(message.get(encoding, "")))}
        found.append({"location": records.location(blob), "redriven": name.journal, **record})
    return found


def _poisoned(relay: Relay, job_id: str, tenant: str | None) -> list[dict[str, Any]]:
    try:
        messages = list(relay.poison_queue.peek_messages(max_messages=POISON_PEEK))
    except ResourceNotFoundError:
        return []
    found = []
    for message in messages:
        try:
            body = message_json(message.content)
        except InvalidHuntRequest:   # not a hunt at all: not this job's
            continue
        if body.get("id") == job_id and body.get("tenant", relay.settings.default_tenant) == tenant:
            found.append({"message_id": message.id, "queued_at": _iso(message.inserted_on),
                          "dequeue_count": message.dequeue_count})
    return found


def _iso(moment: datetime | None) -> str | None:
    return iso(moment) if moment is not None else None
