"""The three advanced hunting APIs and the clouds they live in: paths, hosts, token scopes, roles, limits.

Facts from Microsoft's documentation (see the kit's reference/defender-api.md). Sovereign hosts marked
"unverified" there are kept as documented and can always be overridden with HUNT_API_BASE_URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Api = Literal["mde", "m365d", "graph"]
Cloud = Literal["public", "gcc", "gcchigh", "dod"]
API_NAMES: tuple[str, ...] = get_args(Api)
CLOUD_NAMES: tuple[str, ...] = get_args(Cloud)


@dataclass(frozen=True)
class ApiSpec:
    name: Api
    title: str
    path: str
    role: str                      # the application permission the token must carry
    resource_app_id: str           # the app that owns the role (for granting it)
    resource_name: str
    hosts: dict[str, str]          # cloud -> API base URL (also the token audience)
    request_limit_seconds: float   # the service's own limit for one request
    result_keys: tuple[str, str, str]  # (schema, results, stats) as this API spells them

    def base_url(self, cloud: Cloud) -> str:
        return self.hosts[cloud]

    def scope(self, cloud: Cloud) -> str:
        # The audience is the API's own host even when a regional host serves the request.
        return self.hosts[cloud] + "/.default"

    @property
    def read_timeout(self) -> float:
        # The service's limit plus a margin for the response to arrive.
        return self.request_limit_seconds + 15.0


APIS: dict[str, ApiSpec] = {
    "mde": ApiSpec(
        name="mde",
        title="Microsoft Defender for Endpoint",
        path="/api/advancedqueries/run",
        role="AdvancedQuery.Read.All",
        resource_app_id="fc780465-2017-40d4-a0c5-307022471b92",
        resource_name="WindowsDefenderATP",
        hosts={
            "public": "https://api.securitycenter.microsoft.com",
            "gcc": "https://api-gcc.securitycenter.microsoft.us",
            "gcchigh": "https://api-gov.securitycenter.microsoft.us",
            "dod": "https://api-gov.securitycenter.microsoft.us",
        },
        request_limit_seconds=200.0,
        result_keys=("Schema", "Results", "Stats"),
    ),
    "m365d": ApiSpec(
        name="m365d",
        title="Microsoft Defender XDR",
        path="/api/advancedhunting/run",
        role="AdvancedHunting.Read.All",
        resource_app_id="8ee8fdad-f234-4243-8f3b-15c294843740",
        resource_name="Microsoft Threat Protection",
        hosts={
            "public": "https://api.security.microsoft.com",
            "gcc": "https://api-gcc.security.microsoft.us",
            "gcchigh": "https://api-gov.security.microsoft.us",
            "dod": "https://api-gov.security.microsoft.us",
        },
        request_limit_seconds=180.0,
        result_keys=("Schema", "Results", "Stats"),
    ),
    "graph": ApiSpec(
        name="graph",
        title="Microsoft Graph security runHuntingQuery",
        path="/v1.0/security/runHuntingQuery",
        role="ThreatHunting.Read.All",
        resource_app_id="00000003-0000-0000-c000-000000000000",
        resource_name="Microsoft Graph",
        hosts={
            "public": "https://graph.microsoft.com",
            "gcc": "https://graph.microsoft.com",
            "gcchigh": "https://graph.microsoft.us",
            "dod": "https://dod-graph.microsoft.us",
        },
        request_limit_seconds=180.0,
        result_keys=("schema", "results", "stats"),
    ),
}

AUTHORITY_HOSTS: dict[str, str] = {
    "public": "login.microsoftonline.com",
    "gcc": "login.microsoftonline.com",
    "gcchigh": "login.microsoftonline.us",
    "dod": "login.microsoftonline.us",
}
