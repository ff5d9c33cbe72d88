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
from shared.core.schedules import Schedule, ScheduleError, Slot, due_ends, job_id, parse_schedule
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
        if watermark is None and self._state.has_other_series(schedule.name, tenant, series):
            # every, cron or start changed: the new series starts at the next boundary, not with a past slot
            latest = schedule.end_at_or_before(now)
            if latest is not None:
                self._state.advance(schedule.name, tenant, series, latest)
            return Ran(schedule.name, tenant, [], [])
        ends = due_ends(schedule, watermark=watermark, now=now)
        skipped: list[str] = []
        if len(ends) > schedule.max_catch_up:
            cut = len(ends) - schedule.max_catch_up
            skipped = [schedule.slot(end).label for end in ends[:cut]]
            where = self._state.skipped(schedule.name, tenant, skipped, now, f"{len(skipped)} slots were due after "
                                        f"downtime, more than max_catch_up ({schedule.max_catch_up}); the "
                                        f"{schedule.max_catch_up} newest run, oldest first")
            logger.warning("schedule %s: %s slots skipped (beyond max_catch_up), recorded at %s", schedule.name,
                           len(skipped), where)
            self._state.advance(schedule.name, tenant, series, ends[cut - 1])
            ends = ends[cut:]
        enqueued = []
        for end in ends:
            if not self._enqueue(schedule, tenant, series, end, now):
                break   # another scheduler holds it: keep the order, come back next run
            enqueued.append(schedule.slot(end).label)
        return Ran(schedule.name, tenant, enqueued, skipped)

    def _enqueue(self, schedule: Schedule, tenant: str | None, series: str, end: datetime, now: datetime) -> bool:
        slot = schedule.slot(end)
        claim = self._state.claim(schedule.name, tenant, series, slot.label, now)
        if claim.enqueued:
            self._state.advance(schedule.name, tenant, series, end)
            return True
        if not claim.won:
            return False
        self._send(self.message(schedule, tenant, slot))
        self._state.enqueued(schedule.name, tenant, series, slot.label, now)
        self._state.advance(schedule.name, tenant, series, end)
        logger.info("schedule %s: enqueued slot %s", schedule.name, slot.label)
        return True

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
            if end is not None and self._enqueue(schedule, tenant, schedule.series, end, now):
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
