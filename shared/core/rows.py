"""A result's rows as they stream in: the column type and the protocol that renderers read.

The hunting client (shared.adapters.hunting_client) provides a RowStream over the API's response; the renderers
(shared.core.result_formats) and the envelope only read it, so the core never touches HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class PartSummary:
    """One part of a split hunt's result (shared.core.splitting): its Timespan, its rows, whether it hit a cap."""

    timespan: str
    row_count: int
    truncated: bool

    def as_dict(self) -> dict[str, Any]:
        return {"timespan": self.timespan, "row_count": self.row_count, "truncated": self.truncated}


class RowStream(Protocol):
    """Rows consumed once, in order. `columns`, `stats` and `row_count` are filled while the rows go by (an API may
    send its schema and stats before or after the rows); a stream cut short raises StreamBroken from `rows()`.
    `row_cap` is the service's cap (a result of that many rows may be truncated); `parts` is set for a split
    hunt's assembled result, whose truncation is then its parts' (None for one API answer)."""

    columns: list[Column]
    stats: dict[str, Any] | None
    row_count: int
    row_cap: int
    parts: list[PartSummary] | None

    def rows(self) -> Iterator[dict[str, Any]]: ...


@runtime_checkable
class RawRows(Protocol):
    """A row stream that also has each row's own bytes (strict JSON on one line, as the service sent it): a JSON
    format writes those instead of encoding the row again. Consumed once, like `rows()`: one or the other."""

    def raw_rows(self) -> Iterator[bytes]: ...
