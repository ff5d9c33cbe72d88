"""The hunt request, version 1: the queue message a playbook sends, decoded and validated.

A message is a JSON object, as plain text or base64 (producers differ; host.json sets messageEncoding "none" so
the relay sees the raw text and accepts both). `decode_hunt_request` is pure: the queue message id and the clock
are passed in. Every rejection is an `InvalidHuntRequest` naming the field and what is allowed. The JSON Schema
shipped in schemas/hunt-request.v1.schema.json describes the same contract; a test keeps the two in agreement.

`attempt`, `first_enqueued_at`, `last_error`, `pending_delivery` and `gate_waits` (how many times the quota gate
sent the hunt back: such a copy keeps its attempt) are kept by the relay on the copies it puts back on the queue,
under the relay's mark (shared.core.relay_mark): without a valid mark they are dropped and the message is a fresh
hunt (`HuntRequest.dropped` names what was dropped). Decoding is strict (shared.core.strict_json):
huge integers, overflowing numbers, NaN/Infinity, lone surrogates and duplicate keys are refused, naming the field.
Names (the id, a template) must match their pattern whole: no trailing newline. `pending_delivery` marks a
delivery-only retry (shared.delivery.pending): it may only name the relay's own stored body for that job id,
`pending/<id>.delivery.json`, so a producer cannot point the relay at another blob; the schema checks its shape,
the parser also that it matches the id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, cast

from shared.core.apis import API_NAMES, Api
from shared.core.errors import InvalidHuntRequest
from shared.core.relay_mark import MARK_FIELD, MessageMark, canonical, unmarked_relay_fields
from shared.core.splitting import SpanError, hunt_range
from shared.core.strict_json import JsonRefused, dumps_text, loads_object
from shared.core.tenants import TENANT_NAME, scope_of

Format = Literal["json", "ndjson", "csv"]
FORMATS = ("json", "ndjson", "csv")

MAX_QUEUE_MESSAGE_BYTES = 64 * 1024   # a queue message; a destination queue's envelopes: 48 KiB
MAX_QUERY_BYTES = 60 * 1024
MAX_CONTEXT_BYTES = 8 * 1024
MAX_DESTINATION_CHARS = 2048
MAX_NESTING = 32
# Used with fullmatch only: "$" would match before a final newline.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
TEMPLATE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_TIMESPAN = re.compile(
    r"(P[0-9TYMWDHS.]+|\d{4}-\d{2}-\d{2}[0-9T:.Z+-]*)(/(P[0-9TYMWDHS.]+|\d{4}-\d{2}-\d{2}[0-9T:.Z+-]*))?")
PENDING_PREFIX = "pending/"
PENDING_SUFFIX = ".delivery.json"   # ids hold no '.', so no blob sink result name (<prefix><id>.json) can match
_KNOWN = {"query", "Query", "id", "api", "timespan", "destination", "format", "context", "template", "parameters",
          "split", "tenant", "schedule", "slot", "attempt", "first_enqueued_at", "version", "last_error",
          "pending_delivery", "gate_waits", MARK_FIELD}


def pending_delivery_name(job_id: str, tenant: str | None = None) -> str:
    """The blob (in the results container) that holds a job's rendered body while its delivery is retried, under
    the tenant's scope (shared.core.tenants)."""
    return f"{scope_of(tenant)}{PENDING_PREFIX}{job_id}{PENDING_SUFFIX}"


@dataclass(frozen=True)
class HuntRequest:
    id: str
    query: str | None
    api: Api
    destination: str | None = None
    format: Format = "json"
    timespan: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    template: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    attempt: int = 1
    first_enqueued_at: datetime | None = None
    last_error: str | None = None
    pending_delivery: str | None = None
    gate_waits: int = 0   # times the quota gate sent this hunt back (no attempt spent): it has begun before
    split: bool = False   # split the time range until every part fits under the caps (shared.core.splitting)
    tenant: str | None = None   # a customer tenant of HUNT_TENANTS (None: the home tenant)
    schedule: str | None = None   # the schedule that enqueued it (shared.core.schedules), echoed in the envelope
    slot: str | None = None       # that schedule's slot, as its interval start/end
    dropped: tuple[str, ...] = ()   # relay-kept fields the message carried without a valid mark (never sent on)
    requested_api: Api | None = None   # set when another API ran the hunt (shared.core.routing); never sent on
    warnings: tuple[str, ...] = ()     # why, for the envelope

    @property
    def began_before(self) -> bool:
        """A later attempt, or a copy the quota gate sent back: a run of this hunt began before (and so it cannot
        have been cancelled since: only a queued hunt can be)."""
        return self.attempt > 1 or self.gate_waits > 0

    def ran_on(self, api: Api, warnings: tuple[str, ...]) -> HuntRequest:
        """This hunt as run on `api` instead of the one it names (the envelope says both, and why)."""
        if api == self.api:
            return self
        return replace(self, api=api, requested_api=self.api, warnings=warnings)

    def digest(self) -> str:
        """What makes two messages the same request: a SHA-256 of everything but the relay's own fields."""
        identity = {"id": self.id, "api": self.api, "query": self.query, "template": self.template,
                    "parameters": dict(self.parameters), "destination": self.destination, "format": self.format,
                    "timespan": self.timespan, "context": dict(self.context), "split": self.split,
                    "tenant": self.tenant, "schedule": self.schedule, "slot": self.slot}
        return hashlib.sha256(canonical(identity)).hexdigest()

    def next_attempt(self, last_error: str) -> HuntRequest:
        """The copy that goes back on the queue: one more attempt, the same id and first-enqueued time."""
        # A service's message may carry a lone surrogate escape: the copy must be strict JSON the relay reads back.
        readable = last_error[:500].encode("utf-8", "replace").decode("utf-8")
        return replace(self, attempt=self.attempt + 1, last_error=readable)

    def waited_at_gate(self) -> HuntRequest:
        """The copy the quota gate sends back: the same attempt (no call was spent), one gate wait more."""
        return replace(self, gate_waits=self.gate_waits + 1)

    def delivery_only(self) -> HuntRequest:
        """This hunt marked as a delivery-only retry: its body is stored, the query is not run again."""
        return replace(self, pending_delivery=pending_delivery_name(self.id, self.tenant))

    def to_message(self, mark: MessageMark | None) -> str:
        """The queue copy, marked as the relay's own (unmarked without a key: its relay fields are then dropped by
        whoever reads it)."""
        body: dict[str, Any] = {"version": 1, "id": self.id, "api": self.api, "format": self.format}
        if self.query is not None:
            body["query"] = self.query
        if self.template is not None:
            body["template"] = self.template
            body["parameters"] = dict(self.parameters)
        for name in ("tenant", "schedule", "slot", "destination", "timespan", "last_error", "pending_delivery"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        if self.context:
            body["context"] = dict(self.context)
        if self.split:
            body["split"] = True
        if self.gate_waits:
            body["gate_waits"] = self.gate_waits
        body["attempt"] = self.attempt
        if self.first_enqueued_at is not None:
            body["first_enqueued_at"] = self.first_enqueued_at.isoformat()
        text = _marked(body, mark)
        if "last_error" in body and len(text.encode("utf-8")) > MAX_QUEUE_MESSAGE_BYTES:
            # The last error is a convenience (logs and the failure envelope keep errors): drop it to fit.
            del body["last_error"]
            text = _marked(body, mark)
        return text


def _marked(body: dict[str, Any], mark: MessageMark | None) -> str:
    if mark is not None:
        body = {**body, MARK_FIELD: mark.sign(body)}
    return dumps_text(body)


def decode_hunt_request(raw: str | bytes, *, message_id: str, default_api: Api, now: datetime,
                        mark: MessageMark | None = None, default_tenant: str | None = None,
                        tenant_apis: Mapping[str, Api] | None = None) -> HuntRequest:
    """Plain or base64 JSON -> a validated HuntRequest, or InvalidHuntRequest naming what is wrong. Relay-kept
    fields count only under a valid `mark` (None: no message is the relay's own). A hunt that names no tenant is
    `default_tenant`'s; one that names no API runs on its tenant's (`tenant_apis`), else on `default_api`. Whether
    the tenant exists is the processor's question (shared.app.processor)."""
    body = message_json(raw)
    dropped = unmarked_relay_fields(body, mark)
    for name in dropped:
        del body[name]
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise InvalidHuntRequest(unknown[0], f"unknown field; allowed fields are {', '.join(sorted(_KNOWN))}")
    query = _query(body)
    template = _optional_str(body, "template")
    if template is not None and not TEMPLATE_PATTERN.fullmatch(template):
        raise InvalidHuntRequest("template", "must be a template name of letters, digits, - and _")
    if (query is None) == (template is None):
        raise InvalidHuntRequest("query", "give exactly one of 'query' (KQL text) or 'template' (a template name)")
    if body.get("version", 1) != 1 or isinstance(body.get("version"), bool):
        raise InvalidHuntRequest("version", "must be 1 (this relay speaks hunt request version 1)")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict) or ("parameters" in body and template is None):
        raise InvalidHuntRequest("parameters", "must be a JSON object, and only with 'template'")
    tenant = body.get("tenant", default_tenant)
    if tenant is not None and (not isinstance(tenant, str) or not TENANT_NAME.fullmatch(tenant)):
        raise InvalidHuntRequest("tenant", "must be a tenant name of HUNT_TENANTS: 1-32 lowercase letters, digits "
                                 "and -")
    api = body.get("api", (tenant_apis or {}).get(tenant or "") or default_api)
    if api not in API_NAMES:
        raise InvalidHuntRequest("api", f"must be one of {', '.join(API_NAMES)}, got {_short(api)}")
    timespan = _optional_str(body, "timespan")
    if timespan is not None:
        if api != "graph":
            raise InvalidHuntRequest("timespan", "is only supported with api 'graph' (mde and m365d take the time "
                                     "range inside the query, e.g. '| where Timestamp > ago(7d)')")
        if not _TIMESPAN.fullmatch(timespan):
            raise InvalidHuntRequest("timespan", "must be an ISO 8601 duration (P7D) or interval (start/end)")
    split = body.get("split", False)
    if not isinstance(split, bool):
        raise InvalidHuntRequest("split", f"must be true or false, got {_short(split)}")
    if split:
        try:
            hunt_range(timespan, now)
        except SpanError as error:
            raise InvalidHuntRequest("timespan", f"a split hunt needs a range it can cut: {error}") from None
    schedule, slot = _optional_str(body, "schedule"), _optional_str(body, "slot")
    if schedule is not None and not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?", schedule):
        raise InvalidHuntRequest("schedule", "must be a schedule name (set by the scheduler)")
    if slot is not None and (schedule is None or not _TIMESPAN.fullmatch(slot)):
        raise InvalidHuntRequest("slot", "is set by the scheduler with 'schedule': the slot's interval start/end")
    fmt = body.get("format", "json")
    if fmt not in FORMATS:
        raise InvalidHuntRequest("format", f"must be one of {', '.join(FORMATS)}, got {_short(fmt)}")
    destination = _optional_str(body, "destination")
    if destination is not None and not 0 < len(destination) <= MAX_DESTINATION_CHARS:
        raise InvalidHuntRequest("destination", f"must be 1 to {MAX_DESTINATION_CHARS} characters")
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise InvalidHuntRequest("context", "must be a JSON object (it is echoed back untouched)")
    if len(dumps_text(context).encode("utf-8")) > MAX_CONTEXT_BYTES:
        raise InvalidHuntRequest("context", f"is larger than {MAX_CONTEXT_BYTES} bytes as JSON; keep it to ids")
    job_id = body.get("id", message_id)
    if not isinstance(job_id, str) or not ID_PATTERN.fullmatch(job_id):
        raise InvalidHuntRequest("id", "must be 1-128 characters: letters, digits, - and _, starting with a letter "
                                 "or digit")
    attempt = _relay_count(body, "attempt", lowest=1, highest=10_000)
    first = body.get("first_enqueued_at")
    first_at = now
    if first is not None:
        try:
            first_at = datetime.fromisoformat(str(first))
        except ValueError:
            raise InvalidHuntRequest("first_enqueued_at", "is kept by the relay: an ISO 8601 time") from None
        if first_at.tzinfo is None:
            raise InvalidHuntRequest("first_enqueued_at", "must carry a time zone")
        try:
            first_at.astimezone(now.tzinfo)
        except OverflowError:
            raise InvalidHuntRequest("first_enqueued_at", "is out of range") from None
    last_error = body.get("last_error")
    pending = _pending_delivery(body, job_id, tenant)
    gate_waits = _relay_count(body, "gate_waits", lowest=0, highest=1_000_000)
    return HuntRequest(
        id=job_id, query=query, api=cast(Api, api), destination=destination, format=cast(Format, fmt),
        timespan=timespan, context=context, template=template, parameters=parameters, attempt=attempt,
        first_enqueued_at=first_at, last_error=str(last_error)[:500] if last_error is not None else None,
        pending_delivery=pending, split=split, tenant=tenant, schedule=schedule, slot=slot, gate_waits=gate_waits,
        dropped=tuple(dropped),
    )


def message_json(raw: str | bytes) -> dict[str, Any]:
    """The message's JSON object (plain or base64), within the size and nesting limits."""
    return _json_object(_text_of(raw))


def _text_of(raw: str | bytes) -> str:
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > MAX_QUEUE_MESSAGE_BYTES:
        raise InvalidHuntRequest("", f"the message is {len(data)} bytes; the limit is {MAX_QUEUE_MESSAGE_BYTES}")
    stripped = data.strip()
    if not stripped.startswith(b"{"):
        try:
            stripped = base64.b64decode(stripped, validate=True).strip()
        except (binascii.Error, ValueError):
            raise InvalidHuntRequest("", "the message is neither a JSON object nor base64 of one") from None
        if not stripped.startswith(b"{"):
            raise InvalidHuntRequest("", "the message is base64, but not of a JSON object")
    try:
        return stripped.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidHuntRequest("", f"the message is not valid UTF-8 (byte {error.start})") from None


def _json_object(text: str) -> dict[str, Any]:
    _check_nesting(text)
    try:
        return loads_object(text)
    except JsonRefused as refused:
        raise InvalidHuntRequest(refused.path, refused.reason if refused.path else "the message " + refused.reason
                                 ) from None


def _check_nesting(text: str) -> None:
    """Refuse deeply nested JSON before parsing it (cheap, and no recursion)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_NESTING:
                raise InvalidHuntRequest("", f"the message nests deeper than {MAX_NESTING} levels")
        elif char in "]}":
            depth -= 1


def _query(body: Mapping[str, Any]) -> str | None:
    if "query" in body and "Query" in body:
        raise InvalidHuntRequest("query", "give 'query' or 'Query', not both")
    value = body.get("query", body.get("Query"))
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidHuntRequest("query", "must be non-empty KQL text")
    if len(value.encode("utf-8")) > MAX_QUERY_BYTES:   # strict decoding refused lone surrogates
        raise InvalidHuntRequest("query", f"is longer than {MAX_QUERY_BYTES} bytes")
    return value


def _relay_count(body: dict[str, Any], name: str, *, lowest: int, highest: int) -> int:
    """A count the relay keeps on its copies (`attempt`, `gate_waits`): absent means `lowest`."""
    value = body.get(name, lowest)
    if not isinstance(value, int) or isinstance(value, bool) or not lowest <= value <= highest:
        raise InvalidHuntRequest(name, f"is kept by the relay: a whole number from {lowest}")
    return value


def _pending_delivery(body: Mapping[str, Any], job_id: str, tenant: str | None) -> str | None:
    value = body.get("pending_delivery")
    if value is None:
        return None
    # Exactly the relay's own name for this job: never a path chosen by whoever wrote the message.
    if "id" not in body or value != pending_delivery_name(job_id, tenant):
        raise InvalidHuntRequest("pending_delivery", "is kept by the relay (do not set): it can only name the "
                                 f"relay's own stored delivery for the message's id, {PENDING_PREFIX}<id>"
                                 f"{PENDING_SUFFIX}")
    return str(value)


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidHuntRequest(name, f"must be a string, got {type(value).__name__}")
    return value


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=True, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
