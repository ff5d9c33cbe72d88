"""shared.core.splitting: the range a split hunt covers, how it is cut, the order of its parts, and which queries
cannot be split by time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.core.splitting import (
    TICKS_PER_SECOND,
    Span,
    SpanError,
    format_ticks,
    hunt_range,
    next_part,
    outside,
    parse_duration,
    parse_instant,
    parts_in_order,
    refusal,
    ticks_of,
)

FIRST = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = 86_400 * TICKS_PER_SECOND


def at(text: str) -> int:
    return parse_instant(text)


@pytest.mark.parametrize(("timespan", "start", "end"), [
    (None, None, "2026-12-01T12:00:00Z"),   # the 30 days before the first attempt
    ("P7D", "2026-11-24T12:00:00Z", "2026-12-01T12:00:00Z"),
    ("PT12H", "2026-12-01T00:00:00Z", "2026-12-01T12:00:00Z"),
    ("P1DT6H", "2026-11-30T06:00:00Z", "2026-12-01T12:00:00Z"),
    ("P1W", "2026-11-24T12:00:00Z", "2026-12-01T12:00:00Z"),
    ("2026-11-20T00:00:00Z", "2026-11-20T00:00:00Z", "2026-12-01T12:00:00Z"),
    ("2026-11-01T00:00:00Z/2026-11-08T00:00:00Z", "2026-11-01T00:00:00Z", "2026-11-08T00:00:00Z"),
    ("P7D/2026-11-08T00:00:00Z", "2026-11-01T00:00:00Z", "2026-11-08T00:00:00Z"),
    ("2026-11-01T00:00:00Z/P7D", "2026-11-01T00:00:00Z", "2026-11-08T00:00:00Z"),
    ("2026-11-01/2026-11-08", "2026-11-01T00:00:00Z", "2026-11-08T00:00:00Z"),
    ("2026-11-01T01:00:00+01:00/2026-11-08T00:00:00", "2026-11-01T00:00:00Z", "2026-11-08T00:00:00Z"),
])
def test_the_range_of_a_split_hunt_reads_every_form_graph_takes(timespan, start, end):
    expected_start = ticks_of(FIRST - timedelta(days=30)) if timespan is None else at(start)
    assert hunt_range(timespan, FIRST) == Span(expected_start, at(end))


@pytest.mark.parametrize("timespan", ["P1M", "P1Y", "PT", "P", "yesterday", "2026-11-08/2026-11-01", "a/b/c",
                                      "P1D/P2D", "2026-13-01"])
def test_a_range_that_cannot_be_cut_is_refused_by_name(timespan):
    with pytest.raises(SpanError):
        hunt_range(timespan, FIRST)


def test_seven_fractional_digits_are_kept_as_ticks():
    assert parse_instant("2026-11-15T23:59:59.9999999Z") == parse_instant("2026-11-16T00:00:00Z") - 1
    assert parse_instant("2026-11-15T00:00:00.5Z") == parse_instant("2026-11-15T00:00:00Z") + TICKS_PER_SECOND // 2
    assert format_ticks(parse_instant("2026-11-15T23:59:59.9999999Z")) == "2026-11-15T23:59:59.9999999Z"
    assert parse_duration("PT0.5S") == TICKS_PER_SECOND // 2


def test_halves_share_no_tick_and_cover_every_tick():
    span = Span(at("2026-11-01T00:00:00Z"), at("2026-11-29T00:00:00Z"))
    left, right = span.halves()
    assert left.start == span.start and right.end == span.end
    assert left.end + 1 == right.start
    assert right.start == at("2026-11-15T00:00:00Z")   # the middle, where a row on it belongs to the right half
    assert left.timespan == "2026-11-01T00:00:00.0000000Z/2026-11-14T23:59:59.9999999Z"
    assert right.timespan == "2026-11-15T00:00:00.0000000Z/2026-11-29T00:00:00.0000000Z"
    assert left.width + right.width == span.width


@pytest.mark.parametrize("width", [2, 3, 10, 11, 2 * DAY + 1, 7])
def test_halves_of_any_width_partition_it(width):
    span = Span(1_000, 1_000 + width - 1)
    left, right = span.halves()
    assert (left.start, left.end + 1, right.end) == (span.start, right.start, span.end)
    assert abs(left.width - right.width) <= 1


def test_a_part_is_split_only_while_both_halves_reach_the_floor():
    minute = 60 * TICKS_PER_SECOND
    assert Span(0, 2 * minute - 1).splittable(minute)
    assert not Span(0, 2 * minute - 2).splittable(minute)


def test_the_parts_come_in_time_order_and_the_next_is_the_first_not_done():
    root = Span(0, 99)
    left, right = root.halves()
    left_left, left_right = left.halves()
    split = {root, left}
    assert parts_in_order(root, split) == [left_left, left_right, right]
    assert next_part(root, split, done=set()) == left_left
    assert next_part(root, split, done={left_left}) == left_right
    assert next_part(root, split, done={left_left, right}) == left_right
    assert next_part(root, split, done={left_left, left_right, right}) is None
    assert next_part(root, set(), done=set()) == root


def test_part_names_sort_in_time_order_and_read_back():
    spans = [Span(5, 9), Span(10, 1_000_000_000_000), Span(0, 4)]
    assert sorted(spans, key=lambda s: s.key) == sorted(spans)
    assert all(Span.from_key(span.key) == span for span in spans)
    with pytest.raises(SpanError):
        Span.from_key("plan")


@pytest.mark.parametrize(("query", "operator"), [
    ("DeviceProcessEvents | summarize count() by DeviceName", "summarize"),
    ("DeviceProcessEvents | top 10 by Timestamp", "top"),
    ("DeviceProcessEvents | count", "count"),
    ("DeviceProcessEvents | make-series n = count() on Timestamp step 1h", "make-series"),
    ("DeviceProcessEvents | join kind=inner (DeviceInfo) on DeviceId", "join"),
    ("DeviceProcessEvents | take 10", "take"),
    ("DeviceProcessEvents\n|limit 10", "limit"),
    ("DeviceProcessEvents | top-nested 3 of DeviceName by count()", "top-nested"),
    ("DeviceProcessEvents | distinct DeviceName", "distinct"),
    ("DeviceProcessEvents | lookup (DeviceInfo) on DeviceId", "lookup"),
    ("let recent = DeviceInfo | summarize arg_max(Timestamp, *) by DeviceId;\nDeviceProcessEvents", "summarize"),
    ("DeviceProcessEvents | where DeviceId in ((DeviceInfo | take 3 | project DeviceId))", "take"),
    ("DeviceProcessEvents | evaluate autocluster()", "evaluate autocluster"),
    ("DeviceProcessEvents | sort by Timestamp asc | extend Gap = Timestamp - prev(Timestamp)", "prev()"),
    ("DeviceProcessEvents | extend n = row_number()", "row_number()"),
    ("let cutoff = toscalar(DeviceInfo | project Timestamp); DeviceProcessEvents", "toscalar()"),
    ("print Timestamp = now()", "print"),
    ("datatable(Timestamp: datetime)[datetime(2026-11-01)]", "datatable"),
    ("range Timestamp from ago(1d) to now() step 1h", "range"),
    ("DeviceProcessEvents | where DeviceId in ((DeviceInfo | project DeviceId))", "subquery"),
    ("let ids = DeviceInfo | project DeviceId;\nDeviceProcessEvents | where DeviceId in (ids)", "subquery"),
])
def test_queries_that_aggregate_or_limit_are_refused_naming_the_operator(query, operator):
    reason = refusal(query)
    assert reason is not None and (f"'{operator}'" in reason or operator in reason), reason


@pytest.mark.parametrize("query", [
    "DeviceProcessEvents | where FileName =~ 'powershell.exe' | project Timestamp, DeviceName",
    'DeviceProcessEvents | where ProcessCommandLine has "| take 5" | project ReportId',
    "DeviceProcessEvents | where ProcessCommandLine has @'| summarize' | extend Counted = 1",
    "DeviceProcessEvents // | summarize count()\n| project Timestamp",
    "DeviceProcessEvents | where ProcessCommandLine has ```| count``` | project ReportId",
    "union DeviceProcessEvents, DeviceFileEvents | where Timestamp > ago(1d) | project-away AdditionalFields",
    "DeviceProcessEvents | extend TopLevel = 1, Counter = 2, Taken = 3 | project TopLevel, Counter, Taken",
    "DeviceProcessEvents | mv-expand AdditionalFields | parse ProcessCommandLine with * '-enc ' Encoded",
    "DeviceProcessEvents | evaluate bag_unpack(AdditionalFields)",
    "DeviceProcessEvents | where FileName in ('a.exe', 'b.exe') | project Timestamp, FileName",
    "let names = dynamic(['a.exe', 'b.exe']);\nDeviceProcessEvents | where FileName in (names)",
    "union (DeviceProcessEvents | where FileName == 'a'), (DeviceFileEvents | where FileName == 'a')",
])
def test_queries_whose_rows_stand_alone_can_be_split(query):
    assert refusal(query) is None


def test_a_row_outside_its_part_is_found_by_its_timestamp():
    part = Span(at("2026-11-01T00:00:00Z"), at("2026-11-02T00:00:00Z") - 1)
    assert not outside({"Timestamp": "2026-11-01T00:00:00Z"}, part)
    assert not outside({"Timestamp": "2026-11-01T23:59:59.999999Z"}, part)
    assert outside({"Timestamp": "2026-11-02T00:00:00Z"}, part)
    assert outside({"Timestamp": "2026-10-31T23:59:59.9999999Z"}, part)
    assert not outside({"ReportId": 1}, part) and not outside({"Timestamp": "not a time"}, part)


def test_boundaries_fall_on_whole_microseconds():
    span = Span(at("2026-11-01T00:00:00Z"), at("2026-11-01T00:02:38.2031249Z"))
    left, right = span.halves()
    assert right.start % 10 == 0 and left.end + 1 == right.start
