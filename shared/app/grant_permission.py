"""Grant a hunting API's application role to a managed identity (or an app) through Microsoft Graph.

    python -m shared grant-permission --principal-id ID [--api mde|m365d|graph] [--cloud C] [--graph-url URL]
    python -m shared grant-permission --tenant NAME [...]   a customer tenant's consent (shared.app.tenant_commands)

The portal cannot give an application role to a managed identity; Graph can, in four calls:
find the API's service principal by its app id, find the role by its value (`AdvancedQuery.Read.All` ...),
list the principal's app role assignments, and `POST /servicePrincipals/{resource}/appRoleAssignedTo` unless
the role is already there. Idempotent: a role already granted (found, or reported by Graph as "already
exists") is a success that changes nothing.

`graph_url` is where requests go; the token is always for Graph's own audience in the chosen cloud (as with
HUNT_API_BASE_URL, a different host never changes the audience). Tests point `graph_url` at the sandbox.

Errors (each message says what to do):

    GrantError (a HuntRelayError)
    ├── SignInFailed        no Graph token could be had for the caller
    ├── GrantNotAllowed     Graph answered 403 (the caller lacks the rights to read or assign app roles) or
    │                       401 (its token is for another cloud or tenant)
    ├── PrincipalNotFound   no service principal has that object id (a client id given instead, a typo)
    ├── ResourceNotFound    the API's service principal is not in the tenant
    ├── RoleNotFound        the API's service principal has no application role with that value
    └── GraphRequestFailed  any other answer, or no answer, from Graph
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from shared.core.apis import API_NAMES, APIS, CLOUD_NAMES, Cloud
from shared.core.errors import (
    GrantError,
    GrantNotAllowed,
    GraphRequestFailed,
    PrincipalNotFound,
    ResourceNotFound,
    RoleNotFound,
    SignInFailed,
)

logger = logging.getLogger(__name__)

GRAPH_URLS: dict[str, str] = dict(APIS["graph"].hosts)   # cloud -> Microsoft Graph (also the token audience)
REQUIRED_RIGHTS = (
    "The caller needs the Graph application permissions AppRoleAssignment.ReadWrite.All and Application.Read.All "
    "(admin-consented), or, signed in as a user, the Privileged Role Administrator role (Cloud Application "
    "Administrator or Application Administrator also suffice for APIs other than Microsoft Graph)."
)
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")  # with fullmatch
_TIMEOUT = 30.0


@dataclass(frozen=True)
class GrantResult:
    principal_id: str
    api: str
    role: str                  # the role's value, e.g. AdvancedQuery.Read.All
    app_role_id: str
    resource_id: str           # object id of the API's service principal
    resource_name: str
    assignment_id: str | None
    created: bool              # False: it was already granted, nothing changed

    def describe(self) -> str:
        if self.created:
            return (f"granted {self.role} on {self.resource_name} to principal {self.principal_id} "
                    f"(assignment {self.assignment_id})")
        return f"already granted: {self.role} on {self.resource_name} to principal {self.principal_id}"


class _Graph:
    """A bearer-authenticated JSON client for the few Graph calls this needs."""

    def __init__(self, base_url: str, token: str, session: requests.Session) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._session = session

    def call(self, method: str, path: str, *, params: dict[str, str] | None = None,
             body: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        url = path if path.startswith("http") else self._base + path
        try:
            response = self._session.request(method, url, params=params, json=body, headers=self._headers,
                                             timeout=_TIMEOUT, allow_redirects=False)
        except requests.RequestException as error:
            raise GraphRequestFailed(f"could not reach Microsoft Graph at {self._base}: {error}") from error
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = {"error": {"code": "NotJson", "message": response.text[:300]}}
        return response.status_code, payload if isinstance(payload, dict) else {"value": payload}


def _error_text(payload: dict[str, Any]) -> tuple[str, str]:
    error = payload.get("error")
    if isinstance(error, dict):
        return str(error.get("code", "")), str(error.get("message", ""))
    return "", str(error or "")


def _refused(status: int, payload: dict[str, Any], doing: str) -> GrantError:
    code, message = _error_text(payload)
    detail = f"{status} {code}: {message}".strip().rstrip(":")
    if status == 401:
        return GrantNotAllowed(f"Microsoft Graph did not accept the caller's token to {doing} ({detail}): sign in "
                               "to the identity's tenant, and give its cloud with --cloud")
    if status == 403:
        return GrantNotAllowed(f"Microsoft Graph refused to {doing} ({detail}). {REQUIRED_RIGHTS}")
    return GraphRequestFailed(f"Microsoft Graph could not {doing} ({detail})")


def _find_resource(graph: _Graph, app_id: str, resource_name: str) -> dict[str, Any]:
    status, payload = graph.call("GET", "/v1.0/servicePrincipals",
                                 params={"$filter": f"appId eq '{app_id}'", "$select": "id,appId,displayName,appRoles"})
    if status != 200:
        raise _refused(status, payload, f"look up the {resource_name} service principal")
    found = payload.get("value") or []
    if not found:
        raise ResourceNotFound(
            f"the {resource_name} service principal (app id {app_id}) is not in this tenant: the product may not be "
            f"provisioned yet; an administrator can add it with `az ad sp create --id {app_id}`")
    return cast(dict[str, Any], found[0])


def _find_role(resource: dict[str, Any], value: str, resource_name: str) -> dict[str, Any]:
    roles = [r for r in resource.get("appRoles") or [] if isinstance(r, dict)]
    for role in roles:
        if role.get("value") == value and "Application" in (role.get("allowedMemberTypes") or []) \
                and role.get("isEnabled", True):
            return role
    offered = sorted(str(r.get("value")) for r in roles if "Application" in (r.get("allowedMemberTypes") or []))
    raise RoleNotFound(f"{resource_name} offers no application role {value!r} "
                       f"(its application roles: {', '.join(offered) or 'none'})")


def _principal_assignments(graph: _Graph, principal_id: str) -> list[dict[str, Any]]:
    assignments: list[dict[str, Any]] = []
    path: str | None = f"/v1.0/servicePrincipals/{principal_id}/appRoleAssignments"
    while path:
        status, payload = graph.call("GET", path)
        if status == 404:
            raise PrincipalNotFound(
                f"no service principal has the object id {principal_id}: give the identity's principal (object) "
                "id, not its client id (`az identity show --query principalId`, or the azd output "
                "HUNT_IDENTITY_PRINCIPAL_ID)")
        if status != 200:
            raise _refused(status, payload, f"list the app role assignments of principal {principal_id}")
        assignments += [a for a in payload.get("value") or [] if isinstance(a, dict)]
        next_link = payload.get("@odata.nextLink")
        path = next_link if isinstance(next_link, str) else None
    return assignments


def grant_permission(principal_id: str, api: str, *, credential: TokenCredential, cloud: Cloud = "public",
                     graph_url: str | None = None, session: requests.Session | None = None) -> GrantResult:
    """Gives `principal_id` (a service principal's object id) the application role `api` needs."""
    if api not in APIS:
        raise GrantError(f"unknown API {api!r}: use one of {', '.join(API_NAMES)}")
    if not _GUID.fullmatch(principal_id):
        raise PrincipalNotFound(f"{principal_id!r} is not an object id: give the identity's principal id, a GUID")
    spec = APIS[api]
    scope = GRAPH_URLS[cloud] + "/.default"
    try:
        token = credential.get_token(scope).token
    except ClientAuthenticationError as error:
        raise SignInFailed(f"could not get a Microsoft Graph token ({scope}): {error.message}. Sign in with "
                           "`az login` to the identity's tenant, or set AZURE_TENANT_ID/AZURE_CLIENT_ID/"
                           "AZURE_CLIENT_SECRET for an app") from error
    graph = _Graph(graph_url or GRAPH_URLS[cloud], token, session or requests.Session())
    resource = _find_resource(graph, spec.resource_app_id, spec.resource_name)
    role = _find_role(resource, spec.role, spec.resource_name)
    resource_id, role_id = str(resource["id"]), str(role["id"])
    result = GrantResult(principal_id=principal_id, api=api, role=spec.role, app_role_id=role_id,
                         resource_id=resource_id, resource_name=spec.resource_name, assignment_id=None,
                         created=False)
    for assignment in _principal_assignments(graph, principal_id):
        if assignment.get("resourceId") == resource_id and assignment.get("appRoleId") == role_id:
            logger.info("role %s already granted to %s", spec.role, principal_id)
            return replace(result, assignment_id=assignment.get("id"))
    status, payload = graph.call("POST", f"/v1.0/servicePrincipals/{resource_id}/appRoleAssignedTo",
                                 body={"principalId": principal_id, "resourceId": resource_id, "appRoleId": role_id})
    if status in (200, 201):
        logger.info("granted role %s to %s", spec.role, principal_id)
        return replace(result, assignment_id=payload.get("id"), created=True)
    code, message = _error_text(payload)
    if status in (400, 409) and "already exists" in message.lower():
        return result   # granted between our look and our POST (or Graph's list lagged): still success
    if status == 400 and "principalid" in message.replace(" ", "").lower():
        raise PrincipalNotFound(f"Graph does not accept {principal_id} as a principal ({code}: {message})")
    raise _refused(status, payload, f"grant {spec.role} to principal {principal_id}")


# --- the command line -----------------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--principal-id",
                        help="object (principal) id of the managed identity or app's service principal")
    parser.add_argument("--tenant", help="a customer tenant of HUNT_TENANTS: print the admin-consent URL for its app "
                        "(see --create-federated-credential)")
    parser.add_argument("--create-federated-credential", action="store_true",
                        help="with --tenant: let the relay's managed identity (--principal-id) sign in as the app")
    parser.add_argument("--issuer", help="with --create-federated-credential: the identity's token issuer (default "
                        "<authority>/<AZURE_TENANT_ID>/v2.0)")
    parser.add_argument("--api", choices=API_NAMES, default=os.environ.get("HUNT_API") or "graph",
                        help="the hunting API whose role to grant (default HUNT_API, else mde)")
    parser.add_argument("--cloud", choices=CLOUD_NAMES, default=os.environ.get("HUNT_CLOUD") or "public",
                        help="the cloud: picks Graph's host and token audience (default HUNT_CLOUD, else public)")
    parser.add_argument("--graph-url", help="send Graph requests here instead (the token's audience is unchanged)")


def run(args: argparse.Namespace, *, credential: TokenCredential | None = None,
        session: requests.Session | None = None) -> int:
    if getattr(args, "tenant", None):
        from shared.app.tenant_commands import run_grant

        return run_grant(args, credential=credential, session=session)
    if not args.principal_id:
        sys.stderr.write("error: --principal-id is required (the object id of the identity to grant the role)\n")
        return 2
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    try:
        result = grant_permission(args.principal_id, args.api, credential=credential, cloud=args.cloud,
                                  graph_url=args.graph_url, session=session)
    except GrantError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    sys.stdout.write(result.describe() + "\n")
    if result.created:
        sys.stdout.write("note: only tokens issued from now on carry the role; a token the identity already holds "
                         "for this API (cached by Azure for up to 24 hours) does not\n")
    return 0


def main(argv: Sequence[str] | None = None, *, credential: TokenCredential | None = None,
         session: requests.Session | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared grant-permission",
                                     description="Grant a hunting API's application role through Microsoft Graph")
    configure_parser(parser)
    return run(parser.parse_args(argv), credential=credential, session=session)
