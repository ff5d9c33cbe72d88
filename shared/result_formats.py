"""Rendering a streamed result as json, ndjson or csv into a binary writer, one row at a time.

    json     the whole envelope: head fields, "results": [rows...], then row_count, truncated, schema, stats
    ndjson   one JSON row per line; the envelope's metadata goes into the blob's metadata (see `blob_metadata`)
    csv      a header from the schema (or the first row's keys), one line per row; dynamic values as JSON text,
             null as an empty field, quoting by the standard library's csv module (RFC 4180 minimal quoting)

Memory does not grow with the number of rows: rows are written as they arrive.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared import envelope
from shared.hunting_client import Column, ResultStream

CONTENT_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
EXTENSIONS = {"json": "json", "ndjson": "ndjson", "csv": "csv"}


class BinaryWriter(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class ResultSummary:
    row_count: int
    truncated: bool
    columns: list[Column]
    stats: dict[str, Any] | None
    tail: dict[str, Any]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render(out: BinaryWriter, fmt: str, head: dict[str, Any], stream: ResultStream,
           clock: Callable[[], datetime]) -> ResultSummary:
    rows = stream.rows()
    if fmt == "json":
        _render_json(out, head, rows)
    elif fmt == "ndjson":
        for row in rows:
            out.write(_dumps(row) + b"\n")
    elif fmt == "csv":
        _render_csv(out, stream, rows)
    else:  # pragma: no cover - validated with the request
        raise ValueError(f"unknown format {fmt!r}")
    tail = envelope.tail(row_count=stream.row_count, columns=stream.columns, stats=stream.stats,
                         completed_at=clock())
    if fmt == "json":
        out.write(b"," + _dumps(tail)[1:])
    return ResultSummary(stream.row_count, bool(tail["truncated"]), stream.columns, stream.stats, tail)


def _render_json(out: BinaryWriter, head: dict[str, Any], rows: Iterable[dict[str, Any]]) -> None:
    out.write(_dumps(head)[:-1] + b',"results":[')
    first = True
    for row in rows:
        out.write(_dumps(row) if first else b"," + _dumps(row))
        first = False
    out.write(b"]")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _render_csv(out: BinaryWriter, stream: ResultStream, rows: Iterable[dict[str, Any]]) -> None:
    line = io.StringIO()
    writer = csv.writer(line, lineterminator="\r\n")

    def emit(cells: list[str]) -> None:
        writer.writerow(cells)
        out.write(line.getvalue().encode("utf-8"))
        line.seek(0)
        line.truncate()

    names: list[str] | None = None
    for row in rows:
        if names is None:
            names = [c.name for c in stream.columns] or list(row)
            emit(names)
        emit([_cell(row.get(name)) for name in names])
    if names is None and stream.columns:
        emit([c.name for c in stream.columns])


def blob_metadata(head: dict[str, Any], summary: ResultSummary) -> dict[str, str]:
    """The envelope's small fields as blob metadata (ASCII only) for ndjson and csv results."""
    return {
        "hunt_id": str(head["id"]),
        "hunt_status": str(head["status"]),
        "hunt_api": str(head["api"]),
        "hunt_row_count": str(summary.row_count),
        "hunt_truncated": "true" if summary.truncated else "false",
        "hunt_attempts": str(head.get("attempts", 1)),
        "hunt_completed_at": str(summary.tail["completed_at"]),
    }
