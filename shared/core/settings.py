"""Settings: read once from the environment into a frozen object, validated all at once.

Every problem is collected and reported together, each naming the setting and how to fix it. A value that is
still an unresolved Key Vault reference (`@Microsoft.KeyVault(...)`) is treated as missing: the relay fails
closed rather than use the reference text as a secret. `SETTINGS` lists every setting the relay reads, with its
default: the one place defaults live (the README and the infrastructure contract tests are checked against it).
Booleans are `true/false/1/0/yes/no/on/off` in any case; anything else is an error naming the setting.

Only this module reads the environment (`load_settings(environ, ...)`; the platform's IDENTITY_ENDPOINT and
MSI_ENDPOINT included). Destinations are parsed by their own types (shared.delivery.registry, passed in as
`destination_types`): a type's `parse` returns an object with `name`, `type`, `queues` and `containers`
(DestinationConfig), and reports its problems with the rest. Pure: the environment is passed in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from shared.core.apis import API_NAMES, CLOUD_NAMES, Api, Cloud
from shared.core.errors import SettingsError
from shared.core.relay_mark import parse_keys
from shared.core.routing import LEGACY_MODES, LegacyMode
from shared.core.tenants import TenantConfig, parse_tenants
from shared.core.webhook_signing import parse_secret_list

AuthMode = Literal["managed_identity", "client_secret", "certificate"]
AUTH_MODES = ("managed_identity", "client_secret", "certificate")


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    description: str


SETTINGS: tuple[Setting, ...] = (
    Setting("AzureWebJobsStorage", None, "Storage for the queue, results and dead letters: a connection string, or "
            "identity-based with AzureWebJobsStorage__accountName (or __queueServiceUri/__blobServiceUri/"
            "__tableServiceUri), __credential=managedidentity and __clientId"),
    Setting("HUNT_QUEUE", "hunts", "The queue hunts arrive on; its poison queue is <name>-poison"),
    Setting("HUNT_API", "graph", "Default API when a message names none: graph (Microsoft Graph runHuntingQuery), or "
            "the retiring mde or m365d"),
    Setting("HUNT_LEGACY_APIS", "auto", "What a hunt that names mde or m365d does: auto (that API until it retires "
            "on 2027-02-01 or answers as retired, then Microsoft Graph), graph (always Graph) or legacy (always the "
            "API it names)"),
    Setting("HUNT_API_BASE_URL", None, "Overrides the API host (regional, sovereign, or the local sandbox)"),
    Setting("HUNT_CLOUD", "public", "public, gcc, gcchigh or dod: picks the sign-in authority, API host and scope"),
    Setting("HUNT_AUTH", "managed_identity", "managed_identity, client_secret or certificate"),
    Setting("AZURE_CLIENT_ID", None, "The user-assigned identity's client id, or the app's"),
    Setting("AZURE_TENANT_ID", None, "The tenant (client_secret, certificate)"),
    Setting("AZURE_CLIENT_SECRET", None, "The app's secret (client_secret); use a Key Vault reference in Azure"),
    Setting("AZURE_CLIENT_CERTIFICATE_PATH", None, "PEM file with the app's certificate and key (certificate)"),
    Setting("AZURE_AUTHORITY_HOST", None, "The sign-in authority; defaults from HUNT_CLOUD"),
    Setting("HUNT_DESTINATIONS", None, 'JSON object of named destinations, e.g. {"soc": {"type": "webhook", "url": '
            '"https://...", "secret_setting": "HUNT_SOC_SECRET"}, "archive": {"type": "blob", "container": '
            '"hunt-results", "prefix": "archive/"}}'),
    Setting("HUNT_DEFAULT_DESTINATION", None, "The destination used when a message names none"),
    Setting("HUNT_WEBHOOK_ALLOWED_HOSTS", "", "Comma-separated hosts an inline webhook URL in a message may use"),
    Setting("HUNT_INLINE_WEBHOOK_SECRETS", None, "Signing secrets (whsec_..., space-separated, the newest first) for "
            "inline webhook URLs; unset: inline deliveries are unsigned. Use a Key Vault reference in Azure"),
    Setting("HUNT_MESSAGE_KEYS", None, "Keys (base64 of 32+ random bytes, space-separated, the signing key first) "
            "that mark the relay's own queue copies; unset: a key the relay creates in HUNT_STATE_CONTAINER"),
    Setting("HUNT_STATE_CONTAINER", "hunt-relay-state", "Blob container for the relay's own state (the message "
            "key when HUNT_MESSAGE_KEYS is unset); only the relay's identity needs access"),
    Setting("HUNT_ALLOW_LOOPBACK_HTTP", "false", "Allow plain http to loopback addresses (the local stack only)"),
    Setting("HUNT_RESULTS_CONTAINER", "hunt-results", "Blob container of the built-in default destination"),
    Setting("HUNT_DEADLETTER_CONTAINER", "hunt-deadletter", "Blob container for dead-letter records"),
    Setting("HUNT_MAX_DEQUEUE_COUNT", "5", "Deliveries of one queue message before it goes to the poison queue "
            "(keep equal to host.json maxDequeueCount)"),
    Setting("HUNT_MAX_ATTEMPTS", "50", "Attempts (re-enqueues included) before a hunt is given up"),
    Setting("HUNT_MAX_AGE", "24h", "Age of a hunt after which it is given up (e.g. 90m, 24h, 3d)"),
    Setting("HUNT_TEMPLATES_DIR", None, "Folder of .kql hunt templates (default: templates/ beside the code)"),
    Setting("HUNT_ALLOW_RAW_QUERIES", "true", "false restricts the deployment to templates (no raw KQL in messages)"),
    Setting("HUNT_QUOTA_GATE", "true", "Share the tenant's call budget and 429 pauses across instances"),
    Setting("HUNT_GATE_TABLE", "huntquotagate", "Storage table holding the quota gate's state"),
    Setting("HUNT_CALLS_PER_MINUTE", "45", "Calls per minute the relay allows itself per API (the tenant quota)"),
    Setting("HUNT_CALLS_PER_HOUR", "1500", "Calls per hour the relay allows itself per API (the tenant quota)"),
    Setting("HUNT_QUOTA_WINDOWS", None, "Overrides the two above with any windows, e.g. '20/10s,1500/1h'"),
    Setting("HUNT_RUNTIME_BUDGET", "10m/1h,3h/1d", "The running time the relay lets its queries spend per window and "
            "API, e.g. '10m/1h,3h/1d' (mde's documented quota) or '15m/15m'; 'off': calls are paced only"),
    Setting("HUNT_TENANTS", None, 'JSON object of named customer tenants, e.g. {"contoso": {"tenant_id": "<guid>", '
            '"auth": "federated", "client_id": "<multi-tenant app id>", "destinations": ["contoso-results"]}}; '
            "unset: the home tenant only (see the README's Tenants)"),
    Setting("HUNT_DEFAULT_TENANT", None, "The tenant of a hunt that names none (with HUNT_TENANTS)"),
    Setting("HUNT_ROW_CAP", "100000", "The most rows the service returns for one query: a result of this many is "
            "reported as possibly truncated, and a split hunt's part of this many is split again"),
    Setting("HUNT_SPLIT_MIN", "1m", "The shortest part a split hunt's time range is cut into (e.g. 30s, 1m, 1h)"),
    Setting("HUNT_SPLIT_MAX_PARTS", "1000", "The most parts one split hunt is cut into; a part still at a cap then "
            "is delivered as it came, flagged truncated"),
    Setting("HUNT_JOB_LEDGER", "true", "Keep a job ledger: every hunt's state in a table (the HTTP API and "
            "`status`/`wait` read it)"),
    Setting("HUNT_JOBS_TABLE", "huntjobs", "Storage table of the job ledger"),
    Setting("HUNT_JOB_RETENTION", "7d", "How long the ledger keeps a job after its last update (e.g. 1d, 7d)"),
    Setting("HUNT_BREAKER", "true", "A circuit breaker per webhook and queue destination, shared by every instance: "
            "an open one keeps results (delivery-only retries) without calling the destination"),
    Setting("HUNT_BREAKER_TABLE", "huntbreakers", "Storage table of the circuit breakers"),
    Setting("HUNT_BREAKER_FAILURES", "5", "Consecutive failed deliveries (within HUNT_BREAKER_WINDOW) that open a "
            "destination's circuit"),
    Setting("HUNT_BREAKER_WINDOW", "5m", "The time within which HUNT_BREAKER_FAILURES failures open the circuit"),
    Setting("HUNT_BREAKER_COOL_OFF", "1m", "How long an open circuit waits before one probe delivery tries the "
            "destination again"),
    Setting("HUNT_API_KEYS", None, "The HTTP API's keys: names of the settings that hold them, space-separated; with "
            "HUNT_TENANTS each as NAME:tenant1,tenant2 (or NAME:* for all)"),
    Setting("HUNT_API_AUDIENCE", None, "Accept Entra ID bearer tokens for this audience (the API's app ID URI, "
            "e.g. api://hunt-relay) from the home tenant (AZURE_TENANT_ID)"),
    Setting("HUNT_API_AUTH_LEVEL", "function", "Under Functions: function (the host checks function keys) or "
            "anonymous (App Service authentication with Entra ID checks callers, and the relay checks the token)"),
    Setting("HUNT_API_CALLERS", None, "The apps whose bearer tokens may call the API: client ids, space-separated; "
            "with HUNT_TENANTS each as APPID:tenant1,tenant2 (or APPID:*)"),
    Setting("HUNT_API_INLINE_MAX_BYTES", "1000000", "The largest result GET /api/hunts/{id} returns inline; a "
            "bigger one comes as results_url"),
    Setting("HUNT_SCHEDULES_DIR", None, "Folder of schedule files (*.json) the scheduler runs (default: schedules/ "
            "beside the code)"),
    Setting("HUNT_LOG_LEVEL", "INFO", "The portable worker's log level (DEBUG, INFO, WARNING, ERROR)"),
    Setting("HUNT_WEBHOOK_MAX_BYTES", "1000000", "The largest JSON envelope a webhook receives whole; a bigger result "
            "goes to a blob and the webhook gets a link to it (results_url)"),
    Setting("HUNT_LINK_LIFETIME", "1h", "How long a link to results (a read-only SAS) stays valid (e.g. 15m, 1h, "
            "1d; at most 7d)"),
)
_DEFAULTS = {s.name: s.default for s in SETTINGS}
_KEY_VAULT_REFERENCE = re.compile(r"\s*@Microsoft\.KeyVault\(", re.IGNORECASE)   # with match: a prefix
# With fullmatch only: "$" would match before a final newline.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
CONTAINER_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")   # 3-63 lowercase, digits, single hyphens
QUEUE_NAME = CONTAINER_NAME   # queue names follow the container rules
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
# Functions Core Tools' local.settings.json holds this: Azurite on its default ports, with its published key.
AZURITE_DEFAULT = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                   "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                   "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
                   "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
                   "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;")


@dataclass(frozen=True)
class StorageConfig:
    """How to reach the storage account: a connection string, or service URIs with an identity."""

    connection_string: str | None = None
    queue_url: str | None = None
    blob_url: str | None = None
    table_url: str | None = None
    client_id: str | None = None   # user-assigned identity for storage, when identity-based


class DestinationConfig(Protocol):
    """A configured destination, as its type parsed it (shared.delivery.base.Destination adds `build`)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def queues(self) -> tuple[str, ...]: ...
    @property
    def containers(self) -> tuple[str, ...]: ...


class DestinationParser(Protocol):
    def parse(self, name: str, spec: Mapping[str, Any], setting: Callable[[str], str | None],
              problems: list[str]) -> DestinationConfig: ...


@dataclass(frozen=True)
class Settings:
    storage: StorageConfig
    queue: str
    api: Api
    legacy_apis: LegacyMode
    api_base_url: str | None
    cloud: Cloud
    auth: AuthMode
    client_id: str | None
    tenant_id: str | None
    client_secret: str | None = field(repr=False)
    certificate_path: str | None
    authority_host: str | None
    identity_endpoint: str | None   # the platform's managed identity endpoint, when there is one
    destinations: Mapping[str, DestinationConfig]
    default_destination: str
    webhook_allowed_hosts: frozenset[str]
    inline_webhook_secrets: tuple[str, ...] = field(repr=False)
    message_keys: tuple[bytes, ...] = field(repr=False)
    state_container: str
    allow_loopback_http: bool
    results_container: str
    deadletter_container: str
    max_dequeue_count: int
    max_attempts: int
    max_age_seconds: float
    templates_dir: str | None
    allow_raw_queries: bool
    quota_gate: bool
    gate_table: str
    quota_windows: tuple[tuple[int, int], ...]   # (calls, seconds)
    webhook_max_bytes: int
    link_lifetime_seconds: float
    log_level: str
    row_cap: int = 100_000
    split_min_seconds: float = 60.0
    split_max_parts: int = 1000
    job_ledger: bool = True
    jobs_table: str = "huntjobs"
    job_retention_seconds: float = 7 * 86400
    runtime_budget: tuple[tuple[float, int], ...] = ((600.0, 3600), (10800.0, 86400))   # (seconds, window seconds)
    breaker: bool = True
    breaker_table: str = "huntbreakers"
    breaker_failures: int = 5
    breaker_window_seconds: float = 300.0
    breaker_cool_off_seconds: float = 60.0
    api_keys: tuple[ApiKey, ...] = field(default=(), repr=False)
    api_inline_max_bytes: int = 1_000_000
    api_audience: str | None = None
    schedules_dir: str | None = None
    api_auth_level: str = "function"
    api_callers: tuple[ApiCaller, ...] = ()
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)   # empty: the home tenant only
    default_tenant: str | None = None

    @property
    def poison_queue(self) -> str:
        return self.queue + "-poison"


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '24h', '3d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 24h or 3d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class _Reader:
    """Reads settings from the environment, collecting every problem."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        """The value as set (stripped), or None when unset or empty; an unresolved Key Vault reference is a
        problem."""
        value = self.environ.get(name)
        if value is not None and _KEY_VAULT_REFERENCE.match(value):
            self.problems.append(f"{name} is an unresolved Key Vault reference: the app could not read the secret. "
                                 "Grant the app's identity 'Key Vault Secrets User' on the vault and check the "
                                 "secret URI")
            return None
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def get(self, name: str) -> str | None:
        """The value, or the setting's default (from SETTINGS) when unset."""
        value = self.raw(name)
        return value if value is not None else _DEFAULTS.get(name)

    def text(self, name: str) -> str:
        """A setting that has a default."""
        return self.get(name) or ""

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name).lower()
        if value not in allowed:
            self.problems.append(f"{name}={value!r} is not allowed: use one of {', '.join(allowed)}")
            return allowed[0]
        return value

    def boolean(self, name: str) -> bool:
        value = self.text(name).lower()
        if value in _TRUE:
            return True
        if value not in _FALSE:
            self.problems.append(f"{name}={value!r} is not a boolean: use true or false (also 1/0, yes/no, on/off)")
        return False

    def positive_int(self, name: str) -> int:
        value = self.text(name)
        if not value.isdigit() or int(value) < 1:
            self.problems.append(f"{name}={value!r} must be a whole number of at least 1")
            return 1
        return int(value)

    def duration(self, name: str, low: float, high: float | None = None, why: str = "") -> float:
        try:
            seconds = parse_duration(self.text(name))
        except ValueError as error:
            self.problems.append(f"{name}: {error}")
            return low
        if not (low <= seconds and (high is None or seconds <= high)):
            self.problems.append(f"{name}={self.text(name)!r} must be between {low:g}s and {high:g}s{why}")
            return low
        return seconds

    def name(self, name: str, pattern: re.Pattern[str], what: str) -> str:
        value = self.text(name)
        if not pattern.fullmatch(value):
            self.problems.append(f"{name}={value!r} is not a valid {what}")
        return value


def load_settings(environ: Mapping[str, str], destination_types: Mapping[str, DestinationParser]) -> Settings:
    read = _Reader(environ)
    storage = _storage(read)
    api = cast(Api, read.choice("HUNT_API", API_NAMES))
    cloud = cast(Cloud, read.choice("HUNT_CLOUD", CLOUD_NAMES))
    auth = cast(AuthMode, read.choice("HUNT_AUTH", AUTH_MODES))
    client_id, tenant_id = read.get("AZURE_CLIENT_ID"), read.get("AZURE_TENANT_ID")
    client_secret, certificate = read.get("AZURE_CLIENT_SECRET"), read.get("AZURE_CLIENT_CERTIFICATE_PATH")
    if auth in ("client_secret", "certificate"):
        for name, value in (("AZURE_TENANT_ID", tenant_id), ("AZURE_CLIENT_ID", client_id)):
            if not value:
                read.problems.append(f"{name} is required with HUNT_AUTH={auth}: set it from the app registration")
    if auth == "client_secret" and not client_secret:
        read.problems.append("AZURE_CLIENT_SECRET is required with HUNT_AUTH=client_secret")
    if auth == "certificate" and not certificate:
        read.problems.append("AZURE_CLIENT_CERTIFICATE_PATH is required with HUNT_AUTH=certificate: a PEM with cert "
                             "and key")

    allow_loopback = read.boolean("HUNT_ALLOW_LOOPBACK_HTTP")
    base_url = read.get("HUNT_API_BASE_URL")
    if base_url:
        base_url = base_url.rstrip("/")
        if not (base_url.startswith("https://") or (allow_loopback and _is_loopback_http(base_url))):
            read.problems.append(f"HUNT_API_BASE_URL={base_url!r} must be https:// (plain http only to a loopback "
                                 "address, and only with HUNT_ALLOW_LOOPBACK_HTTP=true)")
    container = "container name (3-63 lowercase letters, digits, -)"
    results_container = read.name("HUNT_RESULTS_CONTAINER", CONTAINER_NAME, container)
    deadletter_container = read.name("HUNT_DEADLETTER_CONTAINER", CONTAINER_NAME, container)
    state_container = read.name("HUNT_STATE_CONTAINER", CONTAINER_NAME, container)
    destinations = _destinations(read, destination_types)
    if not destinations and "blob" in destination_types:
        destinations = {"default": destination_types["blob"].parse(
            "default", {"type": "blob", "container": results_container}, read.get, read.problems)}
    default_destination = read.get("HUNT_DEFAULT_DESTINATION") or ("default" if "default" in destinations else "")
    if default_destination and default_destination not in destinations:
        read.problems.append(f"HUNT_DEFAULT_DESTINATION={default_destination!r} is not one of HUNT_DESTINATIONS: "
                             f"{', '.join(sorted(destinations))}")
    if not default_destination and len(destinations) == 1:
        default_destination = next(iter(destinations))
    message_keys: list[bytes] = []
    if read.get("HUNT_MESSAGE_KEYS"):
        try:
            message_keys = parse_keys(read.text("HUNT_MESSAGE_KEYS"))
        except ValueError as error:
            read.problems.append(f"HUNT_MESSAGE_KEYS: {error}")
    tenants = _tenants(read, destinations)
    default_tenant = read.get("HUNT_DEFAULT_TENANT")
    if default_tenant is not None and default_tenant not in tenants:
        read.problems.append(f"HUNT_DEFAULT_TENANT={default_tenant!r} is not one of HUNT_TENANTS: "
                             f"{', '.join(sorted(tenants)) or 'none (HUNT_TENANTS is not set)'}")
    log_level = read.text("HUNT_LOG_LEVEL").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        read.problems.append(f"HUNT_LOG_LEVEL={log_level!r} is not allowed: use DEBUG, INFO, WARNING or ERROR")
    settings = Settings(
        storage=storage, queue=read.name("HUNT_QUEUE", re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,55}[a-z0-9]"),
                                         "queue name (3-56 lowercase letters, digits, -)"),
        api=api, legacy_apis=cast(LegacyMode, read.choice("HUNT_LEGACY_APIS", LEGACY_MODES)),
        api_base_url=base_url, cloud=cloud, auth=auth, client_id=client_id, tenant_id=tenant_id,
        client_secret=client_secret, certificate_path=certificate, authority_host=read.get("AZURE_AUTHORITY_HOST"),
        identity_endpoint=read.raw("IDENTITY_ENDPOINT") or read.raw("MSI_ENDPOINT"),
        destinations=destinations, default_destination=default_destination,
        webhook_allowed_hosts=frozenset(
            h.strip().lower() for h in read.text("HUNT_WEBHOOK_ALLOWED_HOSTS").split(",") if h.strip()),
        inline_webhook_secrets=parse_secret_list("HUNT_INLINE_WEBHOOK_SECRETS", read.get("HUNT_INLINE_WEBHOOK_SECRETS"),
                                                 read.problems),
        message_keys=tuple(message_keys), state_container=state_container, allow_loopback_http=allow_loopback,
        results_container=results_container, deadletter_container=deadletter_container,
        max_dequeue_count=read.positive_int("HUNT_MAX_DEQUEUE_COUNT"),
        max_attempts=read.positive_int("HUNT_MAX_ATTEMPTS"), max_age_seconds=read.duration("HUNT_MAX_AGE", 1),
        templates_dir=read.get("HUNT_TEMPLATES_DIR"), allow_raw_queries=read.boolean("HUNT_ALLOW_RAW_QUERIES"),
        quota_gate=read.boolean("HUNT_QUOTA_GATE"),
        gate_table=read.name("HUNT_GATE_TABLE", re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}"),
                             "table name (3-63 letters and digits)"),
        quota_windows=_quota_windows(read), runtime_budget=_runtime_budget(read),
        webhook_max_bytes=read.positive_int("HUNT_WEBHOOK_MAX_BYTES"),
        link_lifetime_seconds=read.duration("HUNT_LINK_LIFETIME", 1, 7 * 86400,
                                            " (a user delegation key lasts at most 7 days)"),
        log_level=log_level, row_cap=read.positive_int("HUNT_ROW_CAP"), tenants=tenants,
        job_ledger=read.boolean("HUNT_JOB_LEDGER"),
        jobs_table=read.name("HUNT_JOBS_TABLE", re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}"),
                             "table name (3-63 letters and digits)"),
        job_retention_seconds=read.duration("HUNT_JOB_RETENTION", 60, 365 * 86400),
        breaker=read.boolean("HUNT_BREAKER"),
        breaker_table=read.name("HUNT_BREAKER_TABLE", re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}"),
                                "table name (3-63 letters and digits)"),
        breaker_failures=read.positive_int("HUNT_BREAKER_FAILURES"),
        breaker_window_seconds=read.duration("HUNT_BREAKER_WINDOW", 1, 86400),
        breaker_cool_off_seconds=read.duration("HUNT_BREAKER_COOL_OFF", 1, 86400),
        api_keys=_api_keys(read, tenants), api_inline_max_bytes=read.positive_int("HUNT_API_INLINE_MAX_BYTES"),
        api_audience=_api_audience(read, tenant_id), api_callers=_api_callers(read, tenants, tenant_id),
        api_auth_level=read.choice("HUNT_API_AUTH_LEVEL", ("function", "anonymous")),
        schedules_dir=read.get("HUNT_SCHEDULES_DIR"),
        default_tenant=default_tenant,
        split_min_seconds=read.duration("HUNT_SPLIT_MIN", 0.001, 30 * 86400, " (a part of the 30-day data window)"),
        split_max_parts=read.positive_int("HUNT_SPLIT_MAX_PARTS"),
    )
    if read.problems:
        raise SettingsError(read.problems)
    return settings


def parse_quota_windows(text: str) -> tuple[tuple[int, int], ...]:
    """'45/60s,1500/1h' -> ((45, 60), (1500, 3600)); ValueError naming the first bad window."""
    windows = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+\s*[smhd]?)\s*", part)
        seconds = parse_duration(match.group(2)) if match else 0
        if not match or int(match.group(1)) < 1 or seconds < 1:
            raise ValueError(f"{part.strip()!r} is not CALLS/DURATION such as 45/60s or 1500/1h")
        windows.append((int(match.group(1)), int(seconds)))
    return tuple(windows)


def parse_runtime_budget(text: str) -> tuple[tuple[float, int], ...]:
    """'10m/1h,3h/1d' -> ((600.0, 3600), (10800.0, 86400)); 'off' -> (); ValueError naming the first bad window."""
    if text.strip().lower() == "off":
        return ()
    windows = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?\s*[smhd]?)\s*/\s*(\d+\s*[smhd]?)\s*", part)
        budget = parse_duration(match.group(1)) if match else 0
        seconds = parse_duration(match.group(2)) if match else 0
        if not match or budget <= 0 or seconds < 1:
            raise ValueError(f"{part.strip()!r} is not RUNNING-TIME/WINDOW such as 10m/1h or 3h/1d; or 'off'")
        windows.append((float(budget), int(seconds)))
    return tuple(windows)


def _runtime_budget(read: _Reader) -> tuple[tuple[float, int], ...]:
    try:
        return parse_runtime_budget(read.get("HUNT_RUNTIME_BUDGET") or "")
    except ValueError as error:
        read.problems.append(f"HUNT_RUNTIME_BUDGET: {error}")
        return ()


def _quota_windows(read: _Reader) -> tuple[tuple[int, int], ...]:
    text = read.get("HUNT_QUOTA_WINDOWS")
    if not text:
        return ((read.positive_int("HUNT_CALLS_PER_MINUTE"), 60), (read.positive_int("HUNT_CALLS_PER_HOUR"), 3600))
    try:
        return parse_quota_windows(text)
    except ValueError as error:
        read.problems.append(f"HUNT_QUOTA_WINDOWS: {error}")
        return ()


@dataclass(frozen=True)
class ApiKey:
    """One key of the HTTP API, and the tenants it may act for (None: every tenant, or the home tenant)."""

    setting: str
    value: str = field(repr=False)
    tenants: frozenset[str] | None = None


def _api_keys(read: _Reader, tenants: Mapping[str, TenantConfig]) -> tuple[ApiKey, ...]:
    text = read.get("HUNT_API_KEYS")
    if not text:
        return ()
    keys = []
    for entry in text.split():
        name, _, scope = entry.partition(":")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
            read.problems.append(f"HUNT_API_KEYS: {entry!r} is not a setting name (NAME, or NAME:tenant1,tenant2)")
            continue
        value = read.raw(name)
        if not value or len(value) < 16:
            read.problems.append(f"HUNT_API_KEYS: the setting {name} must hold a key of at least 16 characters")
            continue
        allowed: frozenset[str] | None = None
        if tenants and scope != "*":
            allowed = frozenset(t for t in scope.split(",") if t)
            unknown = sorted(allowed - set(tenants))
            if not allowed or unknown:
                read.problems.append(f"HUNT_API_KEYS: {name} must name the tenants it may act for ({name}:tenant1,"
                                     f"tenant2 or {name}:*)" + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
                continue
        elif not tenants and scope:
            read.problems.append(f"HUNT_API_KEYS: {name}:{scope} names tenants, but HUNT_TENANTS is not set")
            continue
        keys.append(ApiKey(name, value, allowed))
    return tuple(keys)


@dataclass(frozen=True)
class ApiCaller:
    """An app whose Entra ID bearer tokens may call the HTTP API, and the tenants it may act for (None: all)."""

    app_id: str
    tenants: frozenset[str] | None = None


def _api_audience(read: _Reader, tenant_id: str | None) -> str | None:
    audience = read.get("HUNT_API_AUDIENCE")
    if audience and not tenant_id:
        read.problems.append("HUNT_API_AUDIENCE needs AZURE_TENANT_ID: the tenant whose tokens the API accepts")
    return audience


def _api_callers(read: _Reader, tenants: Mapping[str, TenantConfig], tenant_id: str | None) -> tuple[ApiCaller, ...]:
    if read.get("HUNT_API_AUDIENCE") and not read.get("HUNT_API_CALLERS"):
        read.problems.append("HUNT_API_CALLERS is required with HUNT_API_AUDIENCE: the client ids of the apps that "
                             "may call the API (any app of the tenant could get a token for the audience)")
    callers = []
    for entry in (read.get("HUNT_API_CALLERS") or "").split():
        app_id, _, scope = entry.partition(":")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}", app_id):
            read.problems.append(f"HUNT_API_CALLERS: {entry!r} is not an app's client id (APPID or APPID:tenants)")
            continue
        allowed: frozenset[str] | None = None
        if tenants and scope != "*":
            allowed = frozenset(t for t in scope.split(",") if t)
            if not allowed or allowed - set(tenants):
                read.problems.append(f"HUNT_API_CALLERS: {app_id} must name the tenants it may act for "
                                     f"({app_id}:tenant1,tenant2 or {app_id}:*)")
                continue
        callers.append(ApiCaller(app_id, allowed))
    return tuple(callers)


def _tenants(read: _Reader, destinations: Mapping[str, DestinationConfig]) -> dict[str, TenantConfig]:
    text = read.get("HUNT_TENANTS")
    if not text:
        return {}
    try:
        spec = json.loads(text)
    except ValueError as error:
        read.problems.append(f"HUNT_TENANTS is not valid JSON: {error}")
        return {}
    return parse_tenants(spec, setting=read.raw, destinations=destinations, parse_windows=parse_quota_windows,
                         parse_budget=parse_runtime_budget,
                         problems=read.problems)


def _is_loopback_http(url: str) -> bool:
    return bool(re.match(r"http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|\Z)", url))


def _storage(read: _Reader) -> StorageConfig:
    connection = read.get("AzureWebJobsStorage")
    if connection:
        if connection.strip().lower() == "usedevelopmentstorage=true":
            return StorageConfig(connection_string=AZURITE_DEFAULT)
        return StorageConfig(connection_string=connection)
    prefix = "AzureWebJobsStorage__"
    account = read.raw(prefix + "accountName") or ""
    urls = {k: (read.raw(f"{prefix}{k}ServiceUri") or "").rstrip("/") for k in ("queue", "blob", "table")}
    if account:
        urls = {k: v or f"https://{account}.{k}.core.windows.net" for k, v in urls.items()}
    if not (urls["queue"] and urls["blob"]):
        read.problems.append("AzureWebJobsStorage is not set: give a connection string, or AzureWebJobsStorage__"
                             "accountName (or __queueServiceUri and __blobServiceUri) with "
                             "__credential=managedidentity")
    return StorageConfig(queue_url=urls["queue"] or None, blob_url=urls["blob"] or None,
                         table_url=urls["table"] or None, client_id=read.raw(prefix + "clientId"))


def _destinations(read: _Reader, types: Mapping[str, DestinationParser]) -> dict[str, DestinationConfig]:
    text = read.get("HUNT_DESTINATIONS")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        read.problems.append(f"HUNT_DESTINATIONS is not valid JSON ({error.msg} at character {error.pos})")
        return {}
    if not isinstance(raw, dict):
        read.problems.append("HUNT_DESTINATIONS must be a JSON object mapping names to destinations")
        return {}
    result: dict[str, DestinationConfig] = {}
    for name, spec in raw.items():
        where = f"HUNT_DESTINATIONS[{name!r}]"
        if not _NAME.fullmatch(name) or not isinstance(spec, dict):
            read.problems.append(f"{where}: a name of letters, digits, - and _ mapping to an object is required")
            continue
        kind = spec.get("type")
        if not isinstance(kind, str) or kind not in types:
            read.problems.append(f"{where}: 'type' must be one of {', '.join(repr(t) for t in sorted(types))}, "
                                 f"got {kind!r}")
            continue
        result[name] = types[kind].parse(name, spec, read.get, read.problems)
    return result
