"""The SQL every synthetic dataset table is built from: the query shape each table's rows come out of, the helpers its
column expressions use, and ``COMMON``, the expressions of the columns several tables share.

A table's query selects from ``range(n)``: ``b`` is the row (``i``; ``k``, what its choices hash; ``ts``; four hashes
``hx``..``hw`` whose bits the columns pick with), joined to its device ``d``, account ``a``, initiating and target
profiles ``ip``/``cp`` and their command lines ``ipc``/``cpc`` (the ``lk.*`` lookups ``sandbox.dataset`` creates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sandbox.dataset_catalog import (
    ACCOUNTS,
    COMMAND_LINES,
    DEVICES,
    EXECUTABLES,
    KNOWN_ACCOUNT_KEY,
    KNOWN_DEVICE_KEY,
    KNOWN_FILE_NAME,
    PROFILES,
    SCHEMA,
    SQL_TYPES,
    UPDATER_KEY,
    WINDOW_DAYS,
    profile_key,
)


def lit(text: str) -> str:
    """*text* as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def pick(values: list[str] | list[int], bits: str, sql_type: str = "VARCHAR") -> str:
    """The value at ``bits % len(values)``: a deterministic choice from a literal list."""
    items = ", ".join(lit(v) if isinstance(v, str) else str(v) for v in values)
    return f"CAST([{items}] AS {sql_type}[])[1 + CAST(({bits}) % {len(values)} AS BIGINT)]"


def for_account(expr: str) -> str:
    """*expr* with dataset.toml's ``{user}`` and ``{sid}`` placeholders filled from the row's account."""
    return f"replace(replace({expr}, '{{user}}', a.AccountName), '{{sid}}', a.AccountSid)"


def _pid(bits: str, shift: int) -> str:
    return f"CAST(4 + 4 * (({bits} >> {shift}) % 16000) AS BIGINT)"


def guid(expr: str) -> str:
    """A GUID-shaped string from the md5 of *expr*."""
    groups = r"'^(.{8})(.{4})(.{4})(.{4})(.{12})$', '\1-\2-\3-\4-\5'"
    return f"regexp_replace(md5(CAST({expr} AS VARCHAR)), {groups})"


# Initiating processes, weighted: powershell.exe is common, as it is in hunts
INITIATORS = [profile_key(name) for name in [*["powershell.exe"] * 5, *["cmd.exe"] * 3, *["explorer.exe"] * 3,
                                             *["svchost.exe"] * 3, "OUTLOOK.EXE", "WINWORD.EXE", "chrome.exe",
                                             KNOWN_FILE_NAME, "rundll32.exe"]]
_PARENTS = ["explorer.exe", "svchost.exe", "services.exe", "userinit.exe", "WmiPrvSE.exe", "OUTLOOK.EXE"]
_ELEVATION = ["TokenElevationTypeDefault", "TokenElevationTypeLimited", "TokenElevationTypeFull"]
DYNAMIC = """CASE b.hw % 5 WHEN 0 THEN NULL
  WHEN 1 THEN json_object('ProcessStartKey', b.i * 7919 + 17, 'IsRemote', b.hz % 17 = 0)
  WHEN 2 THEN json_object('Note', 'naïve "quoted" C:\\Temp\\x', 'Tags', ['review', '报告', '😀'])
  WHEN 3 THEN json_object('Nested', json_object('Level', 2, 'Items', [1, 2, 3]), 'Missing', NULL)
  ELSE json_object() END"""
_SESSION = "b.hz % 17 = 0"
_LOGON_ID = "CAST((b.hw >> 20) % 100000000 AS BIGINT)"
ACCOUNT_COLUMNS = {"Domain": "AccountDomain", "Name": "AccountName", "Sid": "AccountSid", "Upn": "AccountUpn",
                   "ObjectId": "AccountObjectId"}
_VERSION = {"CompanyName": "Company", "ProductName": "Product", "ProductVersion": "Version",
            "InternalFileName": "InternalName", "OriginalFileName": "OriginalName", "FileDescription": "Description"}

# Column -> SQL over the joined row. Tables override what differs.
COMMON: dict[str, str] = {
    "Timestamp": "b.ts", "DeviceId": "d.DeviceId", "DeviceName": "d.DeviceName", "ActionType": "'ProcessCreated'",
    "FileName": "cp.FileName", "FolderPath": for_account("cp.FolderPath"), "SHA1": "cp.SHA1", "MD5": "cp.MD5",
    "SHA256": f"CASE WHEN cp.k = {UPDATER_KEY} OR b.hz % 3 = 0 THEN cp.SHA256 ELSE '' END",
    "FileSize": "CASE WHEN b.hy % 23 = 0 THEN NULL ELSE cp.FileSize END",
    **{f"ProcessVersionInfo{name}": f"cp.{column}" for name, column in _VERSION.items()},
    **{f"InitiatingProcessVersionInfo{name}": f"ip.{column}" for name, column in _VERSION.items()},
    **{f"InitiatingProcessAccount{name}": f"a.{column}" for name, column in ACCOUNT_COLUMNS.items()},
    **{column: f"a.{column}" for column in ACCOUNT_COLUMNS.values()},
    "ProcessId": _pid("b.hy", 16), "ProcessCommandLine": for_account("coalesce(cpc.CommandLine, '')"),
    "ProcessIntegrityLevel": "cp.Integrity", "ProcessTokenElevation": pick(_ELEVATION, "b.hz >> 4"),
    "ProcessCreationTime": "b.ts - to_microseconds(CAST(b.hz % 5000 AS BIGINT))",
    "LogonId": _LOGON_ID, "InitiatingProcessLogonId": _LOGON_ID, "InitiatingProcessIntegrityLevel": "ip.Integrity",
    "InitiatingProcessTokenElevation": pick(_ELEVATION, "b.hw >> 4"),
    "InitiatingProcessSHA1": "ip.SHA1", "InitiatingProcessMD5": "ip.MD5", "InitiatingProcessFileName": "ip.FileName",
    "InitiatingProcessSHA256": "CASE WHEN b.hw % 2 = 0 THEN ip.SHA256 ELSE '' END",
    "InitiatingProcessFileSize": "ip.FileSize",
    "InitiatingProcessId": _pid("b.hx", 16),
    "InitiatingProcessCommandLine": for_account("coalesce(ipc.CommandLine, '')"),
    "InitiatingProcessCreationTime": "b.ts - to_microseconds(CAST((b.hx >> 20) % 3600000000 AS BIGINT))",
    "InitiatingProcessFolderPath": for_account("ip.FolderPath"), "InitiatingProcessParentId": _pid("b.hx", 40),
    "InitiatingProcessParentFileName": pick(_PARENTS, "b.hx >> 8"),
    "InitiatingProcessParentCreationTime": "CASE WHEN b.hx % 11 <> 0 THEN b.ts "
                                           "- to_microseconds(CAST((b.hy >> 12) % 86400000000 AS BIGINT)) END",
    "InitiatingProcessSignerType": "ip.SignerType", "InitiatingProcessSignatureStatus": "ip.SignatureStatus",
    # Unique within a table (a counter that does not repeat in 65,536 rows, then runs on in the next block): a split
    # hunt's test counts every row exactly once by it.
    "ReportId": "CAST(1000 + (b.i * 7) % 65536 + (b.i // 65536) * 65536 AS BIGINT)",
    "AppGuardContainerId": "''", "AdditionalFields": DYNAMIC,
    "InitiatingProcessSessionId": "CAST(b.hz % 3 AS BIGINT)", "CreatedProcessSessionId": "CAST(b.hz % 3 AS BIGINT)",
    "IsInitiatingProcessRemoteSession": _SESSION, "IsProcessRemoteSession": _SESSION,
    "InitiatingProcessRemoteSessionDeviceName": f"CASE WHEN {_SESSION} THEN 'jump-01.contoso.local' ELSE '' END",
    "ProcessRemoteSessionDeviceName": f"CASE WHEN {_SESSION} THEN 'jump-01.contoso.local' ELSE '' END",
    "InitiatingProcessRemoteSessionIP": f"CASE WHEN {_SESSION} THEN '10.1.9.5' ELSE '' END",
    "ProcessRemoteSessionIP": f"CASE WHEN {_SESSION} THEN '10.1.9.5' ELSE '' END",
    "LocalIP": "d.LocalIP", "LocalIPType": "'Private'", "LocalPort": "CAST(49152 + (b.hz >> 8) % 16000 AS INTEGER)",
    "RemoteDeviceName": "''", "RemoteUrl": "''", "RemoteIP": "''", "RemotePort": "CAST(NULL AS INTEGER)",
    **{column: "''" for column in ("FileOriginUrl", "FileOriginIP", "RegistryKey", "RegistryValueName",
                                    "RegistryValueData")},
}


@dataclass(frozen=True)
class TableSpec:
    """One table: how many rows for a given DeviceProcessEvents size, and the SQL of its columns (``dataset.toml``
    lists them) where it differs from ``COMMON``. ``key`` is what a row's choices hash (AlertEvidence hashes its
    alert, so that an alert's three evidence rows and its AlertInfo row agree); ``base`` overrides the device,
    account, profile keys or time."""

    name: str
    size: Callable[[int], int]
    exprs: dict[str, str] = field(default_factory=dict)
    key: str = "i"
    salt: str = ""
    base: dict[str, str] = field(default_factory=dict)


def table_sql(spec: TableSpec, rows: int, seed: int, anchor: datetime, into: str) -> str:
    """The ``CREATE TABLE`` of *spec* in schema *into*, with the columns ``dataset.toml`` gives it, in that order."""
    salt = lit(spec.salt or spec.name)

    def hashed(name: str) -> str:
        return f"hash({spec.key}, $SEED, {salt}, '{name}')"

    # 1 row in 41 is on the known device and account, so every seed has them
    base = {"dk": f"CASE WHEN i % 41 = 0 THEN {KNOWN_DEVICE_KEY} ELSE $DEVICE END",
            "ak": f"CASE WHEN i % 41 = 0 THEN {KNOWN_ACCOUNT_KEY} ELSE $ACCOUNT END",
            "ik": "$INITIATOR", "ck": "$TARGET",
            "ts": f"$ANCHOR - to_microseconds(CAST($TSHASH % {WINDOW_DAYS * 86_400_000_000} AS BIGINT))", **spec.base}
    initiators = ", ".join(str(k) for k in INITIATORS)
    placeholders = {  # longest first: $TARGET must not eat part of another name
        "$INITIATOR": f"[{initiators}][1 + CAST({hashed('i')} % {len(INITIATORS)} AS BIGINT)]",
        "$ANYFILE": f"{hashed('c')} % {len(PROFILES)}", "$TARGET": f"{hashed('c')} % {EXECUTABLES}",
        "$ACCOUNT": f"{hashed('a')} % {len(ACCOUNTS)}", "$DEVICE": f"{hashed('d')} % {len(DEVICES)}",
        "$TSHASH": hashed("t"), "$KEY": f"({spec.key})", "$HX": hashed("x"),
        "$ANCHOR": f"TIMESTAMP '{anchor.isoformat(sep=' ')}'",
    }
    bits = ", ".join(f"{hashed(name)} AS h{name}" for name in ("x", "y", "z", "w"))
    keys = ", ".join(f"CAST({base[name]} AS INTEGER) AS {name}" for name in ("dk", "ak", "ik", "ck"))
    exprs = {**COMMON, **spec.exprs}
    missing = [column for column, _ in SCHEMA[spec.name] if column not in exprs]
    if missing:  # a column added to dataset.toml needs its SQL here or in the table's spec
        raise ValueError(f"{spec.name}: dataset.toml lists {missing}, which have no SQL")
    columns = ",\n  ".join(
        f'CAST(({exprs[column]}) AS {SQL_TYPES[kusto]}) AS "{column}"' for column, kusto in SCHEMA[spec.name])
    sql = f"""CREATE TABLE {into}."{spec.name}" AS
SELECT {columns}
FROM (SELECT i, {spec.key} AS k, {keys}, {bits}, {base['ts']} AS ts FROM range({spec.size(rows)}) r(i)) b
JOIN lk.devices d ON d.k = b.dk JOIN lk.accounts a ON a.k = b.ak
JOIN lk.profiles ip ON ip.k = b.ik JOIN lk.profiles cp ON cp.k = b.ck
LEFT JOIN lk.commands ipc ON ipc.k = b.ik AND ipc.j = CAST(b.hx % {COMMAND_LINES} AS INTEGER)
LEFT JOIN lk.commands cpc ON cpc.k = b.ck AND cpc.j = CAST(b.hy % {COMMAND_LINES} AS INTEGER)
ORDER BY b.i"""  # noqa: S608 - every part is the dataset's own text
    for placeholder, value in placeholders.items():
        sql = sql.replace(placeholder, value)
    return sql.replace("$SEED", str(int(seed)))
