"""Tenants: one relay hunting in many customer tenants (HUNT_TENANTS), each with its own identity, quota,
destinations and storage scope.

    HUNT_TENANTS = {"contoso": {"tenant_id": "<guid>", "auth": "federated", "client_id": "<multi-tenant app id>",
                                "api": "graph", "quota": "45/1m,1500/1h",
                                "destinations": ["contoso-results", "contoso-soc"],
                                "webhook_allowed_hosts": ["contoso-soc.example.com"]}}

    auth           federated      the relay's managed identity signs in as the app (workload identity federation:
                                  its token for api://AzureADTokenExchange is the app's client assertion); no secret
                   client_secret  `secret_setting`: the name of the setting that holds the secret
                   certificate    `certificate_setting`: the name of the setting that holds the PEM file's path
    api            the API of the tenant's hunts that name none (default HUNT_API)
    quota          the tenant's call windows (default HUNT_QUOTA_WINDOWS, or the per-minute and per-hour settings)
    destinations   the configured destinations (HUNT_DESTINATIONS) the tenant's hunts may use; the first is the
                   tenant's default. A destination belongs to one tenant only
    webhook_allowed_hosts   the hosts an inline webhook URL of the tenant's hunts may use (default none)
    identity_client_id      federated only: the client id of the relay's user-assigned identity that signs in
                            (default AZURE_CLIENT_ID under HUNT_AUTH=managed_identity, else the system identity)

Everything the relay keeps for a tenant lives under its scope, `tenants/<name>/`, in every container: results and
failure envelopes, dead letters, kept deliveries, result links, split parts. Without HUNT_TENANTS the relay is
what it always was: one home tenant, unscoped names. Parsing is pure: settings are passed in as a lookup, and every
problem names the tenant and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from shared.core.apis import API_NAMES, Api
from shared.core.errors import InvalidHuntRequest

TenantAuth = Literal["federated", "client_secret", "certificate"]
TENANT_AUTHS: tuple[TenantAuth, ...] = ("federated", "client_secret", "certificate")
# Used with fullmatch only. A tenant's name stands in blob names and table keys.
TENANT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_TENANT_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                        r"|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_FIELDS = {"tenant_id", "auth", "client_id", "secret_setting", "certificate_setting", "api", "quota",
           "runtime_budget", "destinations", "webhook_allowed_hosts", "identity_client_id"}
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 (an audience, not a secret)
TOKEN_EXCHANGE_SCOPE = TOKEN_EXCHANGE_AUDIENCE + "/.default"


@dataclass(frozen=True)
class TenantConfig:
    name: str
    tenant_id: str
    auth: TenantAuth
    client_id: str
    destinations: tuple[str, ...]
    webhook_allowed_hosts: frozenset[str] = frozenset()
    api: Api | None = None
    quota_windows: tuple[tuple[int, int], ...] | None = None   # (calls, seconds); None: the relay's own
    runtime_budget: tuple[tuple[float, int], ...] | None = None   # (seconds, window seconds); None: the relay's own
    secret: str | None = field(default=None, repr=False)
    certificate_path: str | None = None
    identity_client_id: str | None = None

    @property
    def scope(self) -> str:
        return scope_of(self.name)


def scope_of(tenant: str | None) -> str:
    """Where a tenant's blobs live in every container: `tenants/<name>/`; the home tenant's are unscoped."""
    return "" if tenant is None else f"tenants/{tenant}/"


def parse_tenants(spec: Any, *, setting: Callable[[str], str | None], destinations: Mapping[str, Any],
                  parse_windows: Callable[[str], tuple[tuple[int, int], ...]],
                  problems: list[str],
                  parse_budget: Callable[[str], tuple[tuple[float, int], ...]] | None = None
                  ) -> dict[str, TenantConfig]:
    """HUNT_TENANTS (already JSON-decoded) -> tenants by name; problems are appended, naming tenant and field."""
    if not isinstance(spec, dict) or not spec:
        problems.append("HUNT_TENANTS must be a non-empty JSON object of tenant name -> settings")
        return {}
    tenants: dict[str, TenantConfig] = {}
    owner: dict[str, str] = {}
    for name, fields in spec.items():
        where = f"HUNT_TENANTS.{name}"
        if name == "home":
            problems.append(f"{where}: 'home' names the relay's own tenant (in circuit keys and on the ops page); "
                            "give the customer tenant another name")
            continue
        if not TENANT_NAME.fullmatch(str(name)):
            problems.append(f"{where}: a tenant name is 1-32 lowercase letters, digits and -, starting and ending "
                            "with a letter or digit")
            continue
        if not isinstance(fields, dict):
            problems.append(f"{where} must be a JSON object")
            continue
        tenant = _tenant(name, fields, where, setting, destinations, parse_windows, problems, parse_budget)
        if tenant is None:
            continue
        for destination in tenant.destinations:
            if destination in owner:
                problems.append(f"{where}.destinations: {destination!r} is already tenant {owner[destination]!r}'s; "
                                "a destination belongs to one tenant (give each tenant its own)")
            owner[destination] = name
        tenants[name] = tenant
    return tenants


def _tenant(name: str, fields: dict[str, Any], where: str, setting: Callable[[str], str | None],
            destinations: Mapping[str, Any], parse_windows: Callable[[str], tuple[tuple[int, int], ...]],
            problems: list[str],
            parse_budget: Callable[[str], tuple[tuple[float, int], ...]] | None = None) -> TenantConfig | None:
    before = len(problems)
    for unknown in sorted(set(fields) - _FIELDS):
        problems.append(f"{where}.{unknown}: unknown field; allowed: {', '.join(sorted(_FIELDS))}")

    def text(key: str, pattern: re.Pattern[str] | None, what: str, required: bool = True) -> str | None:
        value = fields.get(key)
        if value is None:
            if required:
                problems.append(f"{where}.{key} is required: {what}")
            return None
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            problems.append(f"{where}.{key}={str(value)[:80]!r} is not {what}")
            return None
        return value

    tenant_id = text("tenant_id", _TENANT_ID, "the customer's directory (tenant) id, a GUID")
    auth = text("auth", None, f"one of {', '.join(TENANT_AUTHS)}")
    if auth is not None and auth not in TENANT_AUTHS:
        problems.append(f"{where}.auth={auth!r} is not allowed: use one of {', '.join(TENANT_AUTHS)}")
    client_id = text("client_id", _CLIENT_ID, "the (multi-tenant) app's client id")
    secret = certificate = None
    for key, kind in (("secret_setting", "client_secret"), ("certificate_setting", "certificate")):
        setting_name = text(key, _SETTING, "the name of a setting", required=auth == kind)
        if setting_name is not None and auth != kind:
            problems.append(f"{where}.{key} is only for auth {kind!r}")
        elif setting_name is not None:
            value = setting(setting_name)
            if not value:
                problems.append(f"{where}.{key}: the setting {setting_name} is not set (in Azure, a Key Vault "
                                "reference)")
            elif kind == "client_secret":
                secret = value
            else:
                certificate = value
    identity = text("identity_client_id", _CLIENT_ID, "a managed identity's client id", required=False)
    if identity is not None and auth != "federated":
        problems.append(f"{where}.identity_client_id is only for auth 'federated'")
    api = fields.get("api")
    if api is not None and api not in API_NAMES:
        problems.append(f"{where}.api={str(api)[:40]!r} is not allowed: use one of {', '.join(API_NAMES)}")
    windows = None
    quota = text("quota", None, "call windows such as 45/1m,1500/1h", required=False)
    if quota is not None:
        try:
            windows = parse_windows(quota)
        except ValueError as error:
            problems.append(f"{where}.quota: {error}")
    budget = None
    runtime = text("runtime_budget", None, "running-time windows such as 10m/1h,3h/1d, or off", required=False)
    if runtime is not None:
        try:
            if parse_budget is None:
                raise ValueError("running-time budgets are not read here")
            budget = parse_budget(runtime)
        except ValueError as error:
            problems.append(f"{where}.runtime_budget: {error}")
    listed = fields.get("destinations")
    if not isinstance(listed, list) or not listed or not all(isinstance(d, str) for d in listed):
        problems.append(f"{where}.destinations is required: a list of the HUNT_DESTINATIONS names its hunts may use")
        listed = []
    for destination in listed:
        if destination not in destinations:
            problems.append(f"{where}.destinations: {destination!r} is not one of HUNT_DESTINATIONS "
                            f"({', '.join(sorted(destinations)) or 'none'})")
    hosts = fields.get("webhook_allowed_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h.strip() for h in hosts):
        problems.append(f"{where}.webhook_allowed_hosts must be a list of host names")
        hosts = []
    if len(problems) > before:
        return None
    assert tenant_id is not None and auth is not None and client_id is not None
    return TenantConfig(name=name, tenant_id=tenant_id, auth=cast(TenantAuth, auth), client_id=client_id,
                        destinations=tuple(dict.fromkeys(listed)),
                        webhook_allowed_hosts=frozenset(h.strip().lower() for h in hosts),
                        api=cast(Api, api) if api is not None else None, quota_windows=windows,
                        runtime_budget=budget, secret=secret,
                        certificate_path=certificate, identity_client_id=identity)


def check_tenant(tenant: str | None, tenants: Mapping[str, TenantConfig]) -> None:
    """InvalidHuntRequest when a hunt's tenant is not one of the relay's, or it needs one and names none (the
    default tenant already applied)."""
    if tenant is None and tenants:
        raise InvalidHuntRequest("tenant", f"is required: this relay hunts in the tenants {', '.join(tenants)} "
                                 "and has no HUNT_DEFAULT_TENANT")
    if tenant is not None and tenant not in tenants:
        raise InvalidHuntRequest("tenant", f"unknown tenant {tenant!r}: " + (
            f"this relay's tenants are {', '.join(tenants)}" if tenants else
            "this relay has no HUNT_TENANTS; send the hunt without 'tenant'"))
