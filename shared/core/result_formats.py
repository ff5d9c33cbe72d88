"""Rendering a streamed result as json, ndjson or csv into a binary writer, one row at a time.

    json     the whole envelope: head fields, "results": [rows...], then row_count, truncated, schema, stats
    ndjson   one JSON row per line; the envelope's metadata goes into the blob's metadata (see `blob_metadata`)
    csv      a header from the schema (or the first row's keys), one line per row; dynamic values (objects,
             arrays) as JSON text, booleans as true/false, null as an empty field; quoting by the standard
             library's csv module (RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled)

Any format may be gzip-compressed on the way (`GzipWriter`, zlib with a gzip header, fed as rows arrive).
Memory does not grow with the number of rows: rows are written as they arrive.
"""

from __future__ import annotations

import csv
import io
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.core import envelope
from shared.core.rows import Column, RawRows, RowStream
from shared.core.strict_json import dumps, dumps_text

CONTENT_TYPES = {"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
EXTENSIONS = {"json": "json", "ndjson": "ndjson", "csv": "csv"}
GZIP_LEVEL = 6          # zlib's default: most of the ratio of 9 at a third of its cost
WRITE_BYTES = 256 * 1024   # rows are written in pieces of about this size
_GZIP_WBITS = 16 + zlib.MAX_WBITS   # a gzip header and trailer, not a raw zlib stream


class BinaryWriter(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True)
class ResultSummary:
    row_count: int
    truncated: bool
    columns: list[Column]
    stats: dict[str, Any] | None
    tail: dict[str, Any]


def file_name(job_id: str, fmt: str, *, gzip: bool = False) -> str:
    """`<job id>.<format>`, with `.gz` appended when compressed."""
    return f"{job_id}.{EXTENSIONS[fmt]}" + (".gz" if gzip else "")


class GzipWriter:
    """Compresses what is written into `out` as a gzip stream; `finish()` writes the trailer (once, at the end)."""

    def __init__(self, out: BinaryWriter, level: int = GZIP_LEVEL) -> None:
        self._out = out
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
        self.bytes_in = 0

    def write(self, data: bytes, /) -> int:
        self.bytes_in += len(data)
        compressed = self._compressor.compress(data)
        if compressed:
            self._out.write(compressed)
        return len(data)

    def finish(self) -> None:
        self._out.write(self._compressor.flush(zlib.Z_FINISH))


def render(out: BinaryWriter, fmt: str, head: dict[str, Any], stream: RowStream,
           clock: Callable[[], datetime]) -> ResultSummary:
    if fmt == "json":
        _render_json(out, head, _encoded(stream))
    elif fmt == "ndjson":
        for piece in _pieces(_encoded(stream), b"\n"):
            out.write(piece + b"\n")
    elif fmt == "csv":
        _render_csv(out, stream, stream.rows())
    else:  # pragma: no cover - validated with the request
        raise ValueError(f"unknown format {fmt!r}")
    tail = envelope.tail(row_count=stream.row_count, columns=stream.columns, stats=stream.stats,
                         completed_at=clock(), row_cap=stream.row_cap, parts=stream.parts)
    if fmt == "json":
        out.write(b"," + dumps(tail)[1:])
    return ResultSummary(stream.row_count, bool(tail["truncated"]), stream.columns, stream.stats, tail)


def _encoded(stream: RowStream) -> Iterator[bytes]:
    """Each row as strict JSON: the service's own bytes when the stream has them (no second encoding)."""
    if isinstance(stream, RawRows):
        return stream.raw_rows()
    return (dumps(row) for row in stream.rows())


def _render_json(out: BinaryWriter, head: dict[str, Any], rows: Iterable[bytes]) -> None:
    out.write(dumps(head)[:-1] + b',"results":[')
    first = True
    for piece in _pieces(rows, b","):
        out.write(piece if first else b"," + piece)
        first = False
    out.write(b"]")


def _pieces(rows: Iterable[bytes], separator: bytes) -> Iterator[bytes]:
    """The rows joined by `separator` into pieces of about WRITE_BYTES: one write a piece, not one a row."""
    batch: list[bytes] = []
    size = 0
    for row in rows:
        batch.append(row)
        size += len(row)
        if size >= WRITE_BYTES:
            yield separator.join(batch)
            batch, size = [], 0
    if batch:
        yield separator.join(batch)


def csv_cell(value: Any) -> str:
    """One value as a csv field's text (before quoting)."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return dumps_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _render_csv(out: BinaryWriter, stream: RowStream, rows: Iterable[dict[str, Any]]) -> None:
    line = io.StringIO()
    writer = csv.writer(line, lineterminator="\r\n")

    def emit(cells: list[str]) -> None:
        writer.writerow(cells)
        # A lone surrogate has no UTF-8 form: it becomes "?" (csv has no escape to keep it).
        out.write(line.getvalue().encode("utf-8", "replace"))
        line.seek(0)
        line.truncate()

    names: list[str] | None = None
    for row in rows:
        if names is None:
            names = [c.name for c in stream.columns] or list(row)
            emit(names)
        emit([csv_cell(row.get(name)) for name in names])
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
        **({"hunt_parts": str(len(summary.tail["parts"]))} if "parts" in summary.tail else {}),
    }
