"""The command line for customer tenants (HUNT_TENANTS, shared.core.tenants).

    python -m shared grant-permission --tenant NAME [--create-federated-credential --principal-id ID
                                      [--issuer URL]] [--graph-url URL]
        prints the admin-consent URL the customer's admin opens to consent the multi-tenant app in their tenant;
        with --create-federated-credential, also adds to the app registration (in the MSSP's own tenant, through
        Graph: Application.ReadWrite.All) the federated credential that lets the relay's managed identity (object
        id ID) sign in as the app: issuer `<authority>/<home tenant>/v2.0` (AZURE_TENANT_ID) unless --issuer,
        subject ID, audience api://AzureADTokenExchange
    python -m shared check-tenant NAME
        signs in as the tenant's app, as the relay does, and reports the tenant, the app and the hunting roles the
        token carries; no query is run and no quota is spent. Exit 0: the role of the tenant's API is there;
        1: it is not; 2: the sign-in failed (the message names the fix)

Both read the relay's settings from the environment (the Function App's settings, or local.settings.json's).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any
from urllib.parse import quote

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from shared.adapters.credentials import authority_for, tenant_credential
from shared.app.config import load_settings
from shared.core.apis import APIS
from shared.core.classify import sign_in_refusal
from shared.core.settings import Settings
from shared.core.tenants import TOKEN_EXCHANGE_AUDIENCE, TenantConfig


def _tenant(settings: Settings, name: str) -> TenantConfig:
    tenant = settings.tenants.get(name)
    if tenant is None:
        known = ", ".join(settings.tenants) or "none (HUNT_TENANTS is not set)"
        raise SystemExit(f"error: unknown tenant {name!r}; this relay's tenants: {known}")
    return tenant


def consent_url(settings: Settings, tenant: TenantConfig) -> str:
    """The admin-consent endpoint for the app in the customer's tenant: its admin signs in and grants the app's
    configured application permissions (ThreatHunting.Read.All for Graph)."""
    return f"{authority_for(settings)}/{quote(tenant.tenant_id)}/adminconsent?client_id={quote(tenant.client_id)}"


def create_federated_credential(settings: Settings, tenant: TenantConfig, *, principal_id: str, issuer: str | None,
                                credential: TokenCredential, graph_url: str | None = None,
                                session: requests.Session | None = None) -> str:
    """Adds the relay identity's federated credential to the app registration; returns what was done."""
    if not settings.tenant_id and issuer is None:
        raise SystemExit("error: --create-federated-credential needs AZURE_TENANT_ID (the MSSP's own tenant, the "
                         "managed identity's issuer) or --issuer")
    issuer = issuer or f"{authority_for(settings)}/{settings.tenant_id}/v2.0"
    graph = (graph_url or APIS["graph"].hosts[settings.cloud]).rstrip("/")
    token = credential.get_token(APIS["graph"].hosts[settings.cloud] + "/.default").token
    body = {"name": f"hunt-relay-{principal_id}"[:120], "issuer": issuer, "subject": principal_id,
            "audiences": [TOKEN_EXCHANGE_AUDIENCE],
            "description": "Hunt Relay's managed identity signs in as this app in customer tenants"}
    reply = (session or requests.Session()).post(
        f"{graph}/v1.0/applications(appId='{quote(tenant.client_id)}')/federatedIdentityCredentials", json=body,
        headers={"Authorization": "Bearer " + token}, timeout=30)
    if reply.status_code == 409 or (reply.status_code == 400 and "already exists" in reply.text):
        return f"the app {tenant.client_id} already trusts {principal_id} (issuer {issuer})"
    if reply.status_code != 201:
        raise SystemExit(f"error: Graph refused the federated credential (HTTP {reply.status_code}): "
                         f"{reply.text[:300]}; the caller needs Application.ReadWrite.All in the app's home tenant")
    return f"the app {tenant.client_id} now trusts the managed identity {principal_id} (issuer {issuer})"


def _claims(token: str) -> dict[str, Any]:
    """The token's claims, read without checking the signature (the service checks it; this only reports)."""
    payload = token.split(".")[1]
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded if isinstance(decoded, dict) else {}


def check_tenant(settings: Settings, tenant: TenantConfig, *, credential: TokenCredential | None = None) -> int:
    api = APIS[tenant.api or settings.api]
    credential = credential or tenant_credential(settings, tenant)
    try:
        token = credential.get_token(api.scope(settings.cloud)).token
    except ClientAuthenticationError as error:
        first_line = (error.message or type(error).__name__).splitlines()[0][:300]
        refused = sign_in_refusal(tenant, first_line)
        sys.stderr.write(f"error: tenant {tenant.name!r}: the sign-in failed: {first_line}\n")
        if refused is not None and refused.hint:
            sys.stderr.write(f"fix: {refused.hint}\n")
        return 2
    claims = _claims(token)
    roles = [str(role) for role in claims.get("roles") or []]
    sys.stdout.write(f"tenant {tenant.name}: signed in to {claims.get('tid')} as app {claims.get('appid')} "
                     f"({tenant.auth}); the {api.name} token carries the roles: {', '.join(roles) or 'none'}\n")
    if api.role not in roles:
        sys.stdout.write(f"missing: {api.role}; the tenant's admin consents the app with "
                         f"{consent_url(settings, tenant)}\n")
        return 1
    sys.stdout.write(f"ok: {api.role} is granted; hunts for {tenant.name} can run\n")
    return 0


def configure_check_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a tenant of HUNT_TENANTS")


def run_check(args: argparse.Namespace, *, credential: TokenCredential | None = None) -> int:
    settings = load_settings(os.environ)
    return check_tenant(settings, _tenant(settings, args.name), credential=credential)


def run_grant(args: argparse.Namespace, *, credential: TokenCredential | None = None,
              session: requests.Session | None = None) -> int:
    settings = load_settings(os.environ)
    tenant = _tenant(settings, args.tenant)
    sys.stdout.write(f"tenant {tenant.name} ({tenant.tenant_id}): its admin consents the app {tenant.client_id} by "
                     f"opening\n  {consent_url(settings, tenant)}\n")
    if args.create_federated_credential:
        if not args.principal_id:
            raise SystemExit("error: --create-federated-credential needs --principal-id (the object id of the "
                             "relay's managed identity)")
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
        sys.stdout.write(create_federated_credential(settings, tenant, principal_id=args.principal_id,
                                                     issuer=args.issuer, credential=credential,
                                                     graph_url=args.graph_url, session=session) + "\n")
    return 0
