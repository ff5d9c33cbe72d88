"""What the schedulers share in storage, so that a slot is enqueued once however many run (shared.app.scheduler).

In the state container (HUNT_STATE_CONTAINER), per schedule, tenant (`_home` for the home tenant) and series:

    schedules/<schedule>/<tenant>/<series>/watermark.json      {"end"}: the last slot end enqueued (only grows)
    schedules/<schedule>/<tenant>/<series>/slots/<label>.json  the slot's marker, written create-only before its
                                                               message is enqueued ({"state": "claimed", "at"}),
                                                               then {"state": "enqueued"}

A scheduler that finds a marker it did not write leaves the slot to its writer; one claimed longer ago than
CLAIM_SECONDS (its writer died between the marker and the message) is taken over with If-Match, so a slot is never
lost, and the job id (the schedule, the tenant and the slot's end) keeps a rare second message one hunt. Skipped slots
(beyond max_catch_up after an outage) are recorded in the dead-letter container, under the tenant's scope:
`[tenants/<t>/]schedules-skipped/<schedule>/<first>--<last>.json`, naming the schedule, tenant and slots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.adapters.blob_writer import write_json_create_only
from shared.core.job_states import HOME_PARTITION
from shared.core.strict_json import dumps
from shared.core.tenants import scope_of

CLAIM_SECONDS = 120.0
PREFIX = "schedules/"


@dataclass(frozen=True)
class Claim:
    won: bool          # this scheduler enqueues the slot
    enqueued: bool     # someone already enqueued it


class ScheduleState:
    def __init__(self, state: ContainerClient, dead_letters: ContainerClient) -> None:
        self._state = state
        self._dead = dead_letters

    @staticmethod
    def folder(schedule: str, tenant: str | None, series: str) -> str:
        return f"{PREFIX}{schedule}/{tenant or HOME_PARTITION}/{series}/"

    def watermark(self, schedule: str, tenant: str | None, series: str) -> datetime | None:
        try:
            data = self._state.download_blob(self.folder(schedule, tenant, series) + "watermark.json").readall()
        except ResourceNotFoundError:
            return None
        return datetime.fromisoformat(json.loads(data)["end"])

    def latest_other_watermark(self, schedule: str, tenant: str | None, series: str) -> datetime | None:
        """The latest slot end any other series of the schedule enqueued (its every, cron or start changed)."""
        prefix = f"{PREFIX}{schedule}/{tenant or HOME_PARTITION}/"
        ends = []
        for blob in self._state.list_blobs(name_starts_with=prefix):
            if blob.name.endswith("/watermark.json") and not blob.name.startswith(prefix + series + "/"):
                data = self._state.download_blob(blob.name).readall()
                ends.append(datetime.fromisoformat(json.loads(data)["end"]))
        return max(ends, default=None)

    def advance(self, schedule: str, tenant: str | None, series: str, end: datetime, *, replace: bool = False) -> None:
        """Moves the watermark to `end` unless it is already there or later (If-Match, retried on a race);
        `replace`: a series that starts again (a schedule changed back) sets it whatever it was."""
        blob = self._state.get_blob_client(self.folder(schedule, tenant, series) + "watermark.json")
        document = dumps({"end": end.isoformat()})
        for _ in range(10):
            try:
                current = blob.download_blob()
            except ResourceNotFoundError:
                try:
                    blob.upload_blob(document, overwrite=False, content_settings=_JSON)
                    return
                except ResourceExistsError:
                    continue
            if not replace and datetime.fromisoformat(json.loads(current.readall())["end"]) >= end:
                return
            try:
                blob.upload_blob(document, overwrite=True, content_settings=_JSON, etag=current.properties.etag,
                                 match_condition=MatchConditions.IfNotModified)
                return
            except (ResourceModifiedError, ResourceNotFoundError):
                continue

    def claim(self, schedule: str, tenant: str | None, series: str, label: str, now: datetime) -> Claim:
        blob = self._state.get_blob_client(f"{self.folder(schedule, tenant, series)}slots/{label}.json")
        if write_json_create_only(blob, {"state": "claimed", "at": now.isoformat()}):
            return Claim(won=True, enqueued=False)
        try:
            current = blob.download_blob()
        except ResourceNotFoundError:
            return Claim(won=False, enqueued=False)
        marker: dict[str, Any] = json.loads(current.readall())
        if marker.get("state") == "enqueued":
            return Claim(won=False, enqueued=True)
        if now - datetime.fromisoformat(str(marker["at"])) < timedelta(seconds=CLAIM_SECONDS):
            return Claim(won=False, enqueued=False)   # its writer is on it
        try:   # its writer died between the marker and the message: take it over
            blob.upload_blob(dumps({"state": "claimed", "at": now.isoformat()}), overwrite=True, content_settings=_JSON,
                             etag=current.properties.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return Claim(won=False, enqueued=False)
        return Claim(won=True, enqueued=False)

    def enqueued(self, schedule: str, tenant: str | None, series: str, label: str, now: datetime) -> None:
        self._state.get_blob_client(f"{self.folder(schedule, tenant, series)}slots/{label}.json").upload_blob(
            dumps({"state": "enqueued", "at": now.isoformat()}), overwrite=True, content_settings=_JSON)

    def skipped(self, schedule: str, tenant: str | None, first: str, last: str, count: int, now: datetime,
                why: str, labels: list[str]) -> str:
        """The record of slots (or a time range, count 0) that are not hunted; `labels` lists them when few."""
        name = f"{scope_of(tenant)}schedules-skipped/{schedule}/{first}--{last}.json"
        write_json_create_only(self._dead.get_blob_client(name), {
            "schedule": schedule, "tenant": tenant, "first": first, "last": last, "count": count, "slots": labels,
            "reason": why, "recorded_at": now.isoformat()})
        return f"{self._dead.container_name}/{name}"


_JSON = ContentSettings(content_type="application/json")
