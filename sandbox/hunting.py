"""The hunting engine: real KQL (duckdb-kql) over the synthetic dataset, answered the way the service answers.

Errors: every way a query can fail is a ``QueryError`` (the service's 400 ``BadRequest``); nothing from DuckDB or
the translator escapes as anything else::

    QueryError
      syntax          "Syntax error: Query could not be parsed at '==' on line [1,23]"
      unknown table   "Failed to resolve table or column expression named 'X'"
      unknown column  "Failed to resolve scalar expression named 'X'"
      mde scope       "Failed to resolve table expression named 'EmailEvents': the Defender for Endpoint API ..."
      unsupported     "The sandbox cannot run this query: duckdb-kql does not support ..."
      semantic        "Semantic error: ..." (types that do not compare, a column named twice ...)
      execution       "Query execution failed: ..." (a conversion that fails on a value ...)
      timespan        "Invalid Timespan '...': ..." (graph only)

What each API sees, per call, on its own cursor (so concurrent calls cannot see each other's settings):
  m365d, graph  every table of the dataset;
  mde           only Device* tables: the cursor's search path is a schema holding a view of each, so any other
                table is "not found", and the error names it as the real endpoint does (the tables themselves
                live in schema "hunting", the m365d and graph search path: DuckDB always searches "main");
  graph         only rows inside the Timespan (default the last 30 days): temporary views of the same names, local
                to the cursor, shadow each table the query reads with ``WHERE Timestamp BETWEEN start AND end``
                (both ends inclusive, at DuckDB's microsecond resolution: a 7th fractional digit is dropped). The
                query's own time filter applies on top, so the shorter of the two wins, as on Graph.

Caps, as the service's: at most ``row_cap`` rows (100,000; the rest is cut without a flag), and a result whose rows
come to more than ``max_result_bytes`` of JSON (the knob ``max_result_mb``, default 50) is the service's 400
"Query execution has exceeded the allowed result size".

Cost: a result carries ``rows_scanned`` (the rows of every table the query reads, counted once at load) and
``row_count``, what the running-time cost model charges by (sandbox.knobs).

DuckDB renders each row to JSON (sandbox.kusto_values). A result that fits in one fetch batch is executed once; a
bigger one twice in one transaction (one ``now()``): first to count rows and bytes for Stats and to surface
execution errors before any byte is sent, then to stream the rows in batches.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import duckdb
import duckdb_kql
from duckdb_kql.control import strip_leading_comments

from sandbox import dataset
from sandbox.faults import SIZE_ERROR_MESSAGES
from sandbox.kusto_values import (
    SCHEMA_TYPE_NAMES,
    Column,
    cpu_time,
    parse_timespan,
    quote_identifier,
    row_json_sql,
    schema_type,
)

__all__ = ["APIS", "Api", "Column", "HuntingEngine", "HuntingResult", "QueryError"]

logger = logging.getLogger(__name__)

Api = Literal["mde", "m365d", "graph"]
APIS: tuple[Api, ...] = ("mde", "m365d", "graph")
GRAPH_DEFAULT_WINDOW = timedelta(days=30)
FETCH_BATCH = 2048
CATALOG = "defender"  # the in-memory database holding the dataset
HUNTING_SCHEMA = "hunting"  # the tables: what m365d and graph see
MDE_SCHEMA = "mde"  # a view of each Device* table: all the mde API can see


class QueryError(Exception):
    """The service's 400: KQL that does not parse, names an unknown table or column, is not supported, or (mde)
    names a non-Device table."""

    def __init__(self, message: str, code: str = "BadRequest") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class HuntingResult:
    columns: list[Column]
    rows: Iterator[bytes]  # one JSON object per row, UTF-8, values as the service writes them
    stats: dict[str, Any]  # m365d-style Stats
    rows_scanned: int = 0  # the rows of every table the query reads (the cost model's, sandbox.knobs)
    row_count: int = 0     # the rows of the result


@dataclass(frozen=True)
class _Translation:
    sql: str
    parameters: dict[str, Any]
    tables: tuple[str, ...]  # the dataset tables the SQL reads


class HuntingEngine:
    """The dataset loaded once into an in-memory DuckDB; ``run`` is safe to call from many threads at once."""

    def __init__(self, rows: int = 20_000, seed: int = 7, anchor: datetime | None = None) -> None:
        self.rows = rows
        self.seed = seed
        self.anchor = anchor or datetime.now(UTC)
        self._con = duckdb_kql.connect()
        # The tables live in their own in-memory catalog, compressed (a third of the memory), and not in a schema
        # called "main": DuckDB searches "main" whatever the search path, and mde must not find them there.
        self._con.execute(f"ATTACH ':memory:' AS {CATALOG} (COMPRESS)")
        self._con.execute(f"CREATE SCHEMA {CATALOG}.{HUNTING_SCHEMA}")
        self._con.execute(f"CREATE SCHEMA {CATALOG}.{MDE_SCHEMA}")
        dataset.load(self._con, rows, seed, self.anchor, f"{CATALOG}.{HUNTING_SCHEMA}")
        types = dataset.schema()
        self._tables = {table: [Column(name, SCHEMA_TYPE_NAMES[kusto]) for name, kusto in columns]
                        for table, columns in types.items()}
        for table in self._tables:
            if table.startswith("Device"):
                self._con.execute(f"CREATE VIEW {CATALOG}.{MDE_SCHEMA}.{quote_identifier(table)} AS "  # noqa: S608
                                  f"SELECT * FROM {CATALOG}.{HUNTING_SCHEMA}.{quote_identifier(table)}")
        # Rows per table, what a query is charged for scanning (sandbox.knobs); the names are the dataset's own
        self.table_rows = {table: int(self._con.execute(
            f"SELECT count(*) FROM {CATALOG}.{HUNTING_SCHEMA}.{quote_identifier(table)}").fetchall()[0][0])  # noqa: S608
            for table in self._tables}
        self._names = {api: {table: [name for name, _ in columns] for table, columns in types.items()
                             if api != "mde" or table.startswith("Device")} for api in APIS}
        self._translate_lock = threading.Lock()  # the ANTLR parser's shared caches are not made for threads
        self._cursor_lock = threading.Lock()
        self._translate = functools.lru_cache(maxsize=1024)(self._translate_uncached)
        self._columns: dict[str, list[tuple[str, str]]] = {}  # SQL -> its result's (name, DuckDB type)

    def close(self) -> None:
        """Free the dataset (a 150,000-row engine holds a few hundred MB); runs still streaming fail after this."""
        self._con.close()

    def tables(self) -> dict[str, list[Column]]:
        return {table: list(columns) for table, columns in self._tables.items()}

    def run(self, query: str, api: Api, timespan: str | None = None, row_cap: int = 100_000,
            max_result_bytes: int | None = None) -> HuntingResult:
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, not {api!r}")
        started = time.perf_counter()
        try:
            query.encode()
        except UnicodeError:  # a lone surrogate ("\ud800" in the request's JSON): DuckDB cannot take it
            raise QueryError("Syntax error: the query is not valid Unicode text.") from None
        window = self._window(timespan) if api == "graph" else None
        translation = self._translate(query, api)
        with self._cursor_lock:
            cursor = self._con.cursor()
        try:
            columns, head, count, size = self._execute(cursor, translation, api, window, row_cap)
            if max_result_bytes is not None and size > max_result_bytes:
                raise QueryError(SIZE_ERROR_MESSAGES["result_size"])
        except QueryError:
            cursor.close()
            raise
        except duckdb.Error as error:
            cursor.close()
            raise self._query_error(error, api) from None
        except Exception as error:  # DuckDB raises a few bare RuntimeErrors too; still the caller's 400
            cursor.close()
            logger.warning("the hunting engine failed on a query: %s: %s", type(error).__name__, error)
            raise QueryError(f"Query execution failed: {error}") from None
        except BaseException:
            cursor.close()
            raise
        elapsed = time.perf_counter() - started
        if head is None:
            rows = _stream(cursor)
        else:  # the whole result is in hand
            cursor.close()
            rows = iter(head)
        return HuntingResult([Column(name, schema_type(kind)) for name, kind in columns], rows,
                             _stats(elapsed, count, size),
                             rows_scanned=sum(self.table_rows[table] for table in translation.tables), row_count=count)

    def _execute(self, cursor: duckdb.DuckDBPyConnection, translation: _Translation, api: Api,
                 window: tuple[datetime, datetime] | None, row_cap: int,
                 ) -> tuple[list[tuple[str, str]], list[bytes] | None, int, int]:
        """Run the query on a cursor set up for *api*: (columns, the rows if they are all in hand, count, bytes).

        A result that fits in one fetch batch is the whole answer. A bigger one is counted first (Stats come before
        the rows, and an execution error must come before any row), then executed again and left on the cursor to
        stream (rows None); the batch fetched first is dropped, so that every row comes from one execution.
        """
        cursor.execute("SET TimeZone = 'UTC'")
        cursor.execute(f"SET search_path = '{CATALOG}.{MDE_SCHEMA if api == 'mde' else HUNTING_SCHEMA}'")
        cursor.execute("BEGIN TRANSACTION")  # one now() for every statement of the run
        if window is not None:
            start, end = (f"TIMESTAMP '{moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"
                          for moment in window)
            for table in translation.tables:
                cursor.execute(f"CREATE TEMP VIEW {quote_identifier(table)} AS SELECT * FROM "  # noqa: S608
                               f"{CATALOG}.{HUNTING_SCHEMA}.{quote_identifier(table)} "
                               f'WHERE "Timestamp" BETWEEN {start} AND {end}')
        params = translation.parameters or None
        columns = self._columns.get(translation.sql)
        if columns is None:  # a query's result types do not change: describe it once
            if len(self._columns) > 4096:
                self._columns.clear()
            description = cursor.execute(f"DESCRIBE {translation.sql}", params).fetchall()
            columns = self._columns[translation.sql] = [(str(row[0]), str(row[1])) for row in description]
        rows_sql = row_json_sql(translation.sql, columns, row_cap)
        cursor.execute(rows_sql, params)
        head = [row.encode() for (row,) in cursor.fetchmany(FETCH_BATCH)]
        if len(head) < FETCH_BATCH:
            return columns, head, len(head), sum(len(row) for row in head)
        cursor.abort()
        count, size = cursor.execute(f"SELECT count(*), coalesce(sum(strlen(row)), 0) FROM ({rows_sql})",  # noqa: S608
                                     params).fetchall()[0]
        cursor.execute(rows_sql, params)
        return columns, None, int(count), int(size)

    def _window(self, timespan: str | None) -> tuple[datetime, datetime]:
        now = datetime.now(UTC)
        if timespan is None:
            return now - GRAPH_DEFAULT_WINDOW, now
        try:
            return parse_timespan(timespan, now)
        except ValueError as error:
            raise QueryError(f"Invalid Timespan '{timespan}': {error}. Use an ISO 8601 duration such as P30D or "
                             "PT12H, or an interval such as 2024-05-01T00:00:00Z/2024-05-08T00:00:00Z or P7D/<end>.",
                             ) from None

    def _translate_uncached(self, query: str, api: Api) -> _Translation:
        if strip_leading_comments(query).lstrip().startswith("."):
            raise QueryError("Syntax error: control commands are not supported by advanced hunting; send a query.")
        try:
            with self._translate_lock:
                translated = duckdb_kql.to_sql(query, schema=self._names[api], allow_write=False)
        except duckdb_kql.KqlSyntaxError as error:
            raise QueryError(_syntax_message(query, error)) from None
        except duckdb_kql.KqlUnsupportedError as error:
            where = f" at {error.span}" if error.span else ""
            why = f" ({error.hint})" if error.hint else ""
            raise QueryError(f"The sandbox cannot run this query: duckdb-kql does not support the KQL construct "
                             f"'{error.construct}'{where}{why}.") from None
        except duckdb_kql.KqlSchemaError as error:
            if "unknown table" in (error.hint or "") or (api == "mde" and error.name in self._tables):
                raise self._table_error(error.name, api) from None
            raise QueryError(f"Semantic error: {error}") from None
        except Exception as error:  # a translator bug is still the caller's 400, never a crash of the server
            logger.warning("duckdb-kql could not translate a query: %s", error)
            raise QueryError(f"The sandbox cannot run this query: duckdb-kql failed on it ({error}).") from None
        if translated.unbound:
            raise QueryError(f"Semantic error: query parameters without a value: {', '.join(translated.unbound)}")
        sql = str(translated)
        return _Translation(sql, dict(translated.parameters),
                            tuple(table for table in self._tables if quote_identifier(table) in sql))

    def _table_error(self, name: str, api: Api) -> QueryError:
        if api == "mde" and name in self._tables:
            return QueryError(f"Failed to resolve table expression named '{name}': the Defender for Endpoint API "
                              "(api/advancedqueries) can query only Defender for Endpoint tables (Device*); use "
                              "the Microsoft 365 Defender or Microsoft Graph API for this table.")
        return QueryError(f"Failed to resolve table or column expression named '{name}'")

    def _query_error(self, error: duckdb.Error, api: Api) -> QueryError:
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        table = re.search(r"Table with name (?:\S+\.)?\"?([^\s\"!]+)\"? does not exist", first)
        if isinstance(error, duckdb.CatalogException) and table:
            return self._table_error(table.group(1), api)
        # DuckDB names a missing column two ways; the second when the query's own SELECT list aliases it to itself
        column = re.search(r'Referenced column "([^"]+)" not found|Column "([^"]+)" referenced that exists in the '
                           r"SELECT clause - but this column cannot be referenced before it is defined", first)
        if column:
            return QueryError(f"Failed to resolve scalar expression named '{column.group(1) or column.group(2)}'")
        detail = re.sub(r"^\w+ Error: ", "", first)
        if isinstance(error, duckdb.BinderException | duckdb.CatalogException):
            return QueryError(f"Semantic error: {detail}")
        if isinstance(error, duckdb.ParserException):
            return QueryError(f"The sandbox cannot run this query: duckdb-kql produced SQL DuckDB rejects ({detail}).")
        return QueryError(f"Query execution failed: {detail}")


def _stream(cursor: duckdb.DuckDBPyConnection) -> Iterator[bytes]:
    try:
        while chunk := cursor.fetchmany(FETCH_BATCH):
            for (row,) in chunk:
                yield row.encode()
    except duckdb.Error as error:
        raise QueryError(f"Query execution failed: {str(error).splitlines()[0]}") from None
    finally:
        cursor.close()


def _syntax_message(query: str, error: duckdb_kql.KqlSyntaxError) -> str:
    if not error.diagnostics:
        return f"Syntax error: {error}"
    first = error.diagnostics[0]
    quoted = re.search(r"(?:mismatched|extraneous) input '(.*?)'(?: expecting|$)", first.message) or re.search(
        r"token recognition error at: '(.*)'", first.message)
    if quoted:
        token = quoted.group(1)
    else:
        lines = query.splitlines() or [""]
        rest = lines[first.span.line - 1][first.span.column:] if first.span.line <= len(lines) else ""
        found = re.match(r"\s*(\w+|\S)", rest)
        token = found.group(1) if found else "<EOF>"
    return f"Syntax error: Query could not be parsed at '{token}' on line [{first.span.line},{first.span.column + 1}]"


def with_running_time(stats: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Stats whose ExecutionTime and CPU are the running time the call was charged (sandbox.knobs)."""
    cpu = {"user": cpu_time(seconds), "kernel": cpu_time(0), "total cpu": cpu_time(seconds)}
    return {**stats, "ExecutionTime": round(seconds, 6),
            "resource_usage": {**stats.get("resource_usage", {}), "cpu": cpu}}


def _stats(elapsed: float, count: int, size: int) -> dict[str, Any]:
    """Stats in the m365d shape. CPU is the wall time of the run: DuckDB's pool gives no per-query CPU figure."""
    return {
        "ExecutionTime": round(elapsed, 6),
        "resource_usage": {
            "cache": {"memory": {"hits": count, "misses": 0, "total": count},
                      "disk": {"hits": 0, "misses": 0, "total": 0}},
            "cpu": {"user": cpu_time(elapsed), "kernel": cpu_time(0), "total cpu": cpu_time(elapsed)},
            "memory": {"peak_per_node": size},
        },
        "dataset_statistics": [{"table_row_count": count, "table_size": size}],
    }
