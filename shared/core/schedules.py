"""Scheduled, incremental hunts: schedule files, and the slots they cut time into (pure; the clock is passed in).

A schedule is one JSON document in `schedules/` (HUNT_SCHEDULES_DIR), its file stem its name:

    name          optional; must equal the file stem
    every | cron  an ISO 8601 duration of at least 5 minutes (PT15M, PT1H, P1D), or 5 cron fields in UTC
                  (minute hour day-of-month month day-of-week; *, lists, ranges and /steps)
    query | template + parameters
    overlap       default PT0S, at most `every` (for cron: at most the shortest gap between two runs)
    destination, format, api (default graph), tenants (a list, or "*"), enabled (default true),
    max_catch_up  default 24 slots
    start         optional ISO 8601 time: the first slot starts there (a past start catches up)

Slots. With `every`, slot i covers [start + i*every - overlap, start + (i+1)*every); with `cron`, the slot ending at a
run time covers [the previous run time - overlap, the run time). A slot's hunt runs with that interval as its Graph
timespan, written `start/end - 100 ns` (both ends inclusive, as for split hunts), so consecutive slots are
contiguous: no gap, no overlap beyond `overlap`. Without `start`, slots are aligned to the epoch (every) or the cron
times, and a new schedule begins with the latest slot that has ended when it is first seen.

Series. A changed `every`, `cron` or `start` is a new series (its key is a digest of them): it starts at the next
boundary, and the old series' records stay.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.apis import API_NAMES
from shared.core.splitting import TICKS_PER_SECOND, SpanError, format_ticks, parse_duration, parse_instant, ticks_of

MIN_EVERY = timedelta(minutes=5)
NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?")   # fullmatch; leaves room in a job id
_FIELDS = {"name", "every", "cron", "query", "template", "parameters", "overlap", "destination", "format", "tenants",
           "api", "enabled", "max_catch_up", "start", "description"}
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_CRON_SEARCH_MINUTES = 4 * 366 * 24 * 60   # a cron with no run in four years (Feb 30) is refused


class ScheduleError(ValueError):
    """A schedule file that cannot be run: the message names the file and the field."""


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]   # 0 = Sunday
    any_day: bool
    any_weekday: bool

    def _day_matches(self, moment: datetime) -> bool:
        """Cron's rule for the days: when both day fields are restricted, either may match."""
        if moment.month not in self.months:
            return False
        day, weekday = moment.day in self.days, (moment.isoweekday() % 7) in self.weekdays
        return (day and weekday) if (self.any_day or self.any_weekday) else (day or weekday)

    def next_after(self, moment: datetime) -> datetime:
        """The first run time strictly after `moment` (whole minutes, UTC): whole days and hours that cannot
        match are skipped at once."""
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = candidate + timedelta(minutes=_CRON_SEARCH_MINUTES)
        while candidate < limit:
            if not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise ScheduleError("the cron expression has no run time in four years")

    def previous_at_or_before(self, moment: datetime) -> datetime:
        """The latest run time at or before `moment`."""
        candidate = moment.replace(second=0, microsecond=0)
        limit = candidate - timedelta(minutes=_CRON_SEARCH_MINUTES)
        while candidate > limit:
            if not self._day_matches(candidate):
                candidate = candidate.replace(hour=23, minute=59) - timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=59) - timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate -= timedelta(minutes=1)
            else:
                return candidate
        raise ScheduleError("the cron expression has no run time in four years")


def parse_cron(text: str) -> Cron:
    parts = text.split()
    if len(parts) != 5:
        raise ScheduleError(f"{text!r} is not 5 cron fields (minute hour day-of-month month day-of-week)")
    values = [_cron_field(part, low, high, name) for part, (low, high), name in
              zip(parts, _CRON_RANGES, ("minute", "hour", "day-of-month", "month", "day-of-week"), strict=True)]
    weekdays = frozenset(v % 7 for v in values[4])
    # As Vixie cron reads them: a day field that starts with * (*, */2) is unrestricted for the OR rule.
    return Cron(values[0], values[1], values[2], values[3], weekdays, parts[2].startswith("*"),
                parts[4].startswith("*"))


def _cron_field(text: str, low: int, high: int, name: str) -> frozenset[int]:
    found: set[int] = set()
    top = 7 if name == "day-of-week" else high   # 7 is Sunday too
    for item in text.split(","):
        match = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", item)
        if not match:
            raise ScheduleError(f"cron {name} {item!r} is not a number, range, list or step")
        first = low if match.group(1) == "*" else int(match.group(1))
        if match.group(2) is not None:
            last = int(match.group(2))
        elif match.group(1) == "*" or match.group(3) is not None:   # * and N/step run to the field's end
            last = top
        else:
            last = first
        step = int(match.group(3) or 1)
        if not (low <= first <= top and low <= last <= top and first <= last and step >= 1):
            raise ScheduleError(f"cron {name} {item!r} is out of range {low}-{top}")
        found.update(range(first, last + 1, step))
    return frozenset(found)


@dataclass(frozen=True)
class Schedule:
    name: str
    hunt: dict[str, Any]                # query or template + parameters, destination, format, api
    every: timedelta | None = None
    cron: Cron | None = None
    cron_text: str | None = None
    overlap: timedelta = timedelta(0)
    tenants: tuple[str, ...] | str | None = None   # None: home (or default) tenant; "*": every tenant
    enabled: bool = True
    max_catch_up: int = 24
    start: datetime | None = None
    source: str = field(default="", compare=False)

    @property
    def series(self) -> str:
        """What a slot series is keyed by: a change to every, cron or start begins a new one."""
        basis = json.dumps([self.every.total_seconds() if self.every else None, self.cron_text,
                            self.start.isoformat() if self.start else None])
        return hashlib.sha256(basis.encode()).hexdigest()[:12]

    def end_at_or_before(self, moment: datetime) -> datetime | None:
        """The end of the latest slot that has ended by `moment` (None: none has, before `start`)."""
        if self.cron is not None:   # a cron schedule takes no start
            return self.cron.previous_at_or_before(moment)
        assert self.every is not None
        origin = self.start or datetime(1970, 1, 1, tzinfo=UTC)
        if moment < origin + self.every:
            return None
        count = (moment - origin) // self.every
        return origin + count * self.every

    def next_end(self, end: datetime) -> datetime:
        if self.cron is not None:
            return self.cron.next_after(end)
        assert self.every is not None
        return end + self.every

    def previous_end(self, end: datetime) -> datetime:
        """The start of the slot ending at `end`, before the overlap."""
        if self.cron is not None:
            return self.cron.previous_at_or_before(end - timedelta(minutes=1))
        assert self.every is not None
        return end - self.every

    def slot(self, end: datetime) -> Slot:
        start = self.previous_end(end) - self.overlap
        return Slot(start, end)


@dataclass(frozen=True)
class Slot:
    start: datetime   # inclusive (the overlap included)
    end: datetime     # exclusive

    @property
    def timespan(self) -> str:
        """The slot as Graph's timespan, both ends inclusive: its last tick is 100 ns before its end."""
        return f"{format_ticks(ticks_of(self.start))}/{format_ticks(ticks_of(self.end) - 1)}"

    @property
    def label(self) -> str:
        return self.end.strftime("%Y%m%dT%H%MZ")


def job_id(schedule: str, tenant: str | None, slot: Slot) -> str:
    """`<schedule>-<tenant or home>-<slot end, yyyymmddThhmmZ>`: within the id rules (at most 128 characters)."""
    return f"{schedule}-{tenant or 'home'}-{slot.label}"


@dataclass(frozen=True)
class Due:
    """The slots due now: the newest `keep` of them to run, oldest first, and the older ones beyond it."""

    ends: list[datetime]
    skipped_first: datetime | None = None
    skipped_last: datetime | None = None
    skipped_count: int = 0


def due_ends(schedule: Schedule, *, watermark: datetime | None, now: datetime) -> list[datetime]:
    """The ends of every slot due after `watermark`, oldest first (for tests and small catch-ups)."""
    return due(schedule, watermark=watermark, now=now, keep=10_000).ends


def due(schedule: Schedule, *, watermark: datetime | None, now: datetime, keep: int) -> Due:
    """The slots due after `watermark` (the last slot end enqueued). Without a watermark: from `start` when it is
    set, else just the latest slot that has ended. Beyond `keep`, the oldest are counted as skipped, however many
    (a start years back is arithmetic, not a list)."""
    latest = schedule.end_at_or_before(now)
    if latest is None:
        return Due([])
    if watermark is None and (schedule.start is None or schedule.every is None):
        return Due([latest])
    first = schedule.start + schedule.every if watermark is None and schedule.start and schedule.every \
        else schedule.next_end(watermark) if watermark is not None else latest
    if first > latest:
        return Due([])
    if schedule.every is not None:
        count = (latest - first) // schedule.every + 1
        kept = min(count, keep)
        newest = [latest - (kept - 1 - n) * schedule.every for n in range(kept)]
        if count > kept:
            return Due(newest, first, newest[0] - schedule.every, count - kept)
        return Due(newest)
    ends: list[datetime] = []
    skipped, skipped_first, skipped_last = 0, None, None
    end = first
    while end <= latest:
        ends.append(end)
        if len(ends) > keep:
            dropped = ends.pop(0)
            skipped += 1
            skipped_first = skipped_first or dropped
            skipped_last = dropped
        end = schedule.next_end(end)
    return Due(ends, skipped_first, skipped_last, skipped)


def parse_schedule(source: str, document: Any, *, stem: str) -> Schedule:
    """A schedule file's JSON -> Schedule, or ScheduleError naming the file and the field."""
    def bad(field_name: str, why: str) -> ScheduleError:
        return ScheduleError(f"{source}: {field_name}: {why}")

    if not isinstance(document, dict):
        raise ScheduleError(f"{source}: a schedule is a JSON object")
    for unknown in sorted(set(document) - _FIELDS):
        raise bad(unknown, f"unknown field; allowed: {', '.join(sorted(_FIELDS))}")
    if not NAME.fullmatch(stem):
        raise bad("name", "the file name must be 1-48 lowercase letters, digits and -")
    if document.get("name", stem) != stem:
        raise bad("name", f"must equal the file name {stem!r}")
    every = cron = None
    cron_text = None
    if ("every" in document) == ("cron" in document):
        raise bad("every", "give exactly one of 'every' (an ISO 8601 duration) or 'cron' (5 fields, UTC)")
    if "every" in document:
        every = _duration(document["every"], bad, "every")
        if every < MIN_EVERY:
            raise bad("every", "must be at least PT5M")
    else:
        if not isinstance(document["cron"], str):
            raise bad("cron", "must be a string of 5 fields")
        try:
            cron = parse_cron(document["cron"])
        except ScheduleError as error:
            raise bad("cron", str(error)) from None
        cron_text = " ".join(document["cron"].split())
    overlap = _duration(document.get("overlap", "PT0S"), bad, "overlap")
    try:
        shortest = every if every is not None else _shortest_cron_gap(cron)
    except ScheduleError as error:
        raise bad("cron", str(error)) from None
    if shortest < MIN_EVERY:
        raise bad("cron", "runs more often than every 5 minutes")
    if overlap > shortest:
        raise bad("overlap", "must be at most the time between two slots")
    if ("query" in document) == ("template" in document):
        raise bad("query", "give exactly one of 'query' or 'template'")
    hunt: dict[str, Any] = {key: document[key] for key in ("query", "template", "parameters", "destination",
                                                           "format") if key in document}
    api = document.get("api", "graph")
    if api != "graph":
        raise bad("api", "a schedule runs on graph: its slots are Graph timespans" if api in API_NAMES
                  else f"must be graph, got {str(api)[:20]!r}")
    hunt["api"] = "graph"
    tenants = document.get("tenants")
    if tenants is not None and tenants != "*" and not (
            isinstance(tenants, list) and tenants and all(isinstance(t, str) for t in tenants)):
        raise bad("tenants", 'must be a list of tenant names, or "*"')
    enabled = document.get("enabled", True)
    if not isinstance(enabled, bool):
        raise bad("enabled", "must be true or false")
    catch_up = document.get("max_catch_up", 24)
    if not isinstance(catch_up, int) or isinstance(catch_up, bool) or not 1 <= catch_up <= 10_000:
        raise bad("max_catch_up", "must be a whole number from 1 to 10000")
    start = None
    if document.get("start") is not None:
        try:
            ticks = parse_instant(str(document["start"]))
        except SpanError as error:
            raise bad("start", str(error)) from None
        start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ticks // 10)
        if cron is not None:
            raise bad("start", "is for 'every' schedules; a cron schedule starts at its next run time")
    return Schedule(name=stem, hunt=hunt, every=every, cron=cron, cron_text=cron_text, overlap=overlap,
                    tenants=tuple(tenants) if isinstance(tenants, list) else tenants, enabled=enabled,
                    max_catch_up=catch_up, start=start, source=source)


def _duration(value: Any, bad: Any, name: str) -> timedelta:
    if not isinstance(value, str):
        raise bad(name, "must be an ISO 8601 duration such as PT15M")
    text = value.strip().upper()
    try:
        ticks = parse_duration(text)
    except SpanError as error:
        raise bad(name, str(error)) from None
    return timedelta(seconds=ticks / TICKS_PER_SECOND)


def _shortest_cron_gap(cron: Cron | None) -> timedelta:
    """The shortest time between two runs of the cron over a year from a fixed moment (bounds the overlap)."""
    assert cron is not None
    moment = cron.next_after(datetime(2026, 1, 1, tzinfo=UTC))
    shortest = timedelta(days=3650)
    for _ in range(200):
        following = cron.next_after(moment)
        shortest = min(shortest, following - moment)
        moment = following
    return shortest
