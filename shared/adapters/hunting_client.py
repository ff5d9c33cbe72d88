"""The hunting client: one pooled HTTP session and one credential per process, three APIs, one result shape.

`run()` returns a value, never raises for an HTTP outcome:
    ApiReply(status, headers, body)   the service answered with an error status (body read with a size cap)
    TransportFailure(reason)          nothing usable came back: connect error, timeout, reset (transient)
    ResultStream                      200: the rows, parsed incrementally while they arrive

A ResultStream is consumed once. Its rows are read as chunks arrive (shared.core.result_body), so memory does not
grow with the number of rows; `columns` and `stats` are filled as their part of the body goes by. `raw_rows()`
gives each row's own bytes, which a JSON destination writes without encoding it again. A body cut short raises
`StreamBroken` from the row iterator.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from shared.adapters.http_session import read_capped
from shared.core.apis import APIS, ApiSpec, Cloud
from shared.core.classify import ErrorInfo, sign_in_refusal
from shared.core.envelope import ROW_CAP
from shared.core.errors import StreamBroken
from shared.core.result_body import BodyMalformed, row_value, rows_of
from shared.core.rows import Column, PartSummary
from shared.core.tenants import TenantConfig

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
ERROR_BODY_LIMIT = 64 * 1024
CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ApiReply:
    status: int
    headers: Mapping[str, str]
    body: str


@dataclass(frozen=True)
class TransportFailure:
    reason: str


@dataclass(frozen=True)
class SignInRefused:
    """A customer tenant's sign-in that cannot succeed as configured (consent, federated credential, secret): its
    hunts fail with the error, which names the tenant and the fix."""

    error: ErrorInfo


@dataclass(frozen=True)
class RunningTime:
    """What a call spent by its own wall clock, and the estimate the quota gate admitted it with."""

    wall_seconds: float
    reserved: float


@dataclass
class ResultStream:
    response: requests.Response
    spec: ApiSpec
    columns: list[Column] = field(default_factory=list)
    stats: dict[str, Any] | None = None
    row_count: int = 0
    row_cap: int = ROW_CAP
    parts: list[PartSummary] | None = None   # one API answer is never a split hunt's parts

    running_time: RunningTime | None = None   # the quota gate's charge for this call, settled after the rows

    def rows(self) -> Iterator[dict[str, Any]]:
        for row, text in self._pairs():
            yield row_value(text) if row is None else row

    def raw_rows(self) -> Iterator[bytes]:
        """Each row as the service wrote it (strict JSON on one line): what a JSON destination writes as it is."""
        for _, text in self._pairs():
            yield text

    def _pairs(self) -> Iterator[tuple[dict[str, Any] | None, bytes]]:
        schema_key, results_key, stats_key = self.spec.result_keys

        def other(key: str, value: Any) -> None:   # every API sends its schema and stats before its rows
            if key == schema_key and isinstance(value, list):
                self.columns = _columns(value)
            elif key == stats_key:
                self.stats = value if isinstance(value, dict) else None

        try:
            for pair in rows_of(self.response.iter_content(CHUNK_BYTES), results_key, other):
                self.row_count += 1
                yield pair
        except (requests.RequestException, BodyMalformed, OSError) as error:
            raise StreamBroken(f"the result stream broke after {self.row_count} rows: {type(error).__name__}") from None
        finally:
            self.response.close()

    def close(self) -> None:
        self.response.close()

    @property
    def answered_in(self) -> float:
        """Seconds from the request's first byte sent to the answer's head read: the call's own wall clock, without
        what the relay spent before sending (a token, a connection) or reading the rows after."""
        return self.response.elapsed.total_seconds()


ApiResult = ResultStream | ApiReply | TransportFailure | SignInRefused


def _columns(schema: list[Any]) -> list[Column]:
    # Graph has been seen with both name/type and Name/Type.
    return [Column(str(c.get("Name", c.get("name", ""))), str(c.get("Type", c.get("type", "")))) for c in schema]


class HuntingClient:
    def __init__(self, credentials: Callable[[TenantConfig | None], TokenCredential], session: requests.Session, *,
                 cloud: Cloud, base_url: str | None = None, row_cap: int = ROW_CAP) -> None:
        self._row_cap = row_cap
        self._credentials = credentials   # per tenant (shared.adapters.credentials.TenantCredentials)
        # azure-identity caches tokens, but concurrent first calls each fetch one: serialize per tenant.
        self._token_locks: dict[str | None, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._session = session
        self._cloud = cloud
        self._base_url = base_url

    def url_for(self, spec: ApiSpec) -> str:
        return (self._base_url or spec.base_url(self._cloud)) + spec.path

    def _token_lock(self, tenant: TenantConfig | None) -> threading.Lock:
        key = None if tenant is None else tenant.name
        with self._locks_lock:
            return self._token_locks.setdefault(key, threading.Lock())

    def run(self, api: str, query: str, timespan: str | None = None,
            tenant: TenantConfig | None = None) -> ApiResult:
        spec = APIS[api]
        body: dict[str, str] = {"Query": query}
        if timespan is not None:
            body["Timespan"] = timespan
        try:
            with self._token_lock(tenant):
                token = self._credentials(tenant).get_token(spec.scope(self._cloud)).token
        except ClientAuthenticationError as error:
            first_line = (error.message or type(error).__name__).splitlines()[0][:300]
            if tenant is not None:
                refused = sign_in_refusal(tenant, first_line)
                if refused is not None:
                    return SignInRefused(refused)
                return TransportFailure(f"could not get a token for the {api} API in tenant {tenant.name!r}: "
                                        f"{first_line}")
            # A misconfigured identity fails every hunt alike; retried with backoff until the hunt gives up.
            return TransportFailure(f"could not get a token for the {api} API: {first_line}")
        try:
            response = self._session.post(
                self.url_for(spec),
                data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                headers={"Authorization": "Bearer " + token, "Content-Type": "application/json; charset=utf-8",
                         "Accept": "application/json"},
                timeout=(CONNECT_TIMEOUT, spec.read_timeout),
                stream=True,
                allow_redirects=False,
            )
        except requests.Timeout:
            return TransportFailure(f"timed out waiting for the {api} API")
        except requests.RequestException as error:
            return TransportFailure(f"could not reach the {api} API: {type(error).__name__}")
        if response.status_code == 200:
            return ResultStream(response, spec, row_cap=self._row_cap)
        try:
            text = read_capped(response, ERROR_BODY_LIMIT).decode("utf-8", "replace")
        except (requests.RequestException, OSError) as error:
            return TransportFailure(f"the {api} API's error response broke: {type(error).__name__}")
        return ApiReply(response.status_code, dict(response.headers), text)

