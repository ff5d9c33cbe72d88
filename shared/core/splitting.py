"""Split hunts (`"split": true`): one hunt's time range cut in halves until every part fits under the service's caps.

    hunt_range(timespan, first_attempt)   the range a split hunt covers: its `timespan`, by default the 30 days
                                          before its first attempt; fixed then, so every part of one hunt agrees
    Span                                  a closed range of ticks (100 ns, Kusto's datetime resolution)
    Span.halves()                         [start, mid - 1 tick] and [mid, end], mid = start + width // 2 rounded
                                          down to a whole microsecond (when that still leaves both halves)
    parts_in_order(root, split)           the leaves of the tree the hunt has grown so far, in time order
    next_part(root, split, done)          the first leaf not done yet (None: every part is done)
    refusal(query)                        why a query cannot be split by time (None: it can)

Boundaries. A part is sent to the service as the interval `start/end` with seven fractional digits, both ends
meant inclusively, as Kusto's `between` is. Two neighbours never share a tick: the left half ends one tick before
the right half starts, so a row whose Timestamp is exactly `mid` belongs to the right half only, and every tick of
the range belongs to exactly one part. Every boundary falls on a whole microsecond, so a service or store that
keeps microseconds agrees: the sandbox applies a Timespan as `Timestamp BETWEEN start AND end` at DuckDB's
microsecond resolution, where the left half's last tick, `mid - 100 ns`, reads as `mid - 1 µs`, still before every
row at `mid` and after every row before it.

A part's rows must come from that part's range: `outside(row, part)` finds a row whose Timestamp lies outside it
(a query whose rows are not what the Timespan filters: `print`, `datatable`, a table without Timestamp, a computed
Timestamp), and the hunt is then refused rather than delivered with rows repeated in every part.

Splitting by time is exact only for queries whose rows stand alone: `refusal` names the first operator, outside
comments and string literals, that makes one part's answer depend on the rows of the others (an aggregation, a
join, a limit). Pure: the time of the first attempt is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.core.kql_lexical import UnterminatedLiteral, code_only

TICKS_PER_SECOND = 10_000_000
TICKS_PER_MICROSECOND = 10
DEFAULT_RANGE = timedelta(days=30)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
                       r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?", re.IGNORECASE)
_FRACTION = re.compile(r"(T\d{2}:\d{2}:\d{2})\.(\d+)")
# Operators whose answer over one part is not a slice of their answer over the whole range. Longest first, so that
# `top-nested` is named as itself rather than as `top`.
_WHOLE_RANGE_OPERATORS = ("make-series", "make-graph", "top-nested", "top-hitters", "sample-distinct", "summarize",
                          "serialize", "partition", "distinct", "lookup", "reduce", "sample", "count",
                          "facet", "join", "scan", "take", "limit", "fork", "top")
_OPERATOR = re.compile(r"\|\s*(" + "|".join(re.escape(op) for op in _WHOLE_RANGE_OPERATORS) + r")(?![\w-])")
# Plugins that work on each row alone; any other `evaluate` may aggregate or read other tables.
_ROW_PLUGINS = ("bag_unpack", "narrow")
_EVALUATE = re.compile(r"\|\s*evaluate\s+(?:hint\.\w+\s*=\s*\w+\s+)*([\w-]+)")
# Functions of neighbouring rows (they change at every part's edge), and scalar or cached subqueries.
_ROW_WINDOW = re.compile(r"(?<![\w.])(prev|next|row_number|row_cumsum|row_rank_dense|row_rank_min|row_window_session|"
                         r"toscalar|materialize)\s*\(")
# Sources whose rows are not filtered by a Timespan: every part would return them all again.
_UNTIMED_SOURCE = re.compile(r"(?:^|;|\(|\bunion\b[^;|]*?,?)\s*(print|datatable|range|externaldata)\b")
# A subquery: `in (... | ...)`, `has_any (... | ...)`, or a tabular `let x = ... | ...;`
_SUBQUERY = re.compile(r"(?:\bin~?|\bhas_any|\bhas_all)\s*\(\s*\(?[^()]*\|")
_TABULAR_LET = re.compile(r"\blet\s+\w+\s*=\s*(?:view\s*\(\s*\)\s*\{)?[^;]*\|")


SPLIT_HINT = ("see 'Split hunts' in the README: split suits queries that filter and project; aggregate the "
              "delivered rows instead, or narrow the query so that it fits without split")


class SpanError(ValueError):
    """A timespan a split hunt cannot take (the message says which form is expected)."""


@dataclass(frozen=True, order=True)
class Span:
    """A closed range [start, end] of ticks since 1970-01-01T00:00:00Z."""

    start: int
    end: int

    @property
    def width(self) -> int:
        return self.end - self.start + 1

    def halves(self) -> tuple[Span, Span]:
        middle = self.start + self.width // 2
        on_microsecond = middle - middle % TICKS_PER_MICROSECOND
        if on_microsecond > self.start:
            middle = on_microsecond
        return Span(self.start, middle - 1), Span(middle, self.end)

    def splittable(self, floor_ticks: int) -> bool:
        """Whether both halves would still be at least `floor_ticks` long (HUNT_SPLIT_MIN)."""
        return self.width // 2 >= max(floor_ticks, 1)

    @property
    def timespan(self) -> str:
        """The part as the service's Timespan: `start/end`, both ends inclusive."""
        return f"{format_ticks(self.start)}/{format_ticks(self.end)}"

    @property
    def key(self) -> str:
        """A name for the part that sorts in time order (ticks are non-negative until the year 2903)."""
        return f"{self.start:019d}-{self.end:019d}"

    @classmethod
    def from_key(cls, key: str) -> Span:
        start, _, end = key.partition("-")
        if not (start.isdigit() and end.isdigit()):
            raise SpanError(f"not a part name: {key!r}")
        return cls(int(start), int(end))


def format_ticks(ticks: int) -> str:
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    moment = _EPOCH + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:07d}Z"


def ticks_of(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10


def parse_instant(text: str) -> int:
    """An ISO 8601 date or date-time (a time without an offset is UTC, as Kusto reads it), in ticks: seven
    fractional digits are kept, where Python's datetime keeps six."""
    fraction_ticks = 0
    match = _FRACTION.search(text)
    if match:
        digits = match.group(2)
        fraction_ticks = int((digits + "0000000")[:7])
        text = text[:match.start()] + match.group(1) + text[match.end():]
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise SpanError(f"{text!r} is not an ISO 8601 date or date-time such as 2026-11-01T00:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ticks_of(moment) + fraction_ticks


def parse_duration(text: str) -> int:
    """An ISO 8601 duration of weeks, days, hours, minutes and seconds (P7D, PT12H, P1DT6H), in ticks. Years and
    months have no fixed length and are refused."""
    match = _DURATION.fullmatch(text.strip())
    if not match or not any(match.groups()) or text.strip().upper().endswith("T"):
        raise SpanError(f"{text!r} is not an ISO 8601 duration of weeks, days, hours, minutes or seconds such as "
                        "P7D or PT12H (years and months have no fixed length)")
    weeks, days, hours, minutes, seconds = (float(group or 0) for group in match.groups())
    total = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds
    return round(total * TICKS_PER_SECOND)


def hunt_range(timespan: str | None, first_attempt: datetime) -> Span:
    """The range a split hunt covers, as Graph reads its Timespan: a duration ending at the first attempt, a
    date-time (from then until the first attempt), `start/end`, `duration/end` or `start/duration`; without one,
    the 30 days before the first attempt."""
    now = ticks_of(first_attempt)
    if timespan is None:
        return Span(now - int(DEFAULT_RANGE.total_seconds()) * TICKS_PER_SECOND, now)
    pieces = [piece.strip() for piece in timespan.split("/")]
    is_duration = [piece.upper().startswith("P") for piece in pieces]
    if len(pieces) == 1:
        start, end = (now - parse_duration(pieces[0]), now) if is_duration[0] else (parse_instant(pieces[0]), now)
    elif len(pieces) == 2 and is_duration == [True, False]:
        end = parse_instant(pieces[1])
        start = end - parse_duration(pieces[0])
    elif len(pieces) == 2 and is_duration == [False, True]:
        start = parse_instant(pieces[0])
        end = start + parse_duration(pieces[1])
    elif len(pieces) == 2 and is_duration == [False, False]:
        start, end = parse_instant(pieces[0]), parse_instant(pieces[1])
    else:
        raise SpanError(f"{timespan!r} is not a duration, a date-time or an interval (start/end, duration/end, "
                        "start/duration)")
    if end <= start:
        raise SpanError(f"the timespan {timespan!r} ends before it starts")
    return Span(start, end)


def _leaves(span: Span, split: Set[Span]) -> Iterator[Span]:
    if span in split:
        left, right = span.halves()
        yield from _leaves(left, split)
        yield from _leaves(right, split)
    else:
        yield span


def parts_in_order(root: Span, split: Set[Span]) -> list[Span]:
    """The parts the hunt has now: the root, with every part found too big replaced by its halves, in time order."""
    return list(_leaves(root, split))


def next_part(root: Span, split: Set[Span], done: Set[Span]) -> Span | None:
    return next((part for part in _leaves(root, split) if part not in done), None)


def refusal(query: str) -> str | None:
    """Why `query` cannot be split by time, or None. An operator counts anywhere outside comments and string
    literals: in a `let` or a subquery it would run on one part's rows as much as at the end of the query."""
    try:
        code = code_only(query)
    except UnterminatedLiteral:
        return None   # the service will refuse the query itself, with its own message
    found = _OPERATOR.search(code)
    if found is not None:
        return _refused(f"the query uses '{found.group(1)}', whose answer over a part of the time range is not a "
                        "part of its answer over the whole range")
    for plugin in _EVALUATE.finditer(code):
        if plugin.group(1) not in _ROW_PLUGINS:
            return _refused(f"the query uses 'evaluate {plugin.group(1)}', which may aggregate or read other "
                            "tables over the range")
    window = _ROW_WINDOW.search(code)
    if window is not None:
        return _refused(f"the query uses '{window.group(1)}()', whose value depends on rows outside the row's own "
                        "part")
    source = _UNTIMED_SOURCE.search(code.strip())
    if source is not None:
        return _refused(f"the query reads '{source.group(1)}', whose rows no timespan filters: every part would "
                        "return them again")
    if _SUBQUERY.search(code) or _TABULAR_LET.search(code):
        return _refused("the query filters by a subquery (a tabular 'let', or 'in (... | ...)'), which would see "
                        "only one part's rows")
    return None


def _refused(why: str) -> str:
    return (f"{why}, so it cannot be split by time; drop 'split', or aggregate after the relay (split works for "
            "queries whose rows stand alone: where, project, extend, parse, mv-expand, union of tables)")


def row_moment(row: dict[str, object]) -> int | None:
    """A row's Timestamp in ticks, when it has one the relay can read."""
    value = row.get("Timestamp")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            return parse_instant(value)   # seven fractional digits
        except SpanError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ticks_of(moment)


def outside(row: dict[str, object], part: Span) -> bool:
    """Whether the row's Timestamp (when it has one) lies outside the part it came back for."""
    moment = row_moment(row)
    return moment is not None and not part.start - part.start % TICKS_PER_MICROSECOND <= moment <= part.end
