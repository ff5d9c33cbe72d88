"""The HTTP front door: submit a hunt, poll its status, get its result, with the async request-reply pattern that
Logic Apps and SOAR tools follow (202 + Location + Retry-After, polled until a 200). Framework-neutral: the Functions
HTTP triggers (function_app.py) and the portable server (shared.app.http_server) both call `HuntApi.handle`.

    POST   /api/hunts            a hunt request v1 -> 202 {"id", "status": "queued", "status_url"}, Location,
                                 Retry-After. The same id and request again: its status, no second enqueue; the
                                 same id with another request: 409. 400 invalid (naming the field), 413 over 64 KiB,
                                 415 not JSON
    GET    /api/hunts/{id}       unfinished: 202, Retry-After (a throttled hunt's next attempt, else a short poll),
                                 the ledger's state; finished: 200 with the envelope (results inline up to
                                 HUNT_API_INLINE_MAX_BYTES, else results_url); unknown, or another tenant's: 404
    GET    /api/hunts            ?status=&since=&tenant=&page_size=&continuation= -> {"value": [...], "next"}
    DELETE /api/hunts/{id}       a queued hunt: 200 {"id", "status": "cancelled"}; running or finished: 409

Auth: a key in `x-functions-key` or `?code=`, as Functions takes them, checked against HUNT_API_KEYS (each key maps
to the tenants it may act for), or an Entra ID bearer token for HUNT_API_AUDIENCE (shared.adapters.bearer_tokens),
whose app HUNT_API_CALLERS maps to tenants; no key or token: 401; a valid one without access: 403 (and 404 on
reads of another tenant's hunt). Under
the Functions host with function-level auth and no HUNT_API_KEYS, the host has checked the key already
(`host_checked`). `?tenant=` says whose job an id is when a key acts for several tenants.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.adapters.bearer_tokens import BearerValidator, TokenRefused
from shared.adapters.credentials import authority_for
from shared.adapters.job_ledger import JobRecord
from shared.app import ops_page, ops_view
from shared.core.errors import InvalidHuntRequest
from shared.core.hunt_request import ID_PATTERN, MAX_QUEUE_MESSAGE_BYTES, decode_hunt_request, message_json
from shared.core.job_states import FINISHED, POLL_SECONDS, retry_after
from shared.core.settings import ApiKey
from shared.core.strict_json import dumps, dumps_text
from shared.core.tenants import TENANT_NAME, check_tenant, scope_of
from shared.delivery.blob import BlobDestination

if TYPE_CHECKING:
    from shared.app.relay import Relay

logger = logging.getLogger(__name__)

PREFIX = "/api/hunts"
OPS_PATH = "/ops"   # the ops page (the portable server; shared.app.ops_page)
STATUSES = ("queued", "running", "throttled", "retrying", "delivered", "failed", "poison", "cancelled")
MAX_PAGE = 100


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)   # names in any case
    body: bytes = b""
    base_url: str = ""   # scheme://host of the request, for absolute Location and status_url (empty: relative)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Caller:
    tenants: frozenset[str] | None   # None: every tenant (or the home tenant, without HUNT_TENANTS)

    def may(self, tenant: str | None) -> bool:
        return self.tenants is None or (tenant is not None and tenant in self.tenants)


def _json(http_status: int, document: Mapping[str, Any], **headers: str) -> HttpResponse:
    return HttpResponse(http_status, dumps(dict(document)), {"Content-Type": "application/json", **headers})


def _error(http_status: int, code: str, message: str, **extra: Any) -> HttpResponse:
    return _json(http_status, {"error": {"code": code, "message": message, **extra}})


class HuntApi:
    def __init__(self, relay: Relay, *, host_checked: bool = False) -> None:
        self._relay = relay
        self._settings = relay.settings
        self._host_checked = host_checked
        if relay.jobs is None:
            raise ValueError("the HTTP API needs the job ledger: set HUNT_JOB_LEDGER=true")
        self._jobs = relay.jobs
        self._bearer = BearerValidator(
            authority=authority_for(self._settings), tenant_id=self._settings.tenant_id or "",
            audience=self._settings.api_audience, session=relay.session) if self._settings.api_audience else None

    # --- the routes ------------------------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            return self._route(request)
        except AzureError as error:
            logger.warning("http %s %s: storage failed (%s)", request.method, request.path.split("?")[0][:80],
                           type(error).__name__)
            return HttpResponse(503, dumps({"error": {"code": "StorageUnavailable", "message": "the relay's "
                                              "storage did not answer; try again"}}),
                                {"Content-Type": "application/json", "Retry-After": str(POLL_SECONDS)})

    def _route(self, request: HttpRequest) -> HttpResponse:
        path = request.path.split("?", 1)[0].rstrip("/")
        if path == OPS_PATH:
            return self._ops(request)
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return _error(404, "NotFound", f"no route {path[:80]!r}: the API is under {PREFIX}")
        job_id = path[len(PREFIX) + 1:] if path != PREFIX else None
        allowed = ("GET", "POST") if job_id is None else ("GET", "DELETE")
        if request.method not in allowed:
            verbs = " or ".join(allowed)
            return HttpResponse(405, dumps({"error": {"code": "MethodNotAllowed", "message": f"use {verbs}"}}),
                                {"Allow": ", ".join(allowed), "Content-Type": "application/json"})
        caller = self._caller(request)
        if isinstance(caller, HttpResponse):
            return caller
        if job_id is None:
            return self._submit(request, caller) if request.method == "POST" else self._list(request, caller)
        if not ID_PATTERN.fullmatch(job_id):
            return _error(404, "NotFound", "no such hunt")
        tenant = self._tenant_param(request, caller)
        if isinstance(tenant, HttpResponse):
            return tenant
        if request.method == "DELETE":
            return self._cancel(tenant, job_id)
        return self._status(tenant, job_id, request.base_url)

    def _ops(self, request: HttpRequest) -> HttpResponse:
        """The ops page (shared.app.ops_page), behind the API's own auth, showing the caller's tenants only."""
        if request.method != "GET":
            return HttpResponse(405, dumps({"error": {"code": "MethodNotAllowed", "message": "use GET"}}),
                                {"Allow": "GET", "Content-Type": "application/json"})
        caller = self._caller(request)
        if isinstance(caller, HttpResponse):
            return caller
        page = ops_page.render(ops_view.snapshot(self._relay, caller.tenants))
        return HttpResponse(200, page, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
                                        "Content-Security-Policy": ops_page.CONTENT_SECURITY_POLICY,
                                        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    def _caller(self, request: HttpRequest) -> Caller | HttpResponse:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return self._bearer_caller(token.strip())
        keys = self._settings.api_keys
        if not keys:
            if self._host_checked and not self._settings.tenants:
                return Caller(None)
            if self._host_checked:   # a function key says nothing of tenants: the relay's own keys must
                return _error(403, "Forbidden", "with HUNT_TENANTS, set HUNT_API_KEYS: each key names the tenants "
                              "it may act for")
            return _error(401, "Unauthorized", "send a key (HUNT_API_KEYS) or an Entra ID bearer token "
                          "(HUNT_API_AUDIENCE)")
        given = request.header("x-functions-key") or request.query.get("code")
        if not given:
            return _error(401, "Unauthorized", "send a key in the x-functions-key header or the code parameter")
        matched: ApiKey | None = None
        for key in keys:   # compare with every key, in constant time each
            if hmac.compare_digest(key.value.encode(), given.encode()):
                matched = key
        if matched is None:
            return _error(401, "Unauthorized", "the key is not one of this relay's keys")
        return Caller(matched.tenants)

    def _bearer_caller(self, token: str) -> Caller | HttpResponse:
        if self._bearer is None:
            return _error(401, "Unauthorized", "bearer tokens are not accepted here (HUNT_API_AUDIENCE is not set)")
        claims = self._bearer.validate(token)
        if isinstance(claims, TokenRefused):
            return _error(401, "Unauthorized", claims.reason)
        app_id = str(claims.get("appid") or claims.get("azp") or "")
        callers = self._settings.api_callers
        if callers:
            found = next((c for c in callers if c.app_id == app_id), None)
            if found is None:
                return _error(403, "Forbidden", "the calling app is not one of HUNT_API_CALLERS")
            return Caller(found.tenants)
        if self._settings.tenants:
            return _error(403, "Forbidden", "with HUNT_TENANTS, HUNT_API_CALLERS must map the calling app to tenants")
        return Caller(None)

    def _tenant_param(self, request: HttpRequest, caller: Caller) -> str | HttpResponse | None:
        """Whose job the id is: ?tenant=, else the caller's only tenant, else the default tenant."""
        tenants = self._settings.tenants
        named = request.query.get("tenant")
        if not tenants:
            return None if named is None else _error(400, "InvalidRequest", "this relay has no tenants",
                                                     field="tenant")
        if named is None:
            if caller.tenants is not None and len(caller.tenants) == 1:
                named = next(iter(caller.tenants))
            else:
                named = self._settings.default_tenant
        if named is None:
            return _error(400, "InvalidRequest", "say whose hunt it is: ?tenant=", field="tenant")
        if not TENANT_NAME.fullmatch(named) or named not in tenants or not caller.may(named):
            return _error(404, "NotFound", "no such hunt")
        return named

    def _submit(self, request: HttpRequest, caller: Caller) -> HttpResponse:
        if len(request.body) > MAX_QUEUE_MESSAGE_BYTES:
            return _error(413, "PayloadTooLarge", f"a hunt request is at most {MAX_QUEUE_MESSAGE_BYTES} bytes")
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            return _error(415, "UnsupportedMediaType", "send the hunt request as application/json")
        now = self._relay.clock()
        try:
            body = message_json(request.body)
            for relay_only in ("schedule", "slot"):
                if relay_only in body:
                    raise InvalidHuntRequest(relay_only, "is set by the relay's scheduler (do not set)")
            body.setdefault("id", uuid.uuid4().hex)
            text = dumps_text(body)
            hunt = decode_hunt_request(
                text, message_id=str(body["id"]), default_api=self._settings.api, now=now, mark=None,
                default_tenant=(next(iter(caller.tenants)) if caller.tenants and len(caller.tenants) == 1
                                else self._settings.default_tenant),
                tenant_apis={n: t.api for n, t in self._settings.tenants.items() if t.api is not None})
            check_tenant(hunt.tenant, self._settings.tenants)
        except InvalidHuntRequest as error:
            return _error(400, "InvalidHuntRequest", error.reason, field=error.field)
        if hunt.dropped:
            return _error(400, "InvalidHuntRequest", "is kept by the relay (do not set)", field=hunt.dropped[0])
        if not caller.may(hunt.tenant):
            return _error(403, "Forbidden", "this key may not submit hunts for that tenant", field="tenant")
        if hunt.tenant is not None and "tenant" not in body:   # the key's (or the default) tenant, made explicit
            body["tenant"] = hunt.tenant
            text = dumps_text(body)
            if len(text.encode("utf-8")) > MAX_QUEUE_MESSAGE_BYTES:
                return _error(413, "PayloadTooLarge", f"a hunt request is at most {MAX_QUEUE_MESSAGE_BYTES} bytes")
        record, created = self._jobs.submit(hunt, hunt.api)
        if not created:
            if record.request_sha256 != hunt.digest():
                return _error(409, "Conflict", f"a different hunt already has the id {hunt.id!r}; give every "
                              "distinct hunt its own id", field="id")
            return self._answer(record, request.base_url)
        try:
            self._relay.hunt_queue.send_message(text)
        except AzureError:
            self._jobs.forget(hunt.tenant, hunt.id)   # nothing is queued: the next submission starts afresh
            raise
        logger.info("hunt %s: submitted over HTTP", hunt.id)
        location = request.base_url + self._status_url(hunt.tenant, hunt.id)
        return _json(202, {"id": hunt.id, **({"tenant": hunt.tenant} if hunt.tenant else {}), "status": "queued",
                           "status_url": location}, Location=location, **{"Retry-After": str(POLL_SECONDS)})

    def _status(self, tenant: str | None, job_id: str, base_url: str) -> HttpResponse:
        record = self._jobs.get(tenant, job_id)
        if record is None:
            return _error(404, "NotFound", "no such hunt")
        return self._answer(record, base_url)

    def _answer(self, record: JobRecord, base_url: str) -> HttpResponse:
        url = base_url + self._status_url(record.tenant, record.id)
        if record.status not in FINISHED:
            wait = retry_after(record.status, record.next_attempt_at, self._relay.clock())
            return _json(202, {**record.as_dict(), "status_url": url}, Location=url,
                         **{"Retry-After": str(wait)})
        if record.status == "cancelled":
            return _json(200, {"id": record.id, **({"tenant": record.tenant} if record.tenant else {}),
                               "status": "cancelled"})
        envelope = self._envelope(record)
        return envelope if envelope is not None else _json(200, record.as_dict())

    def _envelope(self, record: JobRecord) -> HttpResponse | None:
        """The delivered (or failed) envelope when it is in one of the relay's blob destinations, under the
        job's own tenant's scope; None for a webhook or queue destination (the record says where it went)."""
        if not record.location or "/" not in record.location:
            return None
        container, name = record.location.split("/", 1)
        if container not in self._blob_containers() or not name.startswith(scope_of(record.tenant)) \
                or (record.tenant is None and name.startswith("tenants/")):
            return None
        blob = self._relay.container(container).get_blob_client(name)
        try:
            size = blob.get_blob_properties().size
            if name.endswith(".json") and size <= self._settings.api_inline_max_bytes:
                return HttpResponse(200, blob.download_blob().readall(), {"Content-Type": "application/json"})
        except ResourceNotFoundError:
            return None
        link = self._relay.result_links.link_to(self._relay.container(container), name)
        if link is None:
            return None
        return _json(200, {**record.as_dict(), "results_url": link[0], "results_expires_at": link[1]})

    def _blob_containers(self) -> set[str]:
        return {d.container for d in self._settings.destinations.values() if isinstance(d, BlobDestination)}

    def _cancel(self, tenant: str | None, job_id: str) -> HttpResponse:
        record = self._jobs.cancel(tenant, job_id)
        if record is None:
            return _error(404, "NotFound", "no such hunt")
        if record.status != "cancelled":
            return _error(409, "Conflict", f"the hunt is {record.status}: only a queued hunt can be cancelled",
                          status=record.status)
        logger.info("hunt %s: cancelled over HTTP", job_id)
        return _json(200, {"id": job_id, **({"tenant": tenant} if tenant else {}), "status": "cancelled"})

    def _list(self, request: HttpRequest, caller: Caller) -> HttpResponse:
        status = request.query.get("status")
        if status is not None and status not in STATUSES:
            return _error(400, "InvalidRequest", f"status must be one of {', '.join(STATUSES)}", field="status")
        since = None
        if request.query.get("since"):
            try:
                since = datetime.fromisoformat(request.query["since"].replace("Z", "+00:00"))
            except ValueError:
                return _error(400, "InvalidRequest", "since must be an ISO 8601 time", field="since")
            if since.tzinfo is None:
                return _error(400, "InvalidRequest", "since must carry a time zone (Z)", field="since")
        try:
            page_size = int(request.query.get("page_size", "50"))
        except ValueError:
            page_size = 0
        if not 1 <= page_size <= MAX_PAGE:
            return _error(400, "InvalidRequest", f"page_size must be 1 to {MAX_PAGE}", field="page_size")
        tenants: list[str | None]
        if not self._settings.tenants:
            if request.query.get("tenant"):
                return _error(400, "InvalidRequest", "this relay has no tenants", field="tenant")
            tenants = [None]
        elif request.query.get("tenant"):
            named = request.query["tenant"]
            if named not in self._settings.tenants or not caller.may(named):
                return _json(200, {"value": []})
            tenants = [named]
        else:
            tenants = list(sorted(caller.tenants if caller.tenants is not None else self._settings.tenants))
        try:
            records, token = self._jobs.list(tenants, status=status, since=since, page_size=page_size,
                                             continuation=request.query.get("continuation"))
        except ValueError as error:
            return _error(400, "InvalidRequest", str(error), field="continuation")
        page: dict[str, Any] = {"value": [r.as_dict() for r in records]}
        if token:
            kept = {k: v for k, v in request.query.items() if k in ("status", "since", "tenant", "page_size")}
            page["next"] = f"{PREFIX}?{urlencode({**kept, 'continuation': token})}"
        return _json(200, page)

    @staticmethod
    def _status_url(tenant: str | None, job_id: str) -> str:
        return f"{PREFIX}/{quote(job_id)}" + (f"?tenant={quote(tenant)}" if tenant else "")
