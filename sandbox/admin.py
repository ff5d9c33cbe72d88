"""The admin path on the http port: the in-process knobs and counters, over HTTP (for the CLI sandbox).

    GET  /_sandbox/state        {"knobs", "counters", "table_rows", "identities", "apps", ...}; table_rows: rows per
                                table of each dataset ("home" and each customer tenant's id), the cost model's
                                rows scanned (sandbox.knobs)
    POST /_sandbox/knobs        JSON merge into the knobs, e.g. {"quota": {"calls_per_window": 2}}; returns them
    POST /_sandbox/reset        knobs to defaults, counters and quotas to zero, directory to its defaults
    POST /_sandbox/identities   {"client_id", "roles"}
    POST /_sandbox/apps         {"tenant", "client_id", "secret"?, "roles", "certificate_pem"?}: the app, consented in
                                the tenant (neither secret nor certificate: it signs in with federated credentials)
    POST /_sandbox/tenants      {"tenant_id", "seed", "rows"?}: a customer tenant with data of its own
    POST /_sandbox/federated    {"client_id", "issuer", "subject"}: a federated credential on the app registration
    POST /_sandbox/revoke       {"tenant", "client_id"}: the tenant's admin removes the app (its consent)
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sandbox.http_base import Reply, Request, json_reply
from sandbox.knobs import KnobError, knobs_as_dict, merge_knobs

if TYPE_CHECKING:
    from sandbox.server import Sandbox

PREFIX = "/_sandbox/"


def _bad(message: str) -> Reply:
    return json_reply(400, {"error": {"code": "BadRequest", "message": message}})


def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def state(sandbox: Sandbox) -> dict[str, Any]:
    return {"knobs": knobs_as_dict(sandbox.knobs), "counters": sandbox.counters.snapshot(),
            "table_rows": sandbox.table_rows(), **sandbox.directory.describe()}


def admin_call(request: Request, sandbox: Sandbox) -> Reply:
    action = request.path[len(PREFIX):]
    if request.method == "GET" and action == "state":
        return json_reply(200, state(sandbox))
    if request.method != "POST":
        return json_reply(405, {"error": {"code": "MethodNotAllowed", "message": "Use GET state or POST."}})
    if action == "reset":
        sandbox.reset()
        return json_reply(200, state(sandbox))
    body = _json_object(request)
    if body is None:
        return _bad("The body must be a JSON object.")
    if action == "knobs":
        try:
            with sandbox.knob_lock:
                merge_knobs(sandbox.knobs, body)
        except KnobError as error:
            return _bad(str(error))
        return json_reply(200, knobs_as_dict(sandbox.knobs))
    if action == "identities":
        if not isinstance(body.get("client_id"), str) or not _strings(body.get("roles")):
            return _bad('Expected {"client_id": str, "roles": [str]}.')
        sandbox.add_identity(body["client_id"], body["roles"])
        return json_reply(200, sandbox.directory.describe())
    if action == "apps":
        fields_ok = all(isinstance(body.get(name), str) for name in ("tenant", "client_id"))
        secret, certificate = body.get("secret"), body.get("certificate_pem")
        if not fields_ok or not _strings(body.get("roles")) or not isinstance(secret, str | None) \
                or not isinstance(certificate, str | None):
            return _bad('Expected {"tenant": str, "client_id": str, "secret": str, "roles": [str]} '
                        '("certificate_pem" instead of, or as well as, "secret"; neither for federated sign-in).')
        sandbox.add_app(body["tenant"], body["client_id"], secret, body["roles"],
                        certificate_pem=certificate.encode() if certificate else None)
        return json_reply(200, sandbox.directory.describe())
    if action == "tenants":
        seed, rows = body.get("seed"), body.get("rows", 2_000)
        if not isinstance(body.get("tenant_id"), str) or not isinstance(seed, int) or not isinstance(rows, int) \
                or rows < 1:
            return _bad('Expected {"tenant_id": str, "seed": int, "rows": int (default 2000)}.')
        sandbox.add_tenant(body["tenant_id"], seed=seed, rows=rows)
        return json_reply(200, sandbox.directory.describe())
    if action == "federated":
        if not all(isinstance(body.get(name), str) for name in ("client_id", "issuer", "subject")):
            return _bad('Expected {"client_id": str, "issuer": str, "subject": str}.')
        sandbox.directory.add_federated_credential(body["client_id"], body["issuer"], body["subject"])
        return json_reply(200, sandbox.directory.describe())
    if action == "revoke":
        if not all(isinstance(body.get(name), str) for name in ("tenant", "client_id")):
            return _bad('Expected {"tenant": str, "client_id": str}.')
        sandbox.directory.revoke_app(body["tenant"], body["client_id"])
        return json_reply(200, sandbox.directory.describe())
    return json_reply(404, {"error": {"code": "NotFound", "message": f"No admin action {action!r}."}})
