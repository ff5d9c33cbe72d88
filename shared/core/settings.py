"""Settings: read once from the environment into a frozen object, validated all at once.

Every problem is collected and reported together, each naming the setting and how to fix it. A value that is
still an unresolved Key Vault reference (`@Microsoft.KeyVault(...)`) is treated as missing: the relay fails
closed rather than use the reference text as a secret. `SETTINGS` lists every setting the relay reads (the
README and the infrastructure contract tests are checked against it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from shared.core.apis import API_NAMES, CLOUD_NAMES, Api, Cloud
from shared.core.errors import SettingsError
from shared.core.relay_mark import parse_keys
from shared.core.webhook_signing import parse_secret

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
    Setting("HUNT_API", "mde", "Default API when a message names none: mde, m365d or graph"),
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
    Setting("HUNT_WEBHOOK_MAX_BYTES", "1000000", "The largest JSON envelope a webhook receives whole; a bigger result "
            "goes to a blob and the webhook gets a link to it (results_url)"),
    Setting("HUNT_LINK_LIFETIME", "1h", "How long a link to results (a read-only SAS) stays valid (e.g. 15m, 1h, "
            "1d; at most 7d)"),
)
_DEFAULTS = {s.name: s.default for s in SETTINGS}
_KEY_VAULT_REFERENCE = re.compile(r"\s*@Microsoft\.KeyVault\(", re.IGNORECASE)   # with match: a prefix
# With fullmatch only: "$" would match before a final newline.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTAINER = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
_QUEUE = _CONTAINER   # queue names follow the container rules: 3-63 lowercase letters, digits, single hyphens


@dataclass(frozen=True)
class StorageConfig:
    """How to reach the storage account: a connection string, or service URIs with an identity."""

    connection_string: str | None = None
    queue_url: str | None = None
    blob_url: str | None = None
    table_url: str | None = None
    client_id: str | None = None   # user-assigned identity for storage, when identity-based


@dataclass(frozen=True)
class Destination:
    name: str
    type: Literal["blob", "webhook", "queue"]
    container: str = ""
    prefix: str = ""
    gzip: bool = False              # blob: compress the result (<name>.gz, Content-Encoding: gzip)
    queue: str = ""                 # queue: the queue that receives the envelopes
    url: str = ""
    secret_setting: str | None = None
    secrets: tuple[str, ...] = ()   # resolved whsec_ values, never logged


@dataclass(frozen=True)
class Settings:
    storage: StorageConfig
    queue: str
    api: Api
    api_base_url: str | None
    cloud: Cloud
    auth: AuthMode
    client_id: str | None
    tenant_id: str | None
    client_secret: str | None = field(repr=False)
    certificate_path: str | None
    authority_host: str | None
    destinations: Mapping[str, Destination]
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
    templates_dir: str | None = None
    allow_raw_queries: bool = True
    quota_gate: bool = True
    gate_table: str = "huntquotagate"
    quota_windows: tuple[tuple[int, int], ...] = ((45, 60), (1500, 3600))   # (calls, seconds)
    webhook_max_bytes: int = 1_000_000
    link_lifetime_seconds: float = 3600.0

    @property
    def poison_queue(self) -> str:
        return self.queue + "-poison"


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '24h', '3d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 24h or 3d")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def load_settings(environ: Mapping[str, str]) -> Settings:
    problems: list[str] = []

    def get(name: str) -> str | None:
        value = environ.get(name)
        if value is not None and _KEY_VAULT_REFERENCE.match(value):
            problems.append(f"{name} is an unresolved Key Vault reference: the app could not read the secret. "
                            "Grant the app's identity 'Key Vault Secrets User' on the vault and check the secret URI")
            return None
        if value is None or value.strip() == "":
            return _DEFAULTS.get(name)
        return value.strip()

    def choice(name: str, allowed: tuple[str, ...]) -> str:
        value = (get(name) or "").lower()
        if value not in allowed:
            problems.append(f"{name}={value!r} is not allowed: use one of {', '.join(allowed)}")
            return allowed[0]
        return value

    def positive_int(name: str) -> int:
        value = get(name) or ""
        if not value.isdigit() or int(value) < 1:
            problems.append(f"{name}={value!r} must be a whole number of at least 1")
            return int(_DEFAULTS[name] or 1)
        return int(value)

    storage = _storage(environ, get, problems)
    api = cast(Api, choice("HUNT_API", API_NAMES))
    cloud = cast(Cloud, choice("HUNT_CLOUD", CLOUD_NAMES))
    auth = cast(AuthMode, choice("HUNT_AUTH", AUTH_MODES))
    client_id, tenant_id = get("AZURE_CLIENT_ID"), get("AZURE_TENANT_ID")
    client_secret, certificate = get("AZURE_CLIENT_SECRET"), get("AZURE_CLIENT_CERTIFICATE_PATH")
    if auth in ("client_secret", "certificate"):
        for name, value in (("AZURE_TENANT_ID", tenant_id), ("AZURE_CLIENT_ID", client_id)):
            if not value:
                problems.append(f"{name} is required with HUNT_AUTH={auth}: set it from the app registration")
    if auth == "client_secret" and not client_secret:
        problems.append("AZURE_CLIENT_SECRET is required with HUNT_AUTH=client_secret")
    if auth == "certificate" and not certificate:
        problems.append("AZURE_CLIENT_CERTIFICATE_PATH is required with HUNT_AUTH=certificate: a PEM with cert and key")

    allow_loopback = (get("HUNT_ALLOW_LOOPBACK_HTTP") or "false").lower() in ("1", "true", "yes")
    base_url = get("HUNT_API_BASE_URL")
    if base_url:
        base_url = base_url.rstrip("/")
        if not (base_url.startswith("https://") or (allow_loopback and _is_loopback_http(base_url))):
            problems.append(f"HUNT_API_BASE_URL={base_url!r} must be https:// (plain http only to a loopback "
                            "address, and only with HUNT_ALLOW_LOOPBACK_HTTP=true)")

    results_container = get("HUNT_RESULTS_CONTAINER") or "hunt-results"
    deadletter_container = get("HUNT_DEADLETTER_CONTAINER") or "hunt-deadletter"
    state_container = get("HUNT_STATE_CONTAINER") or "hunt-relay-state"
    for name, value in (("HUNT_RESULTS_CONTAINER", results_container),
                        ("HUNT_DEADLETTER_CONTAINER", deadletter_container), ("HUNT_STATE_CONTAINER", state_container)):
        if not _CONTAINER.fullmatch(value):
            problems.append(f"{name}={value!r} is not a valid container name (3-63 lowercase letters, digits, -)")
    destinations = _destinations(get("HUNT_DESTINATIONS"), get, problems)
    if not destinations:
        destinations = {"default": Destination("default", "blob", container=results_container)}
    default_destination = get("HUNT_DEFAULT_DESTINATION") or ("default" if "default" in destinations else "")
    if default_destination and default_destination not in destinations:
        problems.append(f"HUNT_DEFAULT_DESTINATION={default_destination!r} is not one of HUNT_DESTINATIONS: "
                        f"{', '.join(sorted(destinations))}")
    if not default_destination and len(destinations) == 1:
        default_destination = next(iter(destinations))
    try:
        max_age = parse_duration(get("HUNT_MAX_AGE") or "24h")
    except ValueError as error:
        problems.append(f"HUNT_MAX_AGE: {error}")
        max_age = 86400.0

    try:
        link_lifetime = parse_duration(get("HUNT_LINK_LIFETIME") or "1h")
    except ValueError as error:
        problems.append(f"HUNT_LINK_LIFETIME: {error}")
        link_lifetime = 3600.0
    if not 1 <= link_lifetime <= 7 * 86400:
        problems.append(f"HUNT_LINK_LIFETIME={get('HUNT_LINK_LIFETIME')!r} must be between 1s and 7d "
                        "(a user delegation key lasts at most 7 days)")
        link_lifetime = 3600.0

    windows = _quota_windows(get, positive_int, problems)
    gate_table = get("HUNT_GATE_TABLE") or "huntquotagate"
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", gate_table):
        problems.append(f"HUNT_GATE_TABLE={gate_table!r} is not a valid table name (3-63 letters and digits)")

    queue = get("HUNT_QUEUE") or "hunts"
    if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,55}[a-z0-9]", queue):
        problems.append(f"HUNT_QUEUE={queue!r} is not a valid queue name (3-56 lowercase letters, digits, -)")
    inline_secrets = _webhook_secrets("HUNT_INLINE_WEBHOOK_SECRETS", get("HUNT_INLINE_WEBHOOK_SECRETS"), problems)
    message_keys: list[bytes] = []
    if get("HUNT_MESSAGE_KEYS"):
        try:
            message_keys = parse_keys(get("HUNT_MESSAGE_KEYS") or "")
        except ValueError as error:
            problems.append(f"HUNT_MESSAGE_KEYS: {error}")
    settings = Settings(
        storage=storage, queue=queue, api=api, api_base_url=base_url, cloud=cloud, auth=auth,
        client_id=client_id, tenant_id=tenant_id, client_secret=client_secret, certificate_path=certificate,
        authority_host=get("AZURE_AUTHORITY_HOST"), destinations=destinations,
        default_destination=default_destination,
        webhook_allowed_hosts=frozenset(
            h.strip().lower() for h in (get("HUNT_WEBHOOK_ALLOWED_HOSTS") or "").split(",") if h.strip()),
        inline_webhook_secrets=inline_secrets, message_keys=tuple(message_keys), state_container=state_container,
        allow_loopback_http=allow_loopback, results_container=results_container,
        deadletter_container=deadletter_container, max_dequeue_count=positive_int("HUNT_MAX_DEQUEUE_COUNT"),
        max_attempts=positive_int("HUNT_MAX_ATTEMPTS"), max_age_seconds=max_age,
        quota_gate=(get("HUNT_QUOTA_GATE") or "true").lower() not in ("0", "false", "no", "off"),
        gate_table=gate_table, quota_windows=windows, templates_dir=get("HUNT_TEMPLATES_DIR"),
        allow_raw_queries=(get("HUNT_ALLOW_RAW_QUERIES") or "true").lower() not in ("0", "false", "no", "off"),
        webhook_max_bytes=positive_int("HUNT_WEBHOOK_MAX_BYTES"), link_lifetime_seconds=link_lifetime,
    )
    if problems:
        raise SettingsError(problems)
    return settings


def _quota_windows(get: Callable[[str], str | None], positive_int: Callable[[str], int],
                   problems: list[str]) -> tuple[tuple[int, int], ...]:
    text = get("HUNT_QUOTA_WINDOWS")
    if not text:
        return ((positive_int("HUNT_CALLS_PER_MINUTE"), 60), (positive_int("HUNT_CALLS_PER_HOUR"), 3600))
    windows = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+\s*[smhd]?)\s*", part)
        seconds = parse_duration(match.group(2)) if match else 0
        if not match or int(match.group(1)) < 1 or seconds < 1:
            problems.append(f"HUNT_QUOTA_WINDOWS: {part.strip()!r} is not CALLS/DURATION such as 45/60s or 1500/1h")
            continue
        windows.append((int(match.group(1)), int(seconds)))
    return tuple(windows)


def _is_loopback_http(url: str) -> bool:
    return bool(re.match(r"http://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(/|\Z)", url))


def _storage(environ: Mapping[str, str], get: Callable[[str], str | None], problems: list[str]) -> StorageConfig:
    connection = get("AzureWebJobsStorage")
    if connection:
        if connection.strip().lower() == "usedevelopmentstorage=true":
            problems.append("AzureWebJobsStorage=UseDevelopmentStorage=true is not supported: give Azurite's full "
                            "connection string (the local stack prints it)")
        return StorageConfig(connection_string=connection)
    prefix = "AzureWebJobsStorage__"
    account = environ.get(prefix + "accountName", "").strip()
    urls = {k: environ.get(f"{prefix}{k}ServiceUri", "").strip().rstrip("/") for k in ("queue", "blob", "table")}
    if account:
        urls = {k: v or f"https://{account}.{k}.core.windows.net" for k, v in urls.items()}
    if not (urls["queue"] and urls["blob"]):
        problems.append("AzureWebJobsStorage is not set: give a connection string, or AzureWebJobsStorage__accountName "
                        "(or __queueServiceUri and __blobServiceUri) with __credential=managedidentity")
    return StorageConfig(queue_url=urls["queue"] or None, blob_url=urls["blob"] or None,
                         table_url=urls["table"] or None, client_id=environ.get(prefix + "clientId") or None)


def _destinations(text: str | None, get: Callable[[str], str | None], problems: list[str]) -> dict[str, Destination]:
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        problems.append(f"HUNT_DESTINATIONS is not valid JSON ({error.msg} at character {error.pos})")
        return {}
    if not isinstance(raw, dict):
        problems.append("HUNT_DESTINATIONS must be a JSON object mapping names to destinations")
        return {}
    result: dict[str, Destination] = {}
    for name, spec in raw.items():
        where = f"HUNT_DESTINATIONS[{name!r}]"
        if not _NAME.fullmatch(name) or not isinstance(spec, dict):
            problems.append(f"{where}: a name of letters, digits, - and _ mapping to an object is required")
            continue
        kind = spec.get("type")
        if kind == "blob":
            container = str(spec.get("container", ""))
            if not _CONTAINER.fullmatch(container):
                problems.append(f"{where}: 'container' must be a valid blob container name, got {container!r}")
            prefix = str(spec.get("prefix", ""))
            if ".." in prefix or prefix.startswith("/"):
                problems.append(f"{where}: 'prefix' must be a relative path without '..'")
            gzip = spec.get("gzip", False)
            if not isinstance(gzip, bool):
                problems.append(f"{where}: 'gzip' must be true or false, got {gzip!r}")
            result[name] = Destination(name, "blob", container=container, prefix=prefix, gzip=gzip is True)
        elif kind == "queue":
            queue = str(spec.get("queue", ""))
            if not _QUEUE.fullmatch(queue):
                problems.append(f"{where}: 'queue' must be a valid queue name (3-63 lowercase letters, digits, -), "
                                f"got {queue!r}")
            result[name] = Destination(name, "queue", queue=queue)
        elif kind == "webhook":
            url = str(spec.get("url") or (get(str(spec["url_setting"])) if spec.get("url_setting") else "") or "")
            if not url.startswith(("https://", "http://")):
                problems.append(f"{where}: 'url' (or 'url_setting' naming a setting) must give an https URL")
            secret_setting = spec.get("secret_setting")
            secrets: tuple[str, ...] = ()
            if secret_setting:
                value = get(str(secret_setting))
                if not value:
                    problems.append(f"{where}: its signing secret setting {secret_setting} is not set")
                else:
                    secrets = _webhook_secrets(f"{where}: {secret_setting}", value, problems)
            result[name] = Destination(name, "webhook", url=url, secret_setting=secret_setting, secrets=secrets)
        else:
            problems.append(f"{where}: 'type' must be 'blob' or 'webhook' or 'queue', got {kind!r}")
    return result


def _webhook_secrets(name: str, value: str | None, problems: list[str]) -> tuple[str, ...]:
    """Space-separated whsec_ secrets, each checked now (a bad one is a settings error, not a failed delivery)."""
    secrets = tuple((value or "").split())
    for position, secret in enumerate(secrets, start=1):
        try:
            parse_secret(secret)
        except ValueError as error:
            problems.append(f"{name}: secret #{position}: {error}")
    return secrets
