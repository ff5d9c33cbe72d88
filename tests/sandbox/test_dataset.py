"""The synthetic Defender dataset: real column names and types, deterministic rows, the values hunts look for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import duckdb_kql
import pytest

from sandbox import dataset, dataset_catalog, dataset_sql

ANCHOR = datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
REQUIRED_TABLES = {"DeviceProcessEvents", "DeviceNetworkEvents", "DeviceFileEvents", "DeviceLogonEvents",
                   "DeviceRegistryEvents", "DeviceEvents", "DeviceInfo", "AlertInfo", "AlertEvidence", "EmailEvents",
                   "IdentityLogonEvents"}
DATA_FILE = Path(dataset.__file__).with_name("dataset.toml")


def _data_file_tables() -> dict[str, list[tuple[str, str]]]:
    """The tables as dataset.toml itself says, read here rather than through the module under test."""
    with DATA_FILE.open("rb") as file:
        return {table: list(columns.items()) for table, columns in tomllib.load(file)["tables"].items()}


def _loaded(rows: int, seed: int, anchor: datetime = ANCHOR) -> duckdb.DuckDBPyConnection:
    con = duckdb_kql.connect()
    dataset.load(con, rows=rows, seed=seed, anchor=anchor)
    return con


def _all_rows(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[object, ...]]]:
    return {table: con.execute(f'SELECT * FROM "{table}"').fetchall() for table in dataset.schema()}  # noqa: S608


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = _loaded(rows=2_000, seed=7)
    yield connection
    connection.close()


def test_every_table_the_hunts_need_is_there(con: duckdb.DuckDBPyConnection) -> None:
    tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables >= REQUIRED_TABLES
    assert set(dataset.schema()) >= REQUIRED_TABLES


@pytest.mark.parametrize(("table", "column", "kusto_type"), [
    ("DeviceProcessEvents", "Timestamp", "datetime"),
    ("DeviceProcessEvents", "ProcessCommandLine", "string"),
    ("DeviceProcessEvents", "ProcessId", "long"),
    ("DeviceProcessEvents", "InitiatingProcessParentCreationTime", "datetime"),
    ("DeviceProcessEvents", "AdditionalFields", "dynamic"),
    ("DeviceNetworkEvents", "RemotePort", "int"),
    ("DeviceNetworkEvents", "IsInitiatingProcessRemoteSession", "bool"),
    ("DeviceFileEvents", "RequestSourcePort", "int"),
    ("DeviceFileEvents", "IsAzureInfoProtectionApplied", "bool"),
    ("DeviceLogonEvents", "IsLocalAdmin", "bool"),
    ("DeviceLogonEvents", "LogonId", "long"),
    ("DeviceRegistryEvents", "RegistryValueData", "string"),
    ("DeviceEvents", "CreatedProcessSessionId", "long"),
    ("DeviceInfo", "OSBuild", "long"),
    ("DeviceInfo", "LoggedOnUsers", "dynamic"),
    ("DeviceInfo", "IsAzureADJoined", "bool"),
    ("AlertInfo", "AttackTechniques", "string"),
    ("AlertEvidence", "ApplicationId", "int"),
    ("AlertEvidence", "FileSize", "long"),
    ("EmailEvents", "BulkComplaintLevel", "int"),
    ("EmailEvents", "EmailClusterId", "long"),
    ("EmailEvents", "ReportId", "string"),
    ("IdentityLogonEvents", "DestinationPort", "int"),
    ("IdentityLogonEvents", "AdditionalFields", "dynamic"),
])
def test_columns_have_the_type_the_schema_reference_gives(table: str, column: str, kusto_type: str) -> None:
    assert dict(dataset.schema()[table])[column] == kusto_type


def test_each_table_stores_its_columns_in_schema_order_with_the_matching_duckdb_type(
        con: duckdb.DuckDBPyConnection) -> None:
    for table, columns in dataset.schema().items():
        described = con.execute(f'DESCRIBE "{table}"').fetchall()
        assert [(row[0], row[1]) for row in described] == [
            (name, dataset.SQL_TYPES[kusto]) for name, kusto in columns], table


def test_every_table_of_the_data_file_is_generated_with_its_columns_and_types_in_that_order(
        con: duckdb.DuckDBPyConnection) -> None:
    declared = _data_file_tables()
    assert set(declared) >= REQUIRED_TABLES
    assert dataset.schema() == declared
    assert list(dataset.schema()) == list(declared)  # dict equality ignores the order hunting.py lists tables in
    generated = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert generated == set(declared)  # nothing more either: the lk.* lookups are dropped after loading
    for table, columns in declared.items():
        described = [(row[0], row[1]) for row in con.execute(f'DESCRIBE "{table}"').fetchall()]
        assert described == [(name, dataset.SQL_TYPES[kusto]) for name, kusto in columns], table


def test_every_table_spec_is_a_table_of_the_data_file_and_sets_only_its_columns() -> None:
    declared = _data_file_tables()
    assert sorted(spec.name for spec in dataset.TABLES) == sorted(declared)
    for spec in dataset.TABLES:
        # A misspelt column here would be silently ignored, the column getting COMMON's SQL or failing to load
        assert set(spec.exprs) <= {name for name, _ in declared[spec.name]}, spec.name


def test_a_data_file_column_without_sql_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = next(spec for spec in dataset.TABLES if spec.name == "AlertInfo")
    monkeypatch.setitem(dataset_sql.SCHEMA, "AlertInfo", [*dataset.schema()["AlertInfo"], ("NewColumn", "string")])
    with pytest.raises(ValueError, match="NewColumn"):
        dataset_sql.table_sql(spec, 1_000, 7, ANCHOR.replace(tzinfo=None), "main")


def test_the_data_file_is_found_next_to_the_module_whatever_the_working_directory(tmp_path: Path) -> None:
    assert dataset_catalog.DATA_FILE == DATA_FILE
    root = str(Path(dataset.__file__).parents[1])
    environment = {**os.environ, "PYTHONPATH": root}
    script = "from sandbox import dataset; print(len(dataset.schema()))"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, check=True, timeout=60)
    assert result.stdout.strip() == str(len(_data_file_tables()))


def test_device_process_events_begins_with_the_documented_columns() -> None:
    names = [name for name, _ in dataset.schema()["DeviceProcessEvents"]]
    assert names[:8] == ["Timestamp", "DeviceId", "DeviceName", "ActionType", "FileName", "FolderPath", "SHA1",
                         "SHA256"]
    assert names[-3:] == ["ReportId", "AppGuardContainerId", "AdditionalFields"]


def test_the_rows_knob_sets_device_process_events_and_the_other_tables_get_rows_too(
        con: duckdb.DuckDBPyConnection) -> None:
    counts = {table: con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]  # noqa: S608
              for table in dataset.schema()}
    assert counts["DeviceProcessEvents"] == 2_000
    assert all(count > 0 for count in counts.values()), counts
    assert counts["AlertEvidence"] == 3 * counts["AlertInfo"]


def test_every_timestamp_lies_within_the_29_days_before_the_anchor(con: duckdb.DuckDBPyConnection) -> None:
    anchor = ANCHOR.replace(tzinfo=None)
    for table in dataset.schema():
        oldest, newest = con.execute(f'SELECT min("Timestamp"), max("Timestamp") FROM "{table}"').fetchall()[0]  # noqa: S608
        assert anchor - timedelta(days=dataset.WINDOW_DAYS) <= oldest <= newest <= anchor, table


def test_the_same_seed_and_anchor_give_the_same_rows_in_the_same_order() -> None:
    first, second = _loaded(rows=1_000, seed=42), _loaded(rows=1_000, seed=42)
    assert _all_rows(first) == _all_rows(second)


def test_another_seed_gives_other_rows() -> None:
    first, second = _all_rows(_loaded(rows=1_000, seed=42)), _all_rows(_loaded(rows=1_000, seed=43))
    assert first["DeviceProcessEvents"] != second["DeviceProcessEvents"]
    assert first["EmailEvents"] != second["EmailEvents"]


def test_timestamps_follow_the_anchor_and_nothing_else_does() -> None:
    later = ANCHOR + timedelta(days=3)
    first, second = _loaded(rows=1_000, seed=42), _loaded(rows=1_000, seed=42, anchor=later)
    query = 'SELECT "Timestamp", * EXCLUDE ("Timestamp", "ProcessCreationTime", "InitiatingProcessCreationTime", ' \
            '"InitiatingProcessParentCreationTime") FROM "DeviceProcessEvents"'
    before, after = first.execute(query).fetchall(), second.execute(query).fetchall()
    assert [row[0] + timedelta(days=3) for row in before] == [row[0] for row in after]
    assert [row[1:] for row in before] == [row[1:] for row in after]


@pytest.mark.parametrize("seed", [1, 7, 20240501])
def test_the_known_values_are_there_whatever_the_seed(seed: int) -> None:
    con = _loaded(rows=1_000, seed=seed)

    def count(sql: str, value: str) -> int:
        return int(con.execute(sql, [value]).fetchall()[0][0])

    assert count('SELECT count(*) FROM "DeviceProcessEvents" WHERE SHA256 = ?', dataset.KNOWN_SHA256) > 0
    assert count('SELECT count(*) FROM "DeviceFileEvents" WHERE SHA256 = ?', dataset.KNOWN_SHA256) > 0
    assert count('SELECT count(*) FROM "AlertEvidence" WHERE SHA256 = ?', dataset.KNOWN_SHA256) > 0
    assert count('SELECT count(*) FROM "DeviceNetworkEvents" WHERE DeviceName = ?', dataset.KNOWN_DEVICE_NAME) > 0
    assert count('SELECT count(*) FROM "DeviceLogonEvents" WHERE AccountName = ?', dataset.KNOWN_ACCOUNT_NAME) > 0
    assert count('SELECT count(*) FROM "IdentityLogonEvents" WHERE AccountUpn = ?', dataset.KNOWN_ACCOUNT_UPN) > 0
    assert count('SELECT count(*) FROM "EmailEvents" WHERE SenderFromAddress = ?', dataset.KNOWN_SENDER) > 0
    assert count('SELECT count(*) FROM "DeviceInfo" WHERE DeviceId = ?', dataset.KNOWN_DEVICE_ID) > 0


def test_powershell_launches_processes_from_appdata(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute("""SELECT count(*) FROM "DeviceProcessEvents" WHERE lower(InitiatingProcessFileName) =
        'powershell.exe' AND ProcessCommandLine ILIKE '%appdata%'""").fetchall()
    assert rows[0][0] > 0


@pytest.mark.parametrize("file_name", ["résumé.pdf", "报告.docx", "😀 party invite.lnk", "Q3 budget 'final'.xlsx",
                                       'invoice "4821".zip'])
def test_file_events_carry_unicode_and_quoted_file_names(con: duckdb.DuckDBPyConnection, file_name: str) -> None:
    assert con.execute('SELECT count(*) FROM "DeviceFileEvents" WHERE FileName = ?', [file_name]).fetchall()[0][0]


def test_command_lines_carry_double_and_single_quotes_and_backslashes(con: duckdb.DuckDBPyConnection) -> None:
    lines = [row[0] for row in con.execute('SELECT DISTINCT ProcessCommandLine FROM "DeviceProcessEvents"').fetchall()]
    assert any('"' in line and "'" in line and "\\" in line for line in lines)


@pytest.mark.parametrize(("table", "column"), [
    ("DeviceProcessEvents", "FileSize"), ("DeviceProcessEvents", "InitiatingProcessParentCreationTime"),
    ("DeviceProcessEvents", "AdditionalFields"), ("DeviceFileEvents", "IsAzureInfoProtectionApplied"),
    ("DeviceNetworkEvents", "LocalPort"), ("DeviceInfo", "OSBuild"), ("EmailEvents", "BulkComplaintLevel"),
    ("AlertEvidence", "ApplicationId"),
])
def test_non_string_columns_have_nulls_as_the_service_does(con: duckdb.DuckDBPyConnection, table: str,
                                                           column: str) -> None:
    assert con.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" IS NULL').fetchall()[0][0] > 0  # noqa: S608


def test_string_columns_are_never_null_as_in_kusto(con: duckdb.DuckDBPyConnection) -> None:
    for table, columns in dataset.schema().items():
        strings = [name for name, kusto in columns if kusto == "string"]
        nulls = " + ".join(f'count(*) FILTER (WHERE "{name}" IS NULL)' for name in strings)
        assert con.execute(f'SELECT {nulls} FROM "{table}"').fetchall()[0][0] == 0, table  # noqa: S608


def test_dynamic_columns_hold_json_objects_and_arrays(con: duckdb.DuckDBPyConnection) -> None:
    fields = [json.loads(row[0]) for row in con.execute(
        'SELECT AdditionalFields FROM "DeviceProcessEvents" WHERE AdditionalFields IS NOT NULL').fetchall()]
    assert any(isinstance(value, dict) and value for value in fields)
    assert any(isinstance(value, dict) and isinstance(value.get("Nested"), dict) for value in fields)
    users = json.loads(con.execute('SELECT LoggedOnUsers FROM "DeviceInfo" LIMIT 1').fetchall()[0][0])
    assert isinstance(users, list)


def test_report_id_is_unique_within_each_device_table_past_65536_rows() -> None:
    """Split hunts' tests count every row once by it (tests/relay/test_split_hunts.py)."""
    con = _loaded(70_000, 7)
    for table in ("DeviceProcessEvents", "DeviceNetworkEvents", "DeviceFileEvents"):
        total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ReportId) FROM {table}").fetchone()  # noqa: S608
        assert total == distinct > 0, table
