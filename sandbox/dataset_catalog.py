"""The synthetic dataset's declarative half, read from ``dataset.toml``: every table's columns with their Kusto types,
and the lookup lists rows pick from. Also the known values, which the SQL in ``sandbox.dataset_rows`` needs as much as
the tests do; ``sandbox.dataset`` (the public face) re-exports them.

The file is checked as it is read, for what the SQL relies on and would otherwise get silently wrong (a device on an
unknown platform, an executable after the documents, other than four command lines to pick from).
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

# Found next to this module, not through the working directory. The sandbox runs from a checkout and is never
# deployed (.funcignore keeps sandbox/ out of the function package), so no packaging has to ship the file.
DATA_FILE = Path(__file__).parent / "dataset.toml"

KNOWN_DEVICE_NAME = "ws-fin-07.contoso.local"
KNOWN_DEVICE_ID = hashlib.sha1(KNOWN_DEVICE_NAME.encode()).hexdigest()  # noqa: S324 - a synthetic id, not security
KNOWN_ACCOUNT_NAME = "alice.martin"
KNOWN_ACCOUNT_DOMAIN = "contoso"
KNOWN_ACCOUNT_UPN = "alice.martin@contoso.com"
KNOWN_SENDER = "billing@c0ntoso-invoices.com"
KNOWN_FILE_NAME = "updater.exe"
KNOWN_SHA256 = hashlib.sha256(b"hunt-relay sandbox: updater.exe").hexdigest()
WINDOW_DAYS = 29
COMMAND_LINES = 4  # every executable's: a row picks its command line by a hash modulo this
SQL_TYPES = {"string": "VARCHAR", "long": "BIGINT", "int": "INTEGER", "datetime": "TIMESTAMP", "bool": "BOOLEAN",
             "dynamic": "JSON"}


class Device(NamedTuple):
    name: str
    os_platform: str
    device_type: str
    machine_group: str


class OsVersion(NamedTuple):
    version: str
    build: int | None = None  # None: DeviceInfo.OSBuild is null on the platform (Linux, macOS)


class Account(NamedTuple):
    name: str
    display_name: str


class Profile(NamedTuple):
    """A process or a file, as the process, initiating-process and file columns show it."""

    file_name: str
    folder_path: str
    size: int
    company: str = ""
    product: str = ""
    version: str = ""
    description: str = ""
    integrity: str = ""
    signer_type: str = ""
    signature_status: str = ""
    command_lines: list[str] | None = None  # None: a document, which no process event runs


class Endpoint(NamedTuple):
    url: str
    ip: str
    port: int
    ip_type: str
    protocol: str


class RegistryValue(NamedTuple):
    key: str
    value_name: str
    value_type: str
    value_data: str


class Alert(NamedTuple):
    title: str
    category: str
    severity: str
    service_source: str
    detection_source: str
    attack_techniques: str


class Sender(NamedTuple):
    address: str
    display_name: str
    domain: str
    ipv4: str


def _read() -> dict[str, Any]:
    with DATA_FILE.open("rb") as file:
        return tomllib.load(file)


_DATA = _read()
# Keyword construction: an unknown or missing key in the file fails here, naming the field.
DEVICES = [Device(**entry) for entry in _DATA["devices"]]
ACCOUNTS = [Account(**entry) for entry in _DATA["accounts"]]
ENDPOINTS = [Endpoint(**entry) for entry in _DATA["endpoints"]]
SENDERS = [Sender(**entry) for entry in _DATA["senders"]]
SUBJECTS: list[str] = list(_DATA["subjects"])
OS_VERSIONS = {platform: OsVersion(**entry) for platform, entry in _DATA["os_versions"].items()}
PROFILES = [Profile(**entry) for entry in _DATA["profiles"]]
REGISTRY = [RegistryValue(**entry) for entry in _DATA["registry"]]
ALERTS = [Alert(**entry) for entry in _DATA["alerts"]]
SCHEMA: dict[str, list[tuple[str, str]]] = {table: list(columns.items()) for table, columns in _DATA["tables"].items()}
EXECUTABLES = sum(1 for profile in PROFILES if profile.command_lines is not None)


def _check() -> None:
    problems = [f"{table}.{column}: unknown Kusto type {kusto!r}" for table, columns in SCHEMA.items()
                for column, kusto in columns if kusto not in SQL_TYPES]
    problems += [f"device {device.name}: no os_versions entry for {device.os_platform}" for device in DEVICES
                 if device.os_platform not in OS_VERSIONS]
    # Process events pick their target among the first EXECUTABLES profiles
    problems += [f"profile {profile.file_name}: an executable after the documents" for profile in PROFILES[EXECUTABLES:]
                 if profile.command_lines is not None]
    problems += [f"profile {profile.file_name}: {len(profile.command_lines)} command lines, not {COMMAND_LINES}"
                 for profile in PROFILES[:EXECUTABLES]
                 if profile.command_lines is not None and len(profile.command_lines) != COMMAND_LINES]
    if problems:
        raise ValueError(f"{DATA_FILE}: " + "; ".join(problems))


def _key(names: list[str], name: str, what: str) -> int:
    if name not in names:
        raise ValueError(f"{DATA_FILE}: no {what} {name!r}")
    return names.index(name)


def profile_key(file_name: str) -> int:
    """The place of the profile of *file_name*: the key the SQL joins ``lk.profiles`` on."""
    return _key([profile.file_name for profile in PROFILES], file_name, "profile")


_check()
KNOWN_DEVICE_KEY = _key([device.name for device in DEVICES], KNOWN_DEVICE_NAME, "device")
KNOWN_ACCOUNT_KEY = _key([account.name for account in ACCOUNTS], KNOWN_ACCOUNT_NAME, "account")
KNOWN_SENDER_KEY = _key([sender.address for sender in SENDERS], KNOWN_SENDER, "sender")
UPDATER_KEY = profile_key(KNOWN_FILE_NAME)
