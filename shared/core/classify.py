"""What an API response means for the hunt: a pure decision, tested as a table.

    status                               verdict     why
    200                                  Success     rows follow
    429                                  Throttled   the tenant's quota; the delay comes from shared.core.delays
    400 "exceeded the allowed result     Terminal    the query as written returns too much: narrow it
        size"
    400 "preempted"                      Terminal    the query used too many resources: narrow it
    400 (anything else)                  Terminal    the KQL or the request body is wrong
    401                                  Terminal    the token is not accepted (audience, tenant, expiry)
    403                                  Terminal    the identity lacks the API's application permission
    404, 405, 413, other 4xx             Terminal    wrong endpoint or request: retrying cannot help
    408, 500, 502, 503, 504, other 5xx   Transient   the service or the path to it failed: try again later
    a connection error or timeout        Transient   (decided by the client: no status to classify)

Terminal verdicts carry a code, the service's message and a hint a person can act on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from shared.core.apis import ApiSpec
from shared.core.tenants import TenantConfig

NARROW_HINT = ("narrow the query: a shorter time range (where Timestamp > ago(1d)), fewer columns (project), "
               "a filter on DeviceName or AccountName, or summarize instead of returning raw rows")


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str
    http_status: int | None = None
    hint: str | None = None

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {"code": self.code, "message": self.message}
        if self.http_status is not None:
            result["http_status"] = self.http_status
        if self.hint:
            result["hint"] = self.hint
        return result


@dataclass(frozen=True)
class Success:
    pass


@dataclass(frozen=True)
class Throttled:
    pass


@dataclass(frozen=True)
class Transient:
    reason: str


@dataclass(frozen=True)
class Terminal:
    error: ErrorInfo


Verdict = Success | Throttled | Transient | Terminal


def envelope_error(body: str) -> tuple[str | None, str | None]:
    """(code, message) of the service's error envelope (`error.code`, `error.message`; a token endpoint's
    `error_description`), each None when absent. The relay's one reader of the services' error bodies."""
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(envelope, dict):
        return None, None
    error = envelope.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return (code if isinstance(code, str) else None), (message if isinstance(message, str) else None)
    description = envelope.get("error_description")
    return None, (description if isinstance(description, str) else None)


def envelope_message(body: str) -> str | None:
    """The message of the service's error envelope, or None when the body is not such an envelope."""
    return envelope_error(body)[1]


def service_message(body: str) -> str:
    """The `error.message` of the service's envelope, or the body's start when it has no envelope."""
    message = envelope_message(body)
    return message[:2000] if message is not None else body.strip()[:500]


def classify(status: int, body: str, api: ApiSpec) -> Verdict:
    if 200 <= status < 300:
        return Success()
    if status == 429:
        return Throttled()
    message = service_message(body)
    lowered = message.lower()
    if status == 400:
        if "allowed result size" in lowered:
            return Terminal(ErrorInfo("ResultTooLarge", message, status, "the result is too large; " + NARROW_HINT))
        if "preempted" in lowered:
            return Terminal(ErrorInfo("QueryPreempted", message, status, "the query was too costly; " + NARROW_HINT))
        return Terminal(ErrorInfo("QueryError", message, status, "fix the KQL (or the request) and send it again"))
    if status == 401:
        return Terminal(ErrorInfo("Unauthorized", message, status,
                                  f"the {api.title} API refused the token: check that it was issued for "
                                  f"{api.hosts['public']} (HUNT_CLOUD, HUNT_API) in the right tenant"))
    if status == 403:
        return Terminal(ErrorInfo("Forbidden", message, status,
                                  f"grant the application permission {api.role} on '{api.resource_name}' to the "
                                  f"relay's identity (python -m shared grant-permission --principal-id <id> "
                                  f"--api {api.name}); new roles can take minutes to reach tokens"))
    if status == 408 or status >= 500:
        return Transient(f"HTTP {status} from the {api.name} API: {message[:200]}")
    return Terminal(ErrorInfo("RequestRejected", message, status,
                              "check HUNT_API_BASE_URL and HUNT_API: the service did not accept the request"))


# AADSTS codes of a sign-in that cannot succeed until someone changes the configuration, and what to change.
_CONSENT = ("the app {client_id} is not consented in tenant {name!r} ({tenant_id}), or its consent was revoked: the "
            "tenant's admin opens the URL that `python -m shared grant-permission --tenant {name}` prints")
_FEDERATION = ("the app {client_id} has no federated credential for the relay's managed identity: create it with "
               "`python -m shared grant-permission --tenant {name} --create-federated-credential` (docs/deploy.md)")
_CREDENTIAL_FIX = ("the secret (or certificate) for tenant {name!r} is wrong or expired: add a new one to the app "
                   "{client_id} and put it in the setting its secret_setting (certificate_setting) names")
_SIGN_IN_FIXES = {
    700016: _CONSENT, 65001: _CONSENT, 7000112: _CONSENT, 500011: _CONSENT,
    70021: _FEDERATION, 700211: _FEDERATION, 700212: _FEDERATION, 700213: _FEDERATION, 700024: _FEDERATION,
    7000215: _CREDENTIAL_FIX, 7000222: _CREDENTIAL_FIX, 700027: _CREDENTIAL_FIX,
    90002: "tenant {name!r}: the directory {tenant_id} does not exist: check HUNT_TENANTS.{name}.tenant_id",
}
_AADSTS = re.compile(r"AADSTS(\d+)")


def sign_in_refusal(tenant: TenantConfig, message: str) -> ErrorInfo | None:
    """A customer tenant's failed sign-in as a failure naming the tenant and the fix, when the AADSTS code says it
    cannot succeed as configured; None for anything else (a network fault, the authority down: transient)."""
    found = _AADSTS.search(message)
    fix = _SIGN_IN_FIXES.get(int(found.group(1))) if found else None
    if fix is None:
        return None
    return ErrorInfo("SignInFailed", f"tenant {tenant.name!r}: the sign-in as app {tenant.client_id} failed: "
                     f"{message[:300]}", None, fix.format(name=tenant.name, client_id=tenant.client_id,
                                                           tenant_id=tenant.tenant_id))
