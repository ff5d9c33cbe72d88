"""The token authority (Entra ID's v2.0 endpoints) on the sandbox's https port.

    GET  /{tenant}/v2.0/.well-known/openid-configuration   OIDC metadata (msal's tenant discovery)
    POST /{tenant}/oauth2/v2.0/token                       client_credentials with client_secret (post or
                                                           basic) or client_assertion: a certificate credential,
                                                           or (workload identity federation) a managed identity's
                                                           token for api://AzureADTokenExchange, for an app with a
                                                           federated credential of that token's issuer and subject
    GET  /{tenant}/discovery/v2.0/keys                     the signing key set (tokens are RS256 with a kid)

Errors are the AADSTS form msal parses: {"error", "error_description": "AADSTSnnn: ...", "error_codes", ...}.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs, unquote

from sandbox.counters import Counters
from sandbox.http_base import Reply, Request, json_reply
from sandbox.identity import Directory
from sandbox.tokens import TokenError, TokenIssuer, roles_for_audience, verify_client_assertion

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"   # what a managed identity's token for federation is for


def aad_error(status: int, error: str, code: int, description: str) -> Reply:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return json_reply(status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} "
                             f"Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    })


def _federated(assertion: str, client_id: str, directory: Directory, issuer: TokenIssuer) -> Reply | None:
    """A workload identity federation sign-in: the assertion is a managed identity's token for
    api://AzureADTokenExchange, and the app has a federated credential for its issuer and subject."""
    try:
        claims = issuer.verify(assertion)
    except TokenError as error:
        return aad_error(401, "invalid_client", 700024, f"Client assertion is not within its valid time range or "
                         f"could not be validated. {error}.")
    if claims.get("aud") != TOKEN_EXCHANGE_AUDIENCE:
        return aad_error(401, "invalid_client", 700212, f"No matching federated identity record found for "
                         f"presented assertion audience '{claims.get('aud')}'.")
    if not any(credential.issuer == claims.get("iss") and credential.subject == claims.get("sub")
               for credential in directory.federated_credentials(client_id)):
        return aad_error(401, "invalid_client", 70021, f"No matching federated identity record found for presented "
                         f"assertion. Assertion Issuer: '{claims.get('iss')}'. Assertion Subject: "
                         f"'{claims.get('sub')}'. Assertion Audience: '{claims.get('aud')}'.")
    return None


def _unknown_tenant(tenant: str) -> Reply:
    return aad_error(400, "invalid_request", 90002,
                     f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                     "signing into the correct cloud.")


def openid_configuration(request: Request, tenant: str, directory: Directory) -> Reply:
    if not directory.knows_tenant(tenant):
        return aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
    base = f"https://{request.header('Host') or '127.0.0.1'}/{tenant}"
    return json_reply(200, {
        "issuer": f"{base}/v2.0",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "tenant_region_scope": None,
        "cloud_instance_name": "microsoftonline.com",
    })


def _basic_credentials(request: Request) -> tuple[str | None, str | None]:
    header = request.header("Authorization") or ""
    if not header.lower().startswith("basic "):
        return None, None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return unquote(user), unquote(password)


def token(request: Request, tenant: str, directory: Directory, issuer: TokenIssuer, counters: Counters,
          lifetime: Callable[[], float], *, v1: bool = False) -> Reply:
    """`POST /{tenant}/oauth2/v2.0/token` with grant_type=client_credentials and `scope=<resource>/.default`, or
    with `v1` the v1 endpoint `POST /{tenant}/oauth2/token` with `resource=<resource>` (Microsoft's samples), whose
    answer also carries `resource`, `expires_on` and `not_before`, as strings."""
    form = {name: values[0] for name, values in parse_qs(request.body.decode("utf-8", "replace")).items()}
    basic_id, basic_secret = _basic_credentials(request)
    client_id = form.get("client_id") or basic_id or ""
    secret = form.get("client_secret") or basic_secret
    if form.get("grant_type") != "client_credentials":
        return aad_error(400, "unsupported_grant_type", 70003,
                         "The app requested an unsupported grant type: the sandbox issues client_credentials only.")
    if not directory.knows_tenant(tenant):
        return _unknown_tenant(tenant)
    app = directory.find_app(tenant, client_id)
    if app is None:
        return aad_error(400, "unauthorized_client", 700016,
                         f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
                         "This can happen if the application has not been installed by the administrator of the "
                         "tenant or consented to by any user in the tenant. You may have sent your authentication "
                         "request to the wrong tenant.")
    assertion = form.get("client_assertion")
    if assertion and issuer.issued(assertion):
        refused = _federated(assertion, client_id, directory, issuer)
        if refused is not None:
            return refused
    elif assertion:
        if form.get("client_assertion_type") != ASSERTION_TYPE or app.certificate_pem is None:
            return aad_error(401, "invalid_client", 700027,
                             f"Client assertion failed: no certificate is registered for app '{client_id}'.")
        audience = f"https://{request.header('Host') or '127.0.0.1'}{request.path}"
        try:
            verify_client_assertion(assertion, app.certificate_pem, client_id=client_id, audience=audience)
        except TokenError as error:
            return aad_error(401, "invalid_client", 700027, f"Client assertion failed signature validation. {error}.")
    elif secret is None:
        return aad_error(401, "invalid_client", 7000218,
                         "The request body must contain the following parameter: 'client_assertion' or "
                         "'client_secret'.")
    elif app.secret is None or secret != app.secret:
        return aad_error(401, "invalid_client", 7000215,
                         "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                         f"secret value, not the client secret ID, for a secret added to app '{client_id}'.")
    scopes = (form.get("scope") or "").split()
    resource = next((s[: -len("/.default")] for s in scopes if s.endswith("/.default")), None)
    if v1:
        resource = (form.get("resource") or "").rstrip("/") or None
        if resource is None:
            return aad_error(400, "invalid_resource", 500011, "The resource principal named (none) was not found in "
                             "the tenant: the v1 endpoint needs 'resource'.")
    if resource is None:
        return aad_error(400, "invalid_scope", 1002012,
                         f"The provided value for scope {' '.join(scopes) or '(none)'} is not valid. Client "
                         "credential flows must have a scope value with /.default suffixed to the resource "
                         "identifier (application ID URI).")
    seconds = lifetime()
    access_token, _ = issuer.mint(audience=resource, tenant=tenant, client_id=client_id,
                                  roles=roles_for_audience(app.roles, resource), lifetime_seconds=seconds)
    counters.count_token(client_id)
    if v1:
        now = int(time.time())
        return json_reply(200, {"token_type": "Bearer", "expires_in": str(max(1, round(seconds))),
                                "ext_expires_in": str(max(1, round(seconds))), "expires_on": str(now + round(seconds)),
                                "not_before": str(now), "resource": resource, "access_token": access_token})
    return json_reply(200, {"token_type": "Bearer", "expires_in": max(1, round(seconds)),
                            "ext_expires_in": max(1, round(seconds)), "access_token": access_token})
