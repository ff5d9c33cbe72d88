"""A synthetic, seeded, deterministic dataset of Defender advanced hunting tables, generated inside DuckDB.

Layout: ``dataset.toml`` holds what is declarative: every table's columns in order with their Kusto types, and the
lookup lists rows pick from (devices, accounts, process and file profiles with their command lines, endpoints,
registry values, alerts, senders, subjects). ``sandbox.dataset_catalog`` reads and checks it; ``sandbox.dataset_sql``
holds the query every table is built from and the column SQL tables share; ``sandbox.dataset_rows`` each table's own.
This module is the public face: the known values, ``schema()`` and ``load()``.

Column names, order and types follow Microsoft's advanced hunting schema reference (the defender-xdr
``advanced-hunting-<table>-table`` pages). ``AdditionalFields`` and ``DeviceInfo.LoggedOnUsers`` are dynamic, as the
service stores them (the Azure Monitor reference of the same tables, and IdentityLogonEvents' own page, say
``dynamic``; several Defender pages say ``string``): a hunt meets a JSON object there. Kusto strings are never null
(an absent string is ``""``), so nulls appear where the service has them: long, int, bool, datetime, dynamic.

Every row is computed in SQL from ``range(n)``: each choice is ``hash(row, seed, table, salt)`` modulo the size of a
small lookup table (devices, accounts, process and file profiles, command lines) or list, so the whole dataset for
150,000 process events loads in about three seconds on two cores, and the same seed gives the same rows in the same
order (for a given DuckDB version: ``hash()`` is DuckDB's, and for a given ``dataset.toml``: its lists' lengths and
order are what the hashes pick from).

Time layout: each row's ``Timestamp`` is ``anchor - offset``; the offset is a function of (row, seed) spread over
the 29 days before the anchor. The anchor is the moment of loading unless a test passes one, so ``ago(7d)`` finds
rows and a 30-day window still holds every row during a day of uptime.

Known values other tests can hunt for (present whatever the seed and size, from 1,000 rows up): ``KNOWN_SHA256``
(updater.exe, launched by powershell.exe from AppData: DeviceProcessEvents, DeviceFileEvents, AlertEvidence),
``KNOWN_DEVICE_NAME`` (every Device* table), ``KNOWN_ACCOUNT_NAME``/``KNOWN_ACCOUNT_UPN`` (DeviceLogonEvents,
IdentityLogonEvents, and the Account columns elsewhere), ``KNOWN_SENDER`` (EmailEvents).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import duckdb

from sandbox.dataset_catalog import (
    ACCOUNTS,
    DEVICES,
    KNOWN_ACCOUNT_DOMAIN,
    KNOWN_ACCOUNT_NAME,
    KNOWN_ACCOUNT_UPN,
    KNOWN_DEVICE_ID,
    KNOWN_DEVICE_NAME,
    KNOWN_FILE_NAME,
    KNOWN_SENDER,
    KNOWN_SHA256,
    OS_VERSIONS,
    PROFILES,
    SCHEMA,
    SQL_TYPES,
    UPDATER_KEY,
    WINDOW_DAYS,
)
from sandbox.dataset_rows import TABLES
from sandbox.dataset_sql import COMMON, TableSpec, table_sql

__all__ = ["COMMON", "KNOWN_ACCOUNT_DOMAIN", "KNOWN_ACCOUNT_NAME", "KNOWN_ACCOUNT_UPN", "KNOWN_DEVICE_ID",
           "KNOWN_DEVICE_NAME", "KNOWN_FILE_NAME", "KNOWN_SENDER", "KNOWN_SHA256", "SQL_TYPES", "TABLES", "WINDOW_DAYS",
           "TableSpec", "load", "schema"]

_SPECS = {spec.name: spec for spec in TABLES}


def schema() -> dict[str, list[tuple[str, str]]]:
    """Table -> [(column, Kusto type)], in schema order (``dataset.toml``'s)."""
    return {table: list(columns) for table, columns in SCHEMA.items()}  # copies: a caller may not edit the schema


def load(con: duckdb.DuckDBPyConnection, rows: int = 20_000, seed: int = 7, anchor: datetime | None = None,
         into: str = "main") -> None:
    """Create every table in schema *into* (SQL: ``main``, ``db.hunting``): *rows* DeviceProcessEvents rows, the others
    scaled from it.

    *anchor* (default: now) is the moment the newest rows approach; pass the same one to get identical tables.
    """
    if rows < 1:
        raise ValueError("rows must be positive")
    moment = (anchor or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    con.execute("CREATE SCHEMA lk")
    try:
        _create_lookups(con)
        for table in SCHEMA:
            con.execute(table_sql(_SPECS[table], rows, seed, moment, into))
    finally:
        con.execute("DROP SCHEMA IF EXISTS lk CASCADE")  # the lookups are scaffolding, not hunting tables


def _create_lookups(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""CREATE TABLE lk.devices (k INTEGER, DeviceId VARCHAR, DeviceName VARCHAR, OSPlatform VARCHAR,
        DeviceType VARCHAR, MachineGroup VARCHAR, LocalIP VARCHAR, PublicIP VARCHAR, OSVersion VARCHAR, OSBuild BIGINT,
        OSArchitecture VARCHAR, IsAzureADJoined BOOLEAN, JoinType VARCHAR, AadDeviceId VARCHAR, ClientVersion VARCHAR,
        Model VARCHAR, Vendor VARCHAR, OSDistribution VARCHAR, OSVersionInfo VARCHAR, DeviceManualTags VARCHAR)""")
    devices = []
    for k, (name, platform, device_type, group) in enumerate(DEVICES):
        windows = platform.startswith("Windows")
        version, build = OS_VERSIONS[platform]
        devices.append((
            k, hashlib.sha1(name.encode()).hexdigest(), name, platform, device_type, group,  # noqa: S324
            f"10.1.{k % 4}.{20 + k}", f"203.0.113.{10 + k % 4}", version, build, "64-bit",
            windows and device_type == "Workstation", "Hybrid Azure AD Join" if windows else "",
            str(uuid.uuid5(uuid.NAMESPACE_DNS, name)) if windows else "", "10.8760.22621.3593",
            "Latitude 7440" if device_type == "Workstation" else "PowerEdge R650", "Dell Inc." if windows else "",
            "Ubuntu" if platform == "Linux" else "", "23H2" if platform == "Windows11" else "",
            f'["{group}"]' if k % 3 == 0 else "[]",
        ))
    con.executemany("INSERT INTO lk.devices VALUES (" + ", ".join(["?"] * 20) + ")", devices)  # noqa: S608
    con.execute("""CREATE TABLE lk.accounts (k INTEGER, AccountName VARCHAR, AccountDomain VARCHAR, AccountUpn VARCHAR,
        AccountSid VARCHAR, AccountObjectId VARCHAR, DisplayName VARCHAR)""")
    con.executemany("INSERT INTO lk.accounts VALUES (?, ?, ?, ?, ?, ?, ?)", [
        (k, name, KNOWN_ACCOUNT_DOMAIN, f"{name}@contoso.com", f"S-1-5-21-1004336348-1177238915-682003330-{1103 + k}",
         str(uuid.uuid5(uuid.NAMESPACE_URL, f"contoso/{name}")), display)
        for k, (name, display) in enumerate(ACCOUNTS)])
    con.execute("""CREATE TABLE lk.profiles (k INTEGER, FileName VARCHAR, FolderPath VARCHAR, SHA1 VARCHAR,
        SHA256 VARCHAR, MD5 VARCHAR, FileSize BIGINT, Company VARCHAR, Product VARCHAR, Version VARCHAR,
        InternalName VARCHAR, OriginalName VARCHAR, Description VARCHAR, Integrity VARCHAR, SignerType VARCHAR,
        SignatureStatus VARCHAR)""")
    profiles, commands = [], []
    for k, profile in enumerate(PROFILES):
        name, lines = profile.file_name, profile.command_lines
        content = f"{name}|{profile.version}".encode()
        sha256 = KNOWN_SHA256 if k == UPDATER_KEY else hashlib.sha256(content).hexdigest()
        internal = name.rsplit(".", 1)[0] if lines else ""
        profiles.append((k, name, profile.folder_path, hashlib.sha1(content).hexdigest(), sha256,  # noqa: S324
                         hashlib.md5(content).hexdigest(), profile.size, profile.company,  # noqa: S324
                         profile.product, profile.version, internal, name.upper() if lines else "",
                         profile.description, profile.integrity, profile.signer_type, profile.signature_status))
        commands += [(k, j, line) for j, line in enumerate(lines or [])]
    con.executemany("INSERT INTO lk.profiles VALUES (" + ", ".join(["?"] * 16) + ")", profiles)  # noqa: S608
    con.execute("CREATE TABLE lk.commands (k INTEGER, j INTEGER, CommandLine VARCHAR)")
    con.executemany("INSERT INTO lk.commands VALUES (?, ?, ?)", commands)
