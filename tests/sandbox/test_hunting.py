"""The hunting engine: real KQL over the dataset, rows and errors as the Defender hunting service writes them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox import dataset
from sandbox.hunting import APIS, Column, HuntingEngine, HuntingResult, QueryError
from sandbox.kusto_values import cpu_time, parse_duration, parse_timespan

SEED_QUERY = ('DeviceProcessEvents | where InitiatingProcessFileName =~ "powershell.exe" '
              "| project Timestamp, FileName, InitiatingProcessFileName | order by Timestamp desc | limit 2")
SEED_QUERY_APPDATA = ("DeviceProcessEvents | where InitiatingProcessFileName =~ 'powershell.exe' "
                      "| where ProcessCommandLine contains 'appdata' "
                      "| project Timestamp, FileName, InitiatingProcessFileName, DeviceId | limit 2")
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")
ANCHOR = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> Iterator[HuntingEngine]:
    hunting = HuntingEngine(rows=5_000, seed=7)
    yield hunting
    hunting.close()


@pytest.fixture(scope="module")
def large_engine() -> Iterator[HuntingEngine]:
    hunting = HuntingEngine(rows=150_000, seed=7)
    yield hunting
    hunting.close()


def rows_of(result: HuntingResult) -> list[dict[str, Any]]:
    return [json.loads(row) for row in result.rows]


def run(engine: HuntingEngine, query: str, api: str = "m365d", **options: Any) -> list[dict[str, Any]]:
    return rows_of(engine.run(query, api, **options))  # type: ignore[arg-type]


def count(engine: HuntingEngine, query: str, api: str = "m365d", **options: Any) -> int:
    return int(run(engine, query + " | count", api, **options)[0]["Count"])


def error_of(engine: HuntingEngine, query: str, api: str = "m365d", **options: Any) -> QueryError:
    with pytest.raises(QueryError) as caught:
        rows_of(engine.run(query, api, **options))  # type: ignore[arg-type]
    return caught.value


# --- the seed documents' queries ----------------------------------------------------------------------------------

@pytest.mark.parametrize("api", APIS)
def test_the_seed_query_returns_the_two_latest_powershell_children(engine: HuntingEngine, api: str) -> None:
    result = engine.run(SEED_QUERY, api)  # type: ignore[arg-type]
    assert result.columns == [Column("Timestamp", "DateTime"), Column("FileName", "String"),
                              Column("InitiatingProcessFileName", "String")]
    rows = rows_of(result)
    assert len(rows) == 2
    assert [list(row) for row in rows] == [["Timestamp", "FileName", "InitiatingProcessFileName"]] * 2
    assert all(row["InitiatingProcessFileName"].lower() == "powershell.exe" for row in rows)
    assert rows[0]["Timestamp"] >= rows[1]["Timestamp"]
    assert all(DATETIME.match(row["Timestamp"]) for row in rows)


@pytest.mark.parametrize("api", APIS)
def test_the_appdata_seed_query_returns_rows_with_a_device_id(engine: HuntingEngine, api: str) -> None:
    result = engine.run(SEED_QUERY_APPDATA, api)  # type: ignore[arg-type]
    assert [column.name for column in result.columns] == ["Timestamp", "FileName", "InitiatingProcessFileName",
                                                          "DeviceId"]
    rows = rows_of(result)
    assert len(rows) == 2
    assert all(row["DeviceId"] for row in rows)


@pytest.mark.parametrize(("query", "minimum"), [
    (f'DeviceProcessEvents | where SHA256 == "{dataset.KNOWN_SHA256}"', 1),
    (f'DeviceFileEvents | where SHA256 == "{dataset.KNOWN_SHA256}"', 1),
    (f'DeviceLogonEvents | where AccountName == "{dataset.KNOWN_ACCOUNT_NAME}"', 1),
    (f'IdentityLogonEvents | where AccountUpn == "{dataset.KNOWN_ACCOUNT_UPN}"', 1),
    (f'DeviceNetworkEvents | where DeviceName == "{dataset.KNOWN_DEVICE_NAME}"', 1),
    (f'EmailEvents | where SenderFromAddress == "{dataset.KNOWN_SENDER}"', 1),
    (f'AlertEvidence | where SHA256 == "{dataset.KNOWN_SHA256}" | join kind=inner AlertInfo on AlertId', 1),
])
def test_typical_hunts_find_the_known_values(engine: HuntingEngine, query: str, minimum: int) -> None:
    assert count(engine, query) >= minimum


def test_tables_lists_every_table_with_service_type_names(engine: HuntingEngine) -> None:
    tables = engine.tables()
    assert set(tables) >= set(dataset.schema())
    process = {column.name: column.kusto_type for column in tables["DeviceProcessEvents"]}
    assert process["Timestamp"] == "DateTime"
    assert process["ProcessId"] == "Int64"
    assert process["AdditionalFields"] == "Object"
    assert {column.name: column.kusto_type for column in tables["DeviceNetworkEvents"]}["RemotePort"] == "Int32"


# --- values as the service writes them ------------------------------------------------------------------------------

@pytest.mark.parametrize(("expression", "kusto_type", "value"), [
    ("1", "Int64", 1),
    ("toint(7)", "Int32", 7),
    ("1.5", "Double", 1.5),
    ("real(nan)", "Double", "NaN"),
    ("real(+inf)", "Double", "Infinity"),
    ('"it\'s \\"quoted\\" C:\\\\Temp"', "String", "it's \"quoted\" C:\\Temp"),
    ("true", "Boolean", True),
    ("datetime(2024-05-01 10:11:12.5)", "DateTime", "2024-05-01T10:11:12.5000000Z"),
    ("datetime(2024-05-01)", "DateTime", "2024-05-01T00:00:00.0000000Z"),
    ("1d + 2h + 3m + 4s + 500ms", "TimeSpan", "1.02:03:04.5000000"),
    ("5m", "TimeSpan", "00:05:00"),
    ("-90s", "TimeSpan", "-00:01:30"),
    ("guid(74be27de-1e4e-49d9-b579-fe0b331d3642)", "Guid", "74be27de-1e4e-49d9-b579-fe0b331d3642"),
    ('dynamic({"a": [1, "报告"], "b": null})', "Object", {"a": [1, "报告"], "b": None}),
    ("dynamic([1, 2])", "Object", [1, 2]),
    ("toint(int(null))", "Int32", None),
])
def test_values_and_schema_types_are_written_as_the_service_writes_them(
        engine: HuntingEngine, expression: str, kusto_type: str, value: object) -> None:
    result = engine.run(f"print v = {expression}", "m365d")
    assert result.columns == [Column("v", kusto_type)]
    assert rows_of(result) == [{"v": value}]


def test_every_datetime_has_seven_fractional_digits_and_a_z(engine: HuntingEngine) -> None:
    rows = run(engine, "DeviceProcessEvents | project Timestamp, ProcessCreationTime | take 300")
    assert all(DATETIME.match(row["Timestamp"]) and DATETIME.match(row["ProcessCreationTime"]) for row in rows)


def test_dynamic_columns_come_out_as_json_values_not_strings(engine: HuntingEngine) -> None:
    rows = run(engine, "DeviceProcessEvents | where isnotnull(AdditionalFields) | project AdditionalFields | take 200")
    assert rows and all(isinstance(row["AdditionalFields"], dict) for row in rows)
    assert any(isinstance(row["AdditionalFields"].get("Nested"), dict) for row in rows)
    users = run(engine, "DeviceInfo | project LoggedOnUsers | take 1")[0]["LoggedOnUsers"]
    assert isinstance(users, list)


def test_a_string_holding_json_stays_a_string(engine: HuntingEngine) -> None:
    tags = run(engine, "DeviceInfo | project DeviceManualTags | take 1")[0]["DeviceManualTags"]
    assert isinstance(tags, str)


@pytest.mark.parametrize("file_name", ["résumé.pdf", "报告.docx", "😀 party invite.lnk", 'invoice "4821".zip',
                                       "Q3 budget 'final'.xlsx"])
def test_unicode_and_quoted_file_names_survive_the_round_trip(engine: HuntingEngine, file_name: str) -> None:
    literal = json.dumps(file_name, ensure_ascii=False)  # a valid KQL string literal for these names
    rows = run(engine, f"DeviceFileEvents | where FileName == {literal} | project FileName | take 1")
    assert rows == [{"FileName": file_name}]


def test_quotes_and_backslashes_in_command_lines_survive_the_round_trip(engine: HuntingEngine) -> None:
    rows = run(engine, "DeviceProcessEvents | where ProcessCommandLine has 'Write-Output' "
                       "| project ProcessCommandLine | take 1")
    assert rows == [{"ProcessCommandLine": 'powershell.exe -c "Write-Output \\"it\'s done\\"; '
                                           'Remove-Item C:\\Temp\\*.log"'}]


def test_nulls_are_written_as_null(engine: HuntingEngine) -> None:
    rows = run(engine, "DeviceProcessEvents | where isnull(FileSize) | project FileSize, FileName | take 1")
    assert rows[0]["FileSize"] is None and rows[0]["FileName"]


def test_each_row_is_one_json_object_with_the_schema_columns_as_keys(engine: HuntingEngine) -> None:
    result = engine.run("DeviceEvents | take 5", "m365d")
    names = [column.name for column in result.columns]
    assert names == [name for name, _ in dataset.schema()["DeviceEvents"]]
    assert all(list(json.loads(row)) == names for row in result.rows)


# --- stats ------------------------------------------------------------------------------------------------------------

def test_stats_have_the_m365d_shape_and_count_the_rows_and_bytes(engine: HuntingEngine) -> None:
    result = engine.run("DeviceLogonEvents | take 7", "m365d")
    rows = list(result.rows)
    stats = result.stats
    assert isinstance(stats["ExecutionTime"], float) and stats["ExecutionTime"] >= 0
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{7}$", stats["resource_usage"]["cpu"]["total cpu"])
    assert set(stats["resource_usage"]) >= {"cache", "cpu", "memory"}
    assert stats["dataset_statistics"] == [{"table_row_count": 7, "table_size": sum(len(row) for row in rows)}]


def test_a_result_larger_than_a_fetch_batch_is_streamed_whole_and_counted(engine: HuntingEngine) -> None:
    result = engine.run("DeviceProcessEvents | project ReportId, FileName | take 4500", "m365d")
    rows = list(result.rows)
    assert len(rows) == 4500
    assert result.stats["dataset_statistics"] == [{"table_row_count": 4500, "table_size": sum(map(len, rows))}]


def test_a_result_left_half_read_does_not_disturb_the_next_run(engine: HuntingEngine) -> None:
    first = engine.run("DeviceProcessEvents", "m365d")
    next(first.rows)
    del first
    assert count(engine, "DeviceProcessEvents") == 5_000


# --- errors --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "message"), [
    ("DeviceProcessEvents | where ==", r"^Syntax error: Query could not be parsed at '.+' on line \[1,\d+\]$"),
    ("DeviceProcessEvents | where FileName == 'abc", r"^Syntax error: Query could not be parsed at"),
    ("", r"^Syntax error: Query could not be parsed at '<EOF>' on line \[1,1\]$"),
    ("DeviceProcessEvent | take 1", r"^Failed to resolve table or column expression named 'DeviceProcessEvent'$"),
    ("DeviceInfo | join kind=inner (NoSuchTable) on DeviceId",
     r"^Failed to resolve table or column expression named 'NoSuchTable'$"),
    ("DeviceProcessEvents | where NoSuchColumn == 1", r"^Failed to resolve scalar expression named 'NoSuchColumn'$"),
    ("DeviceProcessEvents | project FileName, NoSuchColumn", r"named 'NoSuchColumn'$"),
    ("DeviceInfo | evaluate bag_unpack(AdditionalFields)", r"duckdb-kql does not support .*EvaluateOperator"),
    ("DeviceInfo | where DeviceName > 1", r"^Semantic error: "),
    ('print x = "\ud800"', r"^Syntax error: the query is not valid Unicode text\.$"),
    (".show tables", r"control commands are not supported"),
    (".set-or-replace Stolen <| DeviceInfo", r"control commands are not supported"),
])
def test_bad_queries_get_the_services_bad_request(engine: HuntingEngine, query: str, message: str) -> None:
    error = error_of(engine, query)
    assert error.code == "BadRequest"
    assert re.search(message, error.message), error.message


@pytest.mark.parametrize("query", [
    "EmailEvents | take 1", "AlertInfo | take 1", "AlertEvidence | take 1", "IdentityLogonEvents | take 1",
    "DeviceInfo | join kind=inner (EmailEvents) on $left.DeviceName == $right.Subject",
    "DeviceProcessEvents | take 1 | union (EmailEvents | take 1)",
])
def test_mde_refuses_a_query_that_reads_a_table_outside_defender_for_endpoint(engine: HuntingEngine,
                                                                              query: str) -> None:
    error = error_of(engine, query, "mde")
    table = re.search(r"(EmailEvents|AlertInfo|AlertEvidence|IdentityLogonEvents)", query)
    assert table and f"'{table.group(1)}'" in error.message
    assert "Defender for Endpoint" in error.message


@pytest.mark.parametrize("api", ["m365d", "graph"])
def test_m365d_and_graph_read_the_tables_mde_refuses(engine: HuntingEngine, api: str) -> None:
    assert len(run(engine, "EmailEvents | take 1", api)) == 1
    assert len(run(engine, "AlertInfo | take 1", api)) == 1


def test_mde_reads_every_device_table(engine: HuntingEngine) -> None:
    for table in dataset.schema():
        if table.startswith("Device"):
            assert len(run(engine, f"{table} | take 1", "mde")) == 1, table


@pytest.mark.parametrize("timespan", ["P", "yesterday", "PT", "P1Q", "2025-03-10T00:00:00Z/2025-03-01T00:00:00Z",
                                      "P1D/P1D", "a/b/c"])
def test_an_invalid_graph_timespan_is_a_bad_request(engine: HuntingEngine, timespan: str) -> None:
    error = error_of(engine, "DeviceInfo | take 1", "graph", timespan=timespan)
    assert error.message.startswith(f"Invalid Timespan '{timespan}'")


# --- row cap ---------------------------------------------------------------------------------------------------------

def test_150000_rows_asked_for_yield_the_100000_row_cap(large_engine: HuntingEngine) -> None:
    result = large_engine.run("DeviceProcessEvents | take 150000", "m365d")
    rows = iter(result.rows)
    first = json.loads(next(rows))
    total = 1 + sum(1 for _ in rows)
    assert total == 100_000
    assert result.stats["dataset_statistics"][0]["table_row_count"] == 100_000
    assert list(first) == [name for name, _ in dataset.schema()["DeviceProcessEvents"]]


def test_the_row_cap_is_a_setting(engine: HuntingEngine) -> None:
    assert len(run(engine, "DeviceProcessEvents", row_cap=10)) == 10
    assert len(run(engine, "DeviceProcessEvents | take 3", row_cap=10)) == 3


# --- graph's Timespan ------------------------------------------------------------------------------------------------

def test_a_shorter_graph_timespan_returns_fewer_rows(engine: HuntingEngine) -> None:
    twelve_hours = count(engine, "DeviceProcessEvents", "graph", timespan="PT12H")
    week = count(engine, "DeviceProcessEvents", "graph", timespan="P7D")
    month = count(engine, "DeviceProcessEvents", "graph", timespan="P30D")
    assert 0 < twelve_hours < week < month == 5_000


def test_graph_without_timespan_reads_the_last_30_days(engine: HuntingEngine) -> None:
    assert count(engine, "DeviceProcessEvents", "graph") == count(engine, "DeviceProcessEvents", "m365d")


def test_every_interval_form_selects_the_same_window(engine: HuntingEngine) -> None:
    end = engine.anchor - timedelta(days=2)
    start = end - timedelta(days=3)
    iso = "%Y-%m-%dT%H:%M:%S.%fZ"
    expected = count(engine, f"DeviceProcessEvents | where Timestamp between (datetime({start:{iso}}) .. "
                             f"datetime({end:{iso}}))")
    assert 0 < expected < 5_000
    for timespan in (f"{start:{iso}}/{end:{iso}}", f"P3D/{end:{iso}}", f"{start:{iso}}/P3D"):
        assert count(engine, "DeviceProcessEvents", "graph", timespan=timespan) == expected, timespan


def test_graph_timespan_applies_to_every_table_a_query_reads(engine: HuntingEngine) -> None:
    query = "DeviceProcessEvents | union DeviceNetworkEvents | union EmailEvents"
    assert count(engine, query, "graph", timespan="PT12H") < count(engine, query, "graph", timespan="P30D")


def test_the_timespan_is_ignored_by_the_other_apis(engine: HuntingEngine) -> None:
    assert count(engine, "DeviceProcessEvents", "m365d", timespan="PT1H") == 5_000


@pytest.mark.parametrize(("text", "expected"), [
    ("P30D", timedelta(days=30)), ("PT12H", timedelta(hours=12)), ("P1DT2H30M", timedelta(days=1, hours=2.5)),
    ("PT0.5S", timedelta(seconds=0.5)), ("P2W", timedelta(days=14)), ("p7d", timedelta(days=7)),
])
def test_iso_8601_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_a_timespan_without_an_offset_is_read_as_utc() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_timespan("2024-12-01T00:00:00/P1D", now) == (datetime(2024, 12, 1, tzinfo=UTC),
                                                             datetime(2024, 12, 2, tzinfo=UTC))
    assert parse_timespan("PT1H", now) == (now - timedelta(hours=1), now)


@pytest.mark.parametrize(("seconds", "text"), [(0, "00:00:00.0000000"), (19.046875, "00:00:19.0468750"),
                                               (3723.5, "01:02:03.5000000")])
def test_cpu_times_are_written_as_the_service_writes_them(seconds: float, text: str) -> None:
    assert cpu_time(seconds) == text


# --- determinism and threads -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def twin_engines() -> Iterator[tuple[HuntingEngine, HuntingEngine, HuntingEngine]]:
    engines = (HuntingEngine(rows=1_000, seed=3, anchor=ANCHOR), HuntingEngine(rows=1_000, seed=3, anchor=ANCHOR),
               HuntingEngine(rows=1_000, seed=4, anchor=ANCHOR))
    yield engines
    for hunting in engines:
        hunting.close()


def test_the_same_seed_gives_the_same_rows(twin_engines: tuple[HuntingEngine, ...]) -> None:
    first, second, _ = twin_engines
    query = "DeviceProcessEvents | take 200"
    assert list(first.run(query, "m365d").rows) == list(second.run(query, "m365d").rows)


def test_another_seed_gives_other_rows(twin_engines: tuple[HuntingEngine, ...]) -> None:
    first, _, other = twin_engines
    query = "DeviceProcessEvents | take 200"
    assert list(first.run(query, "m365d").rows) != list(other.run(query, "m365d").rows)


def test_concurrent_runs_on_every_api_get_the_answers_they_get_alone(engine: HuntingEngine) -> None:
    two_days = f"{engine.anchor - timedelta(days=2):%Y-%m-%dT%H:%M:%SZ}/P1D"  # fixed: now() moves, this does not
    calls: list[tuple[str, str, str | None]] = [
        (SEED_QUERY, "mde", None), (SEED_QUERY_APPDATA, "m365d", None),
        ("DeviceProcessEvents | summarize count() by FileName | order by FileName asc", "graph", two_days),
        ("EmailEvents | summarize count() by SenderFromAddress | order by SenderFromAddress asc", "m365d", None),
        ("DeviceNetworkEvents | project ReportId, RemoteUrl | take 3000", "graph", "P30D"),
        ("EmailEvents | take 1", "mde", None),
    ] * 4

    def answer(call: tuple[str, str, str | None]) -> list[Any] | str:
        query, api, timespan = call
        try:
            return run(engine, query, api, timespan=timespan)
        except QueryError as error:
            return error.message

    alone = [answer(call) for call in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(answer, calls))
    assert together == alone
    assert isinstance(alone[5], str) and "EmailEvents" in alone[5]
