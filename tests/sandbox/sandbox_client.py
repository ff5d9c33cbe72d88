"""Helpers the sandbox's own tests share: real tokens from the real credentials, and calls with `requests`."""

from __future__ import annotations

import time
from typing import Any

import requests
from azure.identity import ClientSecretCredential

from sandbox.server import HUNTING_PATHS, Sandbox
from sandbox.tokens import APIS

PATHS: dict[str, str] = {api: path for path, api in reversed(HUNTING_PATHS.items())}   # the first path per API

SEED_QUERY = (
    'DeviceProcessEvents | where InitiatingProcessFileName =~ "powershell.exe" '
    "| project Timestamp, FileName, InitiatingProcessFileName | order by Timestamp desc | limit 2"
)
SEED_QUERY_APPDATA = (
    "DeviceProcessEvents\n| where InitiatingProcessFileName =~ 'powershell.exe'\n"
    "| where ProcessCommandLine contains 'appdata'\n"
    "| project Timestamp, FileName, InitiatingProcessFileName, DeviceId\n| limit 2"
)
SMALL_QUERY = "DeviceProcessEvents | take 1"


def secret_credential(sandbox: Sandbox, tenant: str = "sandbox-tenant", client_id: str = "sandbox-client",
                      secret: str = "sandbox-secret") -> ClientSecretCredential:
    return ClientSecretCredential(tenant, client_id, secret, authority=sandbox.authority,
                                  disable_instance_discovery=True, connection_verify=sandbox.ca_path)


def token_for(sandbox: Sandbox, api: str, **app: str) -> str:
    """A real token for `api`'s audience from the sandbox's authority (the default app unless told)."""
    return secret_credential(sandbox, **app).get_token(APIS[api].audience + "/.default").token


def hunt(sandbox: Sandbox, api: str, query: str | None = SMALL_QUERY, *, token: str | None = None,
         session: requests.Session | None = None, timeout: float = 30.0, **body: Any) -> requests.Response:
    """POSTs {"Query": query, **body} to `api`'s endpoint with a bearer token (fetched if not given)."""
    payload: dict[str, Any] = dict(body)
    if query is not None:
        payload["Query"] = query
    bearer = token if token is not None else token_for(sandbox, api)
    return (session or requests).post(sandbox.api_url + PATHS[api], json=payload, timeout=timeout,
                                      headers={"Authorization": f"Bearer {bearer}"})


def wait_for_fresh_window(window_seconds: float, needed: float) -> None:
    """Sleeps past the next epoch-aligned window boundary if fewer than `needed` seconds are left in this one,
    so that a test's calls all land in one window."""
    left = window_seconds - (time.time() % window_seconds)
    if left < needed:
        time.sleep(left + 0.02)


def sleep_past_window(window_seconds: float) -> None:
    time.sleep(window_seconds - (time.time() % window_seconds) + 0.02)
