"""A result's rows as they stream in: the column type and the protocol that renderers read.

The hunting client (shared.adapters.hunting_client) provides a RowStream over the API's response; the renderers
(shared.core.result_formats) and the envelope only read it, so the core never touches HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Column:
    name: str
    type: str


class RowStream(Protocol):
    """Rows consumed once, in order. `columns`, `stats` and `row_count` are filled while the rows go by (an API may
    send its schema and stats before or after the rows); a stream cut short raises StreamBroken from `rows()`."""

    columns: list[Column]
    stats: dict[str, Any] | None
    row_count: int

    def rows(self) -> Iterator[dict[str, Any]]: ...
