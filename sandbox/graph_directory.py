"""The Microsoft Graph directory endpoints `python -m shared grant-permission` uses, for tests and the demo.

    GET  /v1.0/servicePrincipals?$filter=appId eq '<app id>'      {"value": [servicePrincipal]}
    GET  /v1.0/servicePrincipals/{id}                             servicePrincipal
    GET  /v1.0/servicePrincipals/{id}/appRoleAssignments          {"value": [assignments held by id]}
    GET  /v1.0/servicePrincipals/{id}/appRoleAssignedTo           {"value": [assignments of id's roles]}
    POST /v1.0/servicePrincipals/{id}/appRoleAssignedTo           {principalId, resourceId, appRoleId} -> 201

Called by `sandbox.server` as `handle(method, path, query, body, claims)`, where `claims` are the verified
claims of the caller's bearer token (None when absent or invalid). Rules, as Graph applies them to app tokens:
- the token must be for Graph (`aud` https://graph.microsoft.com), else 401 InvalidAuthenticationToken;
- reading needs one of READ_ROLES; granting needs AppRoleAssignment.ReadWrite.All plus one of
  Application.Read.All, Application.ReadWrite.All, Directory.Read.All, Directory.ReadWrite.All; else 403
  Authorization_RequestDenied. (Give the sandbox app such roles with `sb.add_app(..., roles=[...])`: roles other
  than the hunting ones land in Graph tokens.)
- a duplicate grant is 400 "Permission being assigned already exists on the object", as Graph answers.

Seeded: the three hunting APIs' service principals with their real app ids and roles (role ids are stable
GUIDs derived from the value, not Microsoft's), and a service principal for each default sandbox identity
(object id = the `oid` its tokens carry), each already holding the three hunting roles, as in the token
directory. `register_principal` adds one for an identity or app a test creates. State is module-wide: call
`reset()` between tests.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from sandbox.identity import DEFAULT_CLIENT_ID, SYSTEM_IDENTITY_CLIENT_ID, USER_IDENTITY_CLIENT_ID
from sandbox.tokens import normalise_audience, object_id_for

GRAPH_AUDIENCES = {"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"}
READ_ROLES = {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All",
              "AppRoleAssignment.ReadWrite.All"}
WRITE_ROLE = "AppRoleAssignment.ReadWrite.All"
WRITE_READ_ROLES = {"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All",
                    "Directory.ReadWrite.All"}

# app id -> (display name, application role values): the hunting role first.
RESOURCE_APPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "fc780465-2017-40d4-a0c5-307022471b92": ("WindowsDefenderATP", (
        "AdvancedQuery.Read.All", "Machine.Read.All", "Alert.Read.All")),
    "8ee8fdad-f234-4243-8f3b-15c294843740": ("Microsoft Threat Protection", (
        "AdvancedHunting.Read.All", "Incident.Read.All")),
    "00000003-0000-0000-c000-000000000000": ("Microsoft Graph", (
        "ThreatHunting.Read.All", "AppRoleAssignment.ReadWrite.All", "Application.Read.All", "Directory.Read.All")),
}
_PREFIX = "/v1.0/servicePrincipals"
_FILTER = re.compile(r"^\s*appId\s+eq\s+'([^']*)'\s*$")
_lock = threading.Lock()
_principals: dict[str, dict[str, Any]] = {}
_assignments: list[dict[str, Any]] = []


def resource_id_for(app_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "sandbox-resource-sp:" + app_id))


def role_id_for(value: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "sandbox-app-role:" + value))


def _role(value: str) -> dict[str, Any]:
    return {"id": role_id_for(value), "value": value, "displayName": value, "isEnabled": True,
            "allowedMemberTypes": ["Application"], "origin": "Application",
            "description": f"Allows the app to {value} without a signed-in user."}


def _assign(principal: dict[str, Any], resource: dict[str, Any], role_id: str) -> dict[str, Any]:
    assignment = {
        "id": uuid.uuid4().hex, "createdDateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "principalId": principal["id"], "principalType": "ServicePrincipal",
        "principalDisplayName": principal["displayName"], "resourceId": resource["id"],
        "resourceDisplayName": resource["displayName"], "appRoleId": role_id,
    }
    _assignments.append(assignment)
    return assignment


def _add_principal(client_id: str, kind: str, display_name: str | None) -> dict[str, Any]:
    object_id = object_id_for(client_id)
    principal: dict[str, Any] = {"id": object_id, "appId": client_id, "displayName": display_name or client_id,
                                 "servicePrincipalType": kind, "appRoles": []}
    _principals[object_id] = principal
    return principal


def reset() -> None:
    """The seeded directory: the three resource apps, and the default identities holding the hunting roles."""
    with _lock:
        _principals.clear()
        _assignments.clear()
        for app_id, (name, roles) in RESOURCE_APPS.items():
            _principals[resource_id_for(app_id)] = {
                "id": resource_id_for(app_id), "appId": app_id, "displayName": name,
                "servicePrincipalType": "Application", "appRoles": [_role(value) for value in roles]}
        for client_id, kind in ((SYSTEM_IDENTITY_CLIENT_ID, "ManagedIdentity"),
                                (USER_IDENTITY_CLIENT_ID, "ManagedIdentity"), (DEFAULT_CLIENT_ID, "Application")):
            principal = _add_principal(client_id, kind, None)
            for app_id, (_, roles) in RESOURCE_APPS.items():
                _assign(principal, _principals[resource_id_for(app_id)], role_id_for(roles[0]))


def register_principal(client_id: str, *, kind: str = "ManagedIdentity", display_name: str | None = None) -> str:
    """Adds a service principal for an identity or app (no roles); returns its object id (the tokens' `oid`)."""
    with _lock:
        return str(_add_principal(client_id, kind, display_name)["id"])


def remove_resource(app_id: str) -> None:
    """Takes an API's service principal out of the tenant (a product not provisioned there)."""
    with _lock:
        _principals.pop(resource_id_for(app_id), None)


def assignments_of(principal_id: str) -> list[dict[str, Any]]:
    with _lock:
        return [dict(a) for a in _assignments if a["principalId"] == principal_id]


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message,
                              "innerError": {"request-id": str(uuid.uuid4()), "date": datetime.now(UTC).isoformat()}}}


def _not_found(what: str) -> tuple[int, dict[str, Any]]:
    return _error(404, "Request_ResourceNotFound", f"Resource '{what}' does not exist or one of its queried "
                  "reference-property objects are not present.")


def _denied(claims: dict[str, Any] | None, write: bool) -> tuple[int, dict[str, Any]] | None:
    if claims is None:
        return _error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
    if normalise_audience(str(claims.get("aud", ""))) not in GRAPH_AUDIENCES:
        return _error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
    roles = set(claims.get("roles") or [])
    allowed = WRITE_ROLE in roles and bool(roles & WRITE_READ_ROLES) if write else bool(roles & READ_ROLES)
    if not allowed:
        return _error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    return None


def _list(query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    text = (query.get("$filter") or [""])[0]
    if not text:
        return 200, {"value": list(_principals.values())}
    match = _FILTER.match(text)
    if match is None:
        return _error(400, "Request_UnsupportedQuery", f"Unsupported query: the sandbox filters on appId only, "
                      f"got {text!r}.")
    return 200, {"value": [p for p in _principals.values() if p["appId"] == match.group(1)]}


def _grant(resource: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return _error(400, "BadRequest", "Unable to read JSON request payload.")
    if not isinstance(request, dict):
        return _error(400, "BadRequest", "The request body must be a JSON object.")
    principal = _principals.get(str(request.get("principalId")))
    if principal is None:
        return _error(400, "Request_BadRequest",
                      "Invalid value specified for property 'principalId' of resource 'AppRoleAssignment'.")
    if request.get("resourceId") != resource["id"]:
        return _error(400, "Request_BadRequest",
                      "Invalid value specified for property 'resourceId' of resource 'AppRoleAssignment'.")
    role_id = request.get("appRoleId")
    if role_id not in {r["id"] for r in resource["appRoles"]}:
        return _error(400, "Request_BadRequest",
                      f"Permission being assigned was not found on application '{resource['appId']}'.")
    if any(a["principalId"] == principal["id"] and a["resourceId"] == resource["id"] and a["appRoleId"] == role_id
           for a in _assignments):
        return _error(400, "Request_BadRequest", "Permission being assigned already exists on the object")
    return 201, _assign(principal, resource, str(role_id))


def handle(method: str, path: str, query: dict[str, list[str]], body: bytes,
           claims: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    parts = [p for p in path[len(_PREFIX):].split("/") if p]
    write = method == "POST"
    if method not in ("GET", "POST") or (write and (len(parts) != 2 or parts[1] != "appRoleAssignedTo")):
        return _error(405, "Request_BadRequest", f"The sandbox does not support {method} {path}.")
    denied = _denied(claims, write)
    if denied is not None:
        return denied
    with _lock:
        if not parts:
            return _list(query)
        principal = _principals.get(parts[0])
        if principal is None:
            return _not_found(parts[0])
        if len(parts) == 1:
            return 200, principal
        if write:
            return _grant(principal, body)
        if parts[1:] == ["appRoleAssignments"]:
            return 200, {"value": [dict(a) for a in _assignments if a["principalId"] == principal["id"]]}
        if parts[1:] == ["appRoleAssignedTo"]:
            return 200, {"value": [dict(a) for a in _assignments if a["resourceId"] == principal["id"]]}
        return _not_found("/".join(parts))


reset()
