"""Kusto values as the hunting service writes them: schema type names, row values as JSON, ISO 8601 timespans.

Rows are rendered to JSON by DuckDB itself (one ``to_json(struct_pack(...))`` per row), with each column first turned
into the value the service writes:

    DateTime  "2024-05-01T10:11:12.1234560Z"   (7 fractional digits and Z; DuckDB keeps microseconds)
    TimeSpan  "1.02:03:04.5000000"              ([-][d.]hh:mm:ss[.fffffff])
    Double    a number, or "NaN" / "Infinity" / "-Infinity" (JSON has no such numbers)
    Object    the JSON value itself (dynamic), never a string of JSON
    Guid      its text; String, Int32, Int64, Boolean, Decimal as JSON has them; null as null
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from duckdb_kql.types import kusto_type


@dataclass(frozen=True)
class Column:
    name: str
    kusto_type: str  # as the service writes it in Schema: "DateTime", "String", "Int64", "Object" (dynamic) ...


# Kusto scalar type (duckdb_kql's names) -> the name the service's Schema uses
SCHEMA_TYPE_NAMES = {
    "bool": "Boolean", "int": "Int32", "long": "Int64", "real": "Double", "decimal": "Decimal", "string": "String",
    "datetime": "DateTime", "timespan": "TimeSpan", "guid": "Guid", "dynamic": "Object",
}


def schema_type(duckdb_type: object) -> str:
    """The Schema type name of a DuckDB result column (STRUCT, LIST and MAP are dynamic: Object)."""
    return SCHEMA_TYPE_NAMES.get(kusto_type(duckdb_type), "String")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _timespan_sql(micros: str) -> str:
    total = f"abs({micros})"
    fraction = f"({total} % 1000000)"
    return (f"CASE WHEN {micros} < 0 THEN '-' ELSE '' END"
            f" || CASE WHEN {total} >= 86400000000 THEN CAST({total} // 86400000000 AS VARCHAR) || '.' ELSE '' END"
            f" || printf('%02d:%02d:%02d', ({total} // 3600000000) % 24, ({total} // 60000000) % 60,"
            f" ({total} // 1000000) % 60)"
            f" || CASE WHEN {fraction} > 0 THEN '.' || lpad(CAST({fraction} * 10 AS VARCHAR), 7, '0') ELSE '' END")


def value_sql(column: str, duckdb_type: object) -> str:
    """SQL turning *column* (a quoted reference) into the value the service writes, ready for ``to_json``."""
    name = str(duckdb_type).upper()
    kusto = kusto_type(duckdb_type)
    if kusto == "datetime":
        return f"strftime(CAST({column} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%f') || '0Z'"
    if kusto == "timespan":
        micros = f"CAST(round(epoch({column}) * 1000000) AS BIGINT)"
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE {_timespan_sql(micros)} END"
    if name in ("DOUBLE", "FLOAT"):
        return (f"CASE WHEN {column} IS NULL OR isfinite({column}) THEN to_json({column})"
                f" WHEN isnan({column}) THEN '\"NaN\"'::JSON WHEN {column} > 0 THEN '\"Infinity\"'::JSON"
                f" ELSE '\"-Infinity\"'::JSON END")
    if name in ("UUID", "BLOB", "BIT"):
        return f"CAST({column} AS VARCHAR)"
    return column


def row_json_sql(inner_sql: str, columns: Sequence[tuple[str, object]], row_cap: int) -> str:
    """SQL yielding one JSON object per row of *inner_sql* (keys in column order), at most *row_cap* rows."""
    limit = f"LIMIT {int(row_cap)}"
    if not columns:
        return f"SELECT '{{}}' AS row FROM ({inner_sql}) AS q {limit}"  # noqa: S608 - the translator's SQL
    fields = ", ".join(f"{quote_identifier(name)} := {value_sql('q.' + quote_identifier(name), duckdb_type)}"
                       for name, duckdb_type in columns)
    return f"SELECT CAST(to_json(struct_pack({fields})) AS VARCHAR) AS row FROM ({inner_sql}) AS q {limit}"  # noqa: S608


# ISO 8601 durations as Graph takes them: P[n]Y[n]M[n]W[n]DT[n]H[n]M[n]S (years and months taken as 365 and 30 days)
_DURATION = re.compile(r"^(-)?P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?"
                       r"(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:[.,]\d+)?)S)?)?$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration (``P30D``, ``PT12H``, ``P1DT2H30M``); ValueError if it is not one."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    sign, years, months, weeks, days, hours, minutes, seconds = match.groups()
    span = timedelta(days=365 * int(years or 0) + 30 * int(months or 0) + 7 * int(weeks or 0) + int(days or 0),
                     hours=int(hours or 0), minutes=int(minutes or 0),
                     seconds=float((seconds or "0").replace(",", ".")))
    return -span if sign else span


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date or date-time, as UTC (a time without an offset is UTC, as Kusto reads it)."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_timespan(text: str, now: datetime) -> tuple[datetime, datetime]:
    """Graph's ``Timespan``: a duration ending now, a date/time (from then until now), ``start/end``,
    ``duration/end`` or ``start/duration``.

    Returns the window (start, end) in UTC; ValueError if the text is none of these or the window is empty.
    """
    parts = text.split("/")
    if len(parts) == 1 and not parts[0].strip().upper().startswith("P"):
        start, end = parse_instant(parts[0]), now
    elif len(parts) == 1:
        start, end = now - parse_duration(parts[0]), now
    elif len(parts) == 2 and parts[0].strip().upper().startswith("P"):
        end = parse_instant(parts[1])
        start = end - parse_duration(parts[0])
    elif len(parts) == 2 and parts[1].strip().upper().startswith("P"):
        start = parse_instant(parts[0])
        end = start + parse_duration(parts[1])
    elif len(parts) == 2:
        start, end = parse_instant(parts[0]), parse_instant(parts[1])
    else:
        raise ValueError(f"not an ISO 8601 duration or interval: {text!r}")
    if end < start:
        raise ValueError(f"the interval ends before it starts: {text!r}")
    return start, end


def cpu_time(seconds: float) -> str:
    """A duration as the service's Stats write it: ``00:00:19.0468750``."""
    ticks = round(seconds * 10_000_000)
    whole, fraction = divmod(ticks, 10_000_000)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}.{fraction:07d}"
