"""Who may get a token: managed identities and app registrations, and the managed-identity endpoint.

The endpoint speaks the App Service protocol as msal (under azure-identity 1.27) sends it:
`GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=R[&client_id=C | &object_id=O | &mi_res_id=I]` with
`X-IDENTITY-HEADER: <IDENTITY_HEADER>`; the reply carries `expires_on` in Unix seconds. Errors are JSON
`{"statusCode", "message"}` with status 400, which msal reports as "(invalid_scope) 400, <message>" and
azure-core does not retry.

Out of the box: a system-assigned identity, a user-assigned identity `sandbox-user-identity`, and the app
`sandbox-client` (secret `sandbox-secret`) in tenant `sandbox-tenant`, each holding all three hunting roles.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.counters import Counters
from sandbox.http_base import Reply, Request, json_reply
from sandbox.tokens import ALL_HUNTING_ROLES, TokenIssuer, normalise_audience, object_id_for, roles_for_audience

IDENTITY_HEADER = "sandbox"
DEFAULT_TENANT = "sandbox-tenant"
DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_SECRET = "sandbox-secret"
SYSTEM_IDENTITY_CLIENT_ID = "sandbox-system-identity"
USER_IDENTITY_CLIENT_ID = "sandbox-user-identity"


def identity_resource_id(client_id: str) -> str:
    return ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/sandbox/providers/"
            f"Microsoft.ManagedIdentity/userAssignedIdentities/{client_id}")


@dataclass
class Identity:
    client_id: str
    roles: list[str]
    tenant: str = DEFAULT_TENANT


@dataclass
class App:
    tenant: str
    client_id: str
    secret: str | None
    roles: list[str]
    certificate_pem: bytes | None = None     # for certificate credentials (client_assertion)


@dataclass(frozen=True)
class FederatedCredential:
    """On an app registration: tokens from `issuer` about `subject` (for audience api://AzureADTokenExchange) may
    stand in for the app's secret, in every tenant where the app is consented."""

    issuer: str
    subject: str


class Directory:
    """Identities and apps, keyed by client id (apps also by tenant: an app entry in a tenant is the app's consent
    there, its service principal). Federated credentials belong to the app registration, across tenants; customer
    tenants (`add_tenant`) are known even before an app is consented in them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.identities: dict[str, Identity] = {}
        self.apps: dict[tuple[str, str], App] = {}
        self.federated: dict[str, list[FederatedCredential]] = {}
        self.tenants: set[str] = set()
        self.restore_defaults()

    def restore_defaults(self) -> None:
        with self._lock:
            self.identities = {
                SYSTEM_IDENTITY_CLIENT_ID: Identity(SYSTEM_IDENTITY_CLIENT_ID, list(ALL_HUNTING_ROLES)),
                USER_IDENTITY_CLIENT_ID: Identity(USER_IDENTITY_CLIENT_ID, list(ALL_HUNTING_ROLES)),
            }
            self.apps = {(DEFAULT_TENANT, DEFAULT_CLIENT_ID): App(
                DEFAULT_TENANT, DEFAULT_CLIENT_ID, DEFAULT_SECRET, list(ALL_HUNTING_ROLES))}
            self.federated = {}
            self.tenants = set()

    def add_tenant(self, tenant: str) -> None:
        with self._lock:
            self.tenants.add(tenant)

    def add_federated_credential(self, client_id: str, issuer: str, subject: str) -> None:
        with self._lock:
            self.federated.setdefault(client_id, []).append(FederatedCredential(issuer, subject))

    def federated_credentials(self, client_id: str) -> list[FederatedCredential]:
        with self._lock:
            return list(self.federated.get(client_id, []))

    def revoke_app(self, tenant: str, client_id: str) -> bool:
        """The tenant's admin removes the app (its consent): its sign-ins there fail from now on."""
        with self._lock:
            return self.apps.pop((tenant, client_id), None) is not None

    def add_identity(self, client_id: str, roles: list[str]) -> None:
        """Adds (or replaces) a user-assigned identity; the system identity's client id replaces its roles."""
        with self._lock:
            self.identities[client_id] = Identity(client_id, list(roles))

    def add_app(self, tenant: str, client_id: str, secret: str | None, roles: list[str],
                certificate_pem: bytes | None = None) -> None:
        with self._lock:
            self.apps[(tenant, client_id)] = App(tenant, client_id, secret, list(roles), certificate_pem)

    def find_identity(self, *, client_id: str | None = None, object_id: str | None = None,
                      resource_id: str | None = None) -> Identity | None:
        with self._lock:
            if client_id is None and object_id is None and resource_id is None:
                return self.identities.get(SYSTEM_IDENTITY_CLIENT_ID)
            for identity in self.identities.values():
                if identity.client_id == SYSTEM_IDENTITY_CLIENT_ID:
                    continue
                if (client_id == identity.client_id or object_id == object_id_for(identity.client_id)
                        or (resource_id or "").lower() == identity_resource_id(identity.client_id).lower()):
                    return identity
            return None

    def knows_tenant(self, tenant: str) -> bool:
        with self._lock:
            return (any(app_tenant == tenant for app_tenant, _ in self.apps) or tenant == DEFAULT_TENANT
                    or tenant in self.tenants)

    def find_app(self, tenant: str, client_id: str) -> App | None:
        with self._lock:
            return self.apps.get((tenant, client_id))

    def describe(self) -> dict[str, object]:
        """For the admin path: who exists and with which roles (no secrets)."""
        with self._lock:
            return {
                "identities": [{"client_id": i.client_id, "roles": i.roles, "tenant": i.tenant,
                                "system_assigned": i.client_id == SYSTEM_IDENTITY_CLIENT_ID}
                               for i in self.identities.values()],
                "apps": [{"tenant": a.tenant, "client_id": a.client_id, "roles": a.roles,
                          "has_secret": a.secret is not None, "has_certificate": a.certificate_pem is not None}
                         for a in self.apps.values()],
                "tenants": sorted(self.tenants),
                "federated_credentials": {client_id: [{"issuer": f.issuer, "subject": f.subject} for f in creds]
                                          for client_id, creds in self.federated.items()},
            }


def _msi_error(message: str) -> Reply:
    return json_reply(400, {"statusCode": 400, "message": message, "correlationId": "sandbox"})


def _first(request: Request, name: str) -> str | None:
    values = request.query.get(name)
    return values[0] if values else None


def msi_token(request: Request, directory: Directory, issuer: TokenIssuer, counters: Counters,
              lifetime: Callable[[], float]) -> Reply:
    """`GET /msi/token`: the App Service managed identity endpoint."""
    if request.method != "GET":
        return _msi_error("The managed identity endpoint accepts GET only.")
    if request.header("X-IDENTITY-HEADER") != IDENTITY_HEADER:
        return _msi_error("The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.")
    if _first(request, "api-version") != "2019-08-01":
        return _msi_error("Unsupported api-version: use 2019-08-01.")
    resource = _first(request, "resource")
    if not resource:
        return _msi_error("The 'resource' query parameter is required.")
    identity = directory.find_identity(client_id=_first(request, "client_id"),
                                       object_id=_first(request, "object_id"),
                                       resource_id=_first(request, "mi_res_id"))
    if identity is None:
        return _msi_error("Unable to load the proper Managed Identity: no user-assigned identity with "
                          "the requested client_id, object_id or mi_res_id is assigned to this app.")
    token, expires = issuer.mint(audience=resource, tenant=identity.tenant, client_id=identity.client_id,
                                 roles=roles_for_audience(identity.roles, resource), lifetime_seconds=lifetime())
    counters.count_token(identity.client_id)
    return json_reply(200, {
        "access_token": token,
        "expires_on": str(expires),
        "resource": normalise_audience(resource),
        "token_type": "Bearer",
        "client_id": identity.client_id,
    })
