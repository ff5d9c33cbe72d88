"""The scheduler: enqueues the slots of the schedules in HUNT_SCHEDULES_DIR that are due (shared.core.schedules),
once each, whichever instance runs it and however often (shared.adapters.schedule_state).

    run_once(now)    every enabled schedule x each of its tenants: the slots due after the watermark, oldest first;
                     beyond max_catch_up the oldest are recorded as skipped; each slot is claimed (a create-only
                     marker), enqueued as a hunt whose timespan is the slot, marked enqueued, and the watermark
                     moves to it. A slot claimed by another scheduler stops that series for this run (order kept)
    run_now(name)    the latest slot that has ended, now (`schedules --run NAME`): the same claim, so idempotent
    describe(now)    each schedule's last and next slot, per tenant (`schedules`)

Runs from the timer-triggered Function (every minute), `python -m shared scheduler`, or `worker --schedules`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.adapters.schedule_state import ScheduleState
from shared.core.errors import InvalidHuntRequest
from shared.core.hunt_request import decode_hunt_request
from shared.core.schedules import Schedule, ScheduleError, Slot, due, job_id, parse_schedule
from shared.core.settings import Settings
from shared.core.strict_json import dumps_text

logger = logging.getLogger(__name__)

DEFAULT_SCHEDULES_DIR = Path(__file__).resolve().parents[2] / "schedules"


@dataclass(frozen=True)
class Ran:
    schedule: str
    tenant: str | None
    enqueued: list[str]   # slot labels
    skipped: list[str]


def load_schedules(folder: Path, settings: Settings, now: datetime) -> list[Schedule]:
    """Every `*.json` in the folder; ScheduleError naming the file and the field for the first bad one."""
    if not folder.is_dir():
        return []
    schedules = []
    for path in sorted(folder.glob("*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ScheduleError(f"{path.name}: not valid JSON ({error})") from None
        schedule = parse_schedule(path.name, document, stem=path.stem)
        if not schedule.enabled:   # a disabled schedule (the shipped example) is not held to this deployment
            schedules.append(schedule)
            continue
        tenants = schedule.tenants
        if tenants is not None and tenants != "*":
            unknown = [t for t in tenants if t not in settings.tenants]
            if unknown:
                raise ScheduleError(f"{path.name}: tenants: {', '.join(unknown)} not in HUNT_TENANTS")
        if tenants is None and settings.tenants and settings.default_tenant is None:
            raise ScheduleError(f"{path.name}: tenants: required, as this relay has tenants and no "
                                "HUNT_DEFAULT_TENANT")
        _check_hunt(path.name, schedule, settings, now)
        schedules.append(schedule)
    return schedules


def _check_hunt(source: str, schedule: Schedule, settings: Settings, now: datetime) -> None:
    """The schedule's hunt is checked as a message would be, once, at load."""
    body = {**schedule.hunt, "id": "check", "timespan": "P1D"}
    try:
        decode_hunt_request(dumps_text(body), message_id="check", default_api=settings.api, now=now)
    except InvalidHuntRequest as error:
        raise ScheduleError(f"{source}: {error.field or 'hunt'}: {error.reason}") from None


class Scheduler:
    def __init__(self, settings: Settings, schedules: list[Schedule], state: ScheduleState,
                 send: Callable[[str], None], clock: Callable[[], datetime]) -> None:
        self._settings = settings
        self._schedules = schedules
        self._state = state
        self._send = send
        self._clock = clock

    def tenants_of(self, schedule: Schedule) -> list[str | None]:
        if schedule.tenants == "*":
            return list(self._settings.tenants) or [None]
        if schedule.tenants is not None:
            return list(schedule.tenants)
        return [self._settings.default_tenant] if self._settings.tenants else [None]

    def run_once(self) -> list[Ran]:
        now = self._clock()
        ran = []
        for schedule in self._schedules:
            if not schedule.enabled:
                continue
            for tenant in self.tenants_of(schedule):
                ran.append(self._run(schedule, tenant, now))
        return ran

    def _run(self, schedule: Schedule, tenant: str | None, now: datetime) -> Ran:
        series = schedule.series
        watermark = self._state.watermark(schedule.name, tenant, series)
        before = self._state.latest_other_watermark(schedule.name, tenant, series)
        if before is not None and (watermark is None or watermark < before):
            return self._new_series(schedule, tenant, series, before, now)
        found = due(schedule, watermark=watermark, now=now, keep=schedule.max_catch_up)
        skipped: list[str] = []
        if found.skipped_count:
            assert found.skipped_first is not None and found.skipped_last is not None
            first, last = schedule.slot(found.skipped_first).label, schedule.slot(found.skipped_last).label
            skipped = _labels(schedule, found.skipped_first, found.skipped_last, found.skipped_count)
            where = self._state.skipped(
                schedule.name, tenant, first, last, found.skipped_count, now,
                f"{found.skipped_count + len(found.ends)} slots were due after downtime, more than max_catch_up "
                f"({schedule.max_catch_up}): the {len(found.ends)} newest run, oldest first", skipped)
            logger.warning("schedule %s: %s slots skipped (beyond max_catch_up), recorded at %s", schedule.name,
                           found.skipped_count, where)
            self._state.advance(schedule.name, tenant, series, found.skipped_last)
        enqueued = []
        for end in found.ends:
            result = self._enqueue(schedule, tenant, series, end, now)
            if result == "held":
                break   # another scheduler holds it: keep the order, come back next run
            if result == "sent":
                enqueued.append(schedule.slot(end).label)
        return Ran(schedule.name, tenant, enqueued, skipped)

    def _new_series(self, schedule: Schedule, tenant: str | None, series: str, before: datetime,
                    now: datetime) -> Ran:
        """every, cron or start changed (or changed back): the series starts at the next boundary. The time from
        the last slot of the series before to the first of this one is recorded as not hunted, never lost."""
        latest = schedule.end_at_or_before(now)
        if latest is None or latest < before:
            return Ran(schedule.name, tenant, [], [])
        self._state.advance(schedule.name, tenant, series, latest, replace=True)
        gap_end = latest - schedule.overlap
        if gap_end > before:
            self._state.skipped(schedule.name, tenant, before.strftime("%Y%m%dT%H%MZ"),
                                gap_end.strftime("%Y%m%dT%H%MZ"), 0, now,
                                f"the schedule's every, cron or start changed: [{before.isoformat()}, "
                                f"{gap_end.isoformat()}) is not hunted; the new series starts at the next "
                                "boundary", [])
        logger.info("schedule %s: a new series starts after %s", schedule.name, latest.isoformat())
        return Ran(schedule.name, tenant, [], [])

    def _enqueue(self, schedule: Schedule, tenant: str | None, series: str, end: datetime, now: datetime,
                 advance: bool = True) -> str:
        """"sent" (this scheduler enqueued it), "already" (someone did), or "held" (another is on it)."""
        slot = schedule.slot(end)
        claim = self._state.claim(schedule.name, tenant, series, slot.label, now)
        if claim.enqueued:
            if advance:
                self._state.advance(schedule.name, tenant, series, end)
            return "already"
        if not claim.won:
            return "held"
        self._send(self.message(schedule, tenant, slot))
        self._state.enqueued(schedule.name, tenant, series, slot.label, now)
        if advance:
            self._state.advance(schedule.name, tenant, series, end)
        logger.info("schedule %s: enqueued slot %s", schedule.name, slot.label)
        return "sent"

    @staticmethod
    def message(schedule: Schedule, tenant: str | None, slot: Slot) -> str:
        body: dict[str, Any] = {"id": job_id(schedule.name, tenant, slot), **schedule.hunt, "timespan": slot.timespan,
                                "schedule": schedule.name, "slot": f"{slot.start.isoformat()}/{slot.end.isoformat()}"
                                .replace("+00:00", "Z")}
        if tenant is not None:
            body["tenant"] = tenant
        return dumps_text(body)

    def run_now(self, name: str) -> list[str]:
        """The latest slot that has ended, for each tenant of the schedule, now."""
        schedule = next((s for s in self._schedules if s.name == name), None)
        if schedule is None:
            raise ScheduleError(f"no schedule {name!r}; known: {', '.join(s.name for s in self._schedules) or 'none'}")
        now = self._clock()
        end = schedule.end_at_or_before(now)
        done = []
        for tenant in self.tenants_of(schedule):
            # The watermark moves only when this slot is the next one: slots before it stay due for the timer.
            watermark = self._state.watermark(schedule.name, tenant, schedule.series)
            contiguous = watermark is not None and schedule.next_end(watermark) == end
            if end is not None and self._enqueue(schedule, tenant, schedule.series, end, now,
                                                 advance=contiguous) != "held":
                done.append(job_id(schedule.name, tenant, schedule.slot(end)))
        return done

    def describe(self) -> list[dict[str, Any]]:
        now = self._clock()
        rows = []
        for schedule in self._schedules:
            for tenant in self.tenants_of(schedule):
                last = self._state.watermark(schedule.name, tenant, schedule.series)
                latest = schedule.end_at_or_before(now)
                following = schedule.next_end(latest) if latest is not None else (
                    schedule.start + schedule.every if schedule.start and schedule.every else None)
                rows.append({"schedule": schedule.name, "tenant": tenant, "enabled": schedule.enabled,
                             "last_slot": schedule.slot(last).label if last else None,
                             "next_slot": schedule.slot(following).label if following else None})
        return rows


def _labels(schedule: Schedule, first: datetime, last: datetime, count: int) -> list[str]:
    """The skipped slots' labels, when they are few enough to list (at most 1,000); else only the range."""
    if count > 1000:
        return []
    labels, end = [], first
    while end <= last:
        labels.append(schedule.slot(end).label)
        end = schedule.next_end(end)
    return labels
