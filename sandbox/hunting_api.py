"""The three advanced hunting endpoints: each API's request and response shapes, its auth, quota and faults.

    POST /api/advancedqueries/run        mde    {"Stats": {...}, "Schema": [{"Name", "Type"}], "Results": [...]}
    POST /api/advancedhunting/run        m365d  {"Stats": {...}, "Schema": [...], "Results": [...]}
    POST /v1.0/security/runHuntingQuery  graph  {"@odata.context", "schema": [{"name", "type"}], "results": [...]}

mde's documented example shows Schema and Results only ("may be truncated for brevity"); its connector's
response type has Stats, so the sandbox sends them on both legacy APIs: `Stats.ExecutionTime` is the running time
the call was charged (sandbox.knobs). Graph returns no statistics.

A call goes through, in order: added latency, bearer token (401 / 403), quota (429, not counted), the fixed
running-time charge, injected 5xx, request body (400 InvalidRequestBody / MissingRequiredParameter), injected 400
size error, the KQL engine (400 BadRequest), the charge for the rows and the wait it asks for
(`cpu_latency_ratio`), then the rows, streamed as the engine yields them (where a reset or stall may cut them).
Errors: {"error": {"code", "message", "target": <uuid>}} (graph adds "innerError").
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sandbox.faults import SIZE_ERROR_MESSAGES, status_error
from sandbox.http_base import Reply, Request, json_reply
from sandbox.hunting import Api, HuntingResult, QueryError, with_running_time
from sandbox.quota import fixed_charge, running_time, throttle_reply
from sandbox.tokens import APIS, TokenError, normalise_audience

if TYPE_CHECKING:
    from sandbox.server import Sandbox

logger = logging.getLogger(__name__)

GRAPH_CONTEXT = "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.security.huntingQueryResults"
_GRAPH_PROPERTIES = {"query": "Query", "timespan": "Timespan"}
RETIRED_MESSAGE = ("The {title} advanced hunting API has been retired and no longer returns data. Use Microsoft Graph "
                   "runHuntingQuery (POST /v1.0/security/runHuntingQuery) instead.")


def error_reply(status: int, api: str, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    target = str(uuid.uuid4())
    error: dict[str, Any] = {"code": code, "message": message, "target": target}
    if api == "graph":
        error["innerError"] = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                               "request-id": target, "client-request-id": target}
    return json_reply(status, {"error": error}, headers)


def retired_reply(api: str, form: str) -> Reply:
    """How a retired endpoint answers (the knob `retired_form`)."""
    message = RETIRED_MESSAGE.format(title={"mde": "Microsoft Defender for Endpoint",
                                            "m365d": "Microsoft Defender XDR"}.get(api, api))
    if form == "gone":
        return error_reply(410, api, "Gone", message)
    if form == "not_found":
        return error_reply(404, api, "ResourceNotFound", "The requested resource does not exist.")
    if form == "code":
        return error_reply(400, api, "ApiRetired", "The request cannot be served.")
    return error_reply(403, api, "Forbidden", message.replace("has been retired", "is deprecated"))


def authorize(request: Request, api_name: str, sandbox: Sandbox) -> dict[str, Any] | Reply:
    """The verified claims of the bearer token, or the 401/403 the API answers."""
    api = APIS[api_name]
    scheme, _, token = (request.header("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return error_reply(401, api_name, "Unauthorized", "Authorization header is missing or is not a Bearer token.",
                           {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    try:
        claims = sandbox.issuer.verify(token.strip())
    except TokenError as error:
        return error_reply(401, api_name, "Unauthorized", f"{error}.",
                           {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    missing = f"Missing application roles. API required roles: {api.role}, application roles"
    if normalise_audience(str(claims.get("aud", ""))) != api.audience:
        return error_reply(403, api_name, "Forbidden",
                           f"The token was issued for audience '{claims.get('aud')}', not '{api.audience}'. "
                           + missing)
    if api.role not in (claims.get("roles") or []):
        return error_reply(403, api_name, "Forbidden", missing)
    return claims


def _parse_body(raw: bytes, api: str) -> dict[str, Any] | Reply:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return error_reply(400, api, "InvalidRequestBody", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return error_reply(400, api, "InvalidRequestBody", "The request body must be a JSON object.")
    if api == "graph":   # Graph reads property names in any case: Microsoft's samples send Query, the SDK query
        body = {_GRAPH_PROPERTIES.get(key.lower(), key): value for key, value in body.items()}
    if "Query" not in body:
        return error_reply(400, api, "MissingRequiredParameter", "Required parameter 'Query' is missing.")
    if not isinstance(body["Query"], str) or not body["Query"].strip():
        return error_reply(400, api, "InvalidRequestBody", "Parameter 'Query' must be a non-empty string.")
    timespan = body.get("Timespan")
    if api == "graph" and timespan is not None and not isinstance(timespan, str):
        return error_reply(400, api, "InvalidRequestBody", "Parameter 'Timespan' must be a string.")
    return body


def _envelope(api: str, result: HuntingResult) -> tuple[bytes, bytes]:
    """The bytes before the first row and after the last one."""
    head: dict[str, Any]
    if api == "graph":
        schema = [{"name": c.name, "type": c.kusto_type} for c in result.columns]
        head = {"@odata.context": GRAPH_CONTEXT, "schema": schema}
        results_key = "results"
    else:
        head = {"Stats": result.stats, "Schema": [{"Name": c.name, "Type": c.kusto_type} for c in result.columns]}
        results_key = "Results"
    opening = json.dumps(head, ensure_ascii=False)[:-1] + f', "{results_key}": ['
    return opening.encode("utf-8"), b"]}"


def _stream(opening: bytes, first: bytes | None, rows: Iterator[bytes], closing: bytes) -> Iterator[bytes]:
    yield opening
    if first is not None:
        yield first
        for row in rows:
            yield b","
            yield row
    yield closing


def hunting_call(request: Request, api: Api, sandbox: Sandbox) -> Reply:
    sandbox.counters.record_body(api, request.body)
    knobs = sandbox.knobs
    faults = sandbox.fault_plan.draw(knobs.faults, api)
    if faults.latency_seconds > 0:
        sandbox.stop_event.wait(faults.latency_seconds)
    if request.method != "POST":
        return error_reply(405, api, "MethodNotAllowed", "Use POST.")
    if api in knobs.retired_apis:
        return retired_reply(api, knobs.retired_form)
    claims = authorize(request, api, sandbox)
    if isinstance(claims, Reply):
        return claims
    tenant = str(claims.get("tid", ""))
    engine = sandbox.engine_for(tenant)
    if engine is None:
        return error_reply(401, api, "Unauthorized", f"The token's tenant '{tenant}' is not served by this "
                           "service.", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    sandbox.counters.count_tenant_call(api, tenant)
    now = time.time()
    quota = knobs.quota_for(tenant)
    throttle = sandbox.quota.admit(tenant, now, quota)
    if throttle is not None:
        sandbox.counters.count_tenant_throttle(api, tenant, running_time=throttle.kind == "cpu")
        target = str(uuid.uuid4())
        headers, body = throttle_reply(throttle, api, quota, target, now)
        return Reply(429, body, headers)
    charged = fixed_charge(quota)
    sandbox.quota.charge_cpu(tenant, charged, now, quota)
    sandbox.counters.count_running_time(api, tenant, charged)
    if faults.status is not None:
        code, message = status_error(faults.status, api)
        return error_reply(faults.status, api, code, message)
    parsed = _parse_body(request.body, api)
    if isinstance(parsed, Reply):
        return parsed
    if faults.size_error is not None:
        return error_reply(400, api, "BadRequest", SIZE_ERROR_MESSAGES[faults.size_error])
    try:
        result = engine.run(parsed["Query"], api, timespan=parsed.get("Timespan") if api == "graph" else None,
                                    row_cap=knobs.row_cap,
                                    max_result_bytes=round(knobs.max_result_mb * 1024 * 1024))
        rows = iter(result.rows)
        first = next(rows, None)     # errors the engine raises lazily still become a 400, before any byte is sent
    except QueryError as error:
        return error_reply(400, api, error.code, error.message)
    except Exception:
        logger.exception("the hunting engine failed on a %s query", api)
        return error_reply(500, api, "UnknownError" if api == "graph" else "InternalServerError",
                           "An unexpected error occurred while running the query.")
    seconds = running_time(quota, rows_scanned=result.rows_scanned, rows_returned=result.row_count,
                           measured=float(result.stats["ExecutionTime"]))
    sandbox.quota.charge_cpu(tenant, seconds - charged, time.time(), quota)
    sandbox.counters.count_running_time(api, tenant, seconds - charged)
    result.stats = with_running_time(result.stats, seconds)
    if quota.cpu_latency_ratio > 0:
        sandbox.stop_event.wait(quota.cpu_latency_ratio * seconds)
    opening, closing = _envelope(api, result)
    return Reply(200, _stream(opening, first, rows, closing), body_fault=faults.body)
