"""The parts of split hunts, kept in storage until they are assembled into one result (shared.core.splitting).

One folder per request in the results container (HUNT_RESULTS_CONTAINER), `[tenants/<tenant>/]split-parts/<job
id>.<digest>/`, where the digest is the first 16 hex digits of `HuntRequest.digest()` (another request under the
same id never meets these parts). Every name but a rows blob's is deterministic, so a worker killed between parts,
or a copy back from a 429, finds what is done:

    range.plan.json             the hunt's range and when it was first cut, written create-only: every later
                                attempt (and every instance) cuts the same range. A plan older than HUNT_MAX_AGE
                                is from a hunt that ended long ago (no copy of it can be alive): it starts anew
    <part>.<writer>.rows.ndjson a finished part's rows, one JSON object a line, under a name of its own writer's
                                (staged blocks, committed whole, never written again)
    <part>.done.json            written create-only after its rows: {timespan, row_count, truncated, schema, rows};
                                a part is done when this exists, and the first copy to write it wins (a second copy
                                running the same part, after a redelivery, deletes its own rows and uses the first's)
    <part>.split.json           the part reached a cap: its halves replace it

`<part>` is `Span.key` (start and end ticks, so names sort in time order). Before it calls the API for a part, a
copy looks for the part's record again, so that two copies of one hunt do not both run it. A part found too big
never commits its rows: the blocks staged for it are left uncommitted (the service discards them within a week).
`remove()` deletes the folder once the hunt is answered; anything left (a hunt whose message was poisoned while a
worker held it) expires with the container's retention rule, or is replaced when its plan is too old.

Assembly (`HuntParts.assembled`) streams the parts' rows in time order, one 4 MiB range at a time: memory does not
grow with the number of rows. A part whose rows are gone (removed by another copy that delivered first) or unreadable
is a StreamBroken: the hunt is retried, and its destination's idempotence (the job id) keeps one result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient

from shared.adapters.blob_writer import StagedBlobWriter, write_json_create_only
from shared.core.errors import StreamBroken
from shared.core.hunt_request import HuntRequest
from shared.core.rows import Column, PartSummary, RowStream
from shared.core.splitting import Span, SpanError, outside
from shared.core.strict_json import dumps
from shared.core.tenants import scope_of

logger = logging.getLogger(__name__)

PARTS_PREFIX = "split-parts/"
_PLAN = "range.plan.json"
_ROWS, _DONE, _SPLIT = ".rows.ndjson", ".done.json", ".split.json"
READ_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class DonePart:
    span: Span
    summary: PartSummary
    columns: list[Column]
    rows_blob: str


@dataclass
class Stored:
    """What storing one part's answer found: done (kept), or too big (its rows were not kept)."""

    part: DonePart | None
    row_count: int


class SplitParts:
    def __init__(self, container: ContainerClient, *, clock: Callable[[], datetime],
                 max_age_seconds: float) -> None:
        self._container = container
        self._clock = clock
        self._max_age = timedelta(seconds=max_age_seconds)

    def folder(self, request: HuntRequest) -> str:
        return f"{scope_of(request.tenant)}{PARTS_PREFIX}{request.id}.{request.digest()[:16]}/"

    def open(self, request: HuntRequest, proposed: Span) -> HuntParts:
        """The hunt's parts: its range (the one first written for this request, else `proposed`), and which parts
        are done or split so far (one listing)."""
        folder = self.folder(request)
        plan = self._container.get_blob_client(folder + _PLAN)
        root = self._planned(request, plan, proposed)
        parts = HuntParts(self._container, folder, root)
        for blob in self._container.list_blobs(name_starts_with=folder):
            leaf = blob.name[len(folder):]
            for suffix, found in ((_DONE, parts.done_keys), (_SPLIT, parts.split)):
                if leaf.endswith(suffix):
                    try:
                        span = Span.from_key(leaf.removesuffix(suffix))
                    except SpanError:
                        continue
                    found.add(span)
        return parts

    def _planned(self, request: HuntRequest, plan: BlobClient, proposed: Span) -> Span:
        now = self._clock()
        document = {"start": proposed.start, "end": proposed.end, "timespan": proposed.timespan,
                    "created_at": now.isoformat()}
        if write_json_create_only(plan, document):
            return proposed
        stored = json.loads(plan.download_blob().readall())
        created = datetime.fromisoformat(str(stored.get("created_at", now.isoformat())))
        if now - created > self._max_age:   # from a hunt that ended long ago: this one cuts its own range
            logger.info("hunt %s: split parts from an earlier hunt (%s) replaced", request.id, created.isoformat())
            self.remove(request)
            if write_json_create_only(plan, document):
                return proposed
            stored = json.loads(plan.download_blob().readall())
        return Span(int(stored["start"]), int(stored["end"]))

    def remove(self, request: HuntRequest) -> None:
        """Deletes the request's folder (nothing happens when there is none)."""
        folder = self.folder(request)
        for blob in self._container.list_blobs(name_starts_with=folder):
            with contextlib.suppress(ResourceNotFoundError):
                self._container.delete_blob(blob.name)


@dataclass
class HuntParts:
    container: ContainerClient
    folder: str
    root: Span
    done_keys: set[Span] = field(default_factory=set)
    split: set[Span] = field(default_factory=set)

    def is_done(self, span: Span) -> bool:
        """Whether another copy of the hunt finished the part since the listing (one look before each call)."""
        if span in self.done_keys:
            return True
        if self.container.get_blob_client(self.folder + span.key + _DONE).exists():
            self.done_keys.add(span)
            return True
        return False

    def store(self, span: Span, stream: RowStream, *, row_cap: int, keep_if_capped: bool) -> Stored:
        """Streams one part's answer into a rows blob of its own. A part that reaches `row_cap` rows is too big:
        unless `keep_if_capped` (the floor), reading stops there and nothing is kept. A row whose Timestamp lies
        outside the part raises RowsOutsidePart. StreamBroken escapes."""
        writer = StagedBlobWriter(self.container.get_blob_client(self._rows_name(span)))
        for row in stream.rows():
            if outside(row, span):
                raise RowsOutsidePart(span, str(row.get("Timestamp"))[:40])
            writer.write(dumps(row) + b"\n")
            if stream.row_count >= row_cap and not keep_if_capped:
                return Stored(None, stream.row_count)   # the rest is not read: the halves will ask again
        writer.commit("application/x-ndjson")
        summary = PartSummary(span.timespan, stream.row_count, stream.row_count >= row_cap)
        return Stored(self._done(span, summary, stream.columns, writer.name), stream.row_count)

    def store_empty_capped(self, span: Span) -> DonePart:
        """A part of the shortest length still refused as too large: done, with no rows, and flagged."""
        writer = StagedBlobWriter(self.container.get_blob_client(self._rows_name(span)))
        writer.commit("application/x-ndjson")
        return self._done(span, PartSummary(span.timespan, 0, True), [], writer.name)

    def mark_split(self, span: Span) -> None:
        write_json_create_only(self.container.get_blob_client(self.folder + span.key + _SPLIT),
                               {"timespan": span.timespan})
        self.split.add(span)

    def _rows_name(self, span: Span) -> str:
        return f"{self.folder}{span.key}.{uuid.uuid4().hex[:12]}{_ROWS}"

    def _done(self, span: Span, summary: PartSummary, columns: list[Column], rows_blob: str) -> DonePart:
        record = {**summary.as_dict(), "schema": [{"name": c.name, "type": c.type} for c in columns],
                  "rows": rows_blob}
        self.done_keys.add(span)
        if not write_json_create_only(self.container.get_blob_client(self.folder + span.key + _DONE), record):
            # Another copy finished this part first: its rows are the part's; ours go.
            with contextlib.suppress(ResourceNotFoundError):
                self.container.delete_blob(rows_blob)
            return self.load(span)
        return DonePart(span, summary, columns, rows_blob)

    def load(self, span: Span) -> DonePart:
        try:
            record = json.loads(self.container.get_blob_client(self.folder + span.key + _DONE)
                                .download_blob().readall())
        except ResourceNotFoundError:
            raise StreamBroken(f"the record of part {span.timespan} is gone from storage") from None
        return DonePart(span, PartSummary(str(record["timespan"]), int(record["row_count"]), bool(record["truncated"])),
                        [Column(str(c["name"]), str(c["type"])) for c in record["schema"]], str(record["rows"]))

    def assembled(self, order: list[Span], row_cap: int) -> AssembledParts:
        return AssembledParts(self, [self.load(span) for span in order], row_cap)

    def rows_of(self, part: DonePart) -> Iterator[dict[str, Any]]:
        """One part's rows, read in ranges of READ_BYTES (one GET each): the SDK's own download would fetch its
        first 32 MB at once. The rows blob is never written again once its record names it."""
        span = part.span
        blob = self.container.get_blob_client(part.rows_blob)
        offset, pending = 0, b""
        while True:
            try:
                chunk = blob.download_blob(offset=offset, length=READ_BYTES).readall()
            except ResourceNotFoundError:
                raise StreamBroken(f"the rows of part {span.timespan} are missing from storage") from None
            except HttpResponseError as error:
                if error.status_code != 416:   # 416: the range starts at the end (an empty part, or a full range)
                    raise
                chunk = b""
            offset += len(chunk)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield _row(line, span)
            if len(chunk) < READ_BYTES:
                break
        if pending.strip():
            yield _row(pending, span)


def _row(line: bytes, span: Span) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except ValueError:
        raise StreamBroken(f"a row of part {span.timespan} cannot be read back from storage") from None
    if not isinstance(row, dict):
        raise StreamBroken(f"a row of part {span.timespan} is not a JSON object in storage")
    return row


class RowsOutsidePart(Exception):
    """A part came back with a row whose Timestamp lies outside it: the query's rows are not what the Timespan
    filters (print, datatable, a table without Timestamp, a computed Timestamp), so splitting would repeat them."""

    def __init__(self, span: Span, timestamp: str) -> None:
        super().__init__(f"the query returned a row with Timestamp {timestamp} for the part {span.timespan}")
        self.span = span


@dataclass
class AssembledParts:
    """A RowStream over the finished parts, in time order: what the destination receives as one result."""

    hunt_parts: HuntParts
    done: list[DonePart]
    row_cap: int
    stats: dict[str, Any] | None = None   # the service's stats are per call: a split result has none
    row_count: int = 0
    columns: list[Column] = field(init=False)
    parts: list[PartSummary] | None = field(init=False)

    def __post_init__(self) -> None:
        self.columns = next((part.columns for part in self.done if part.columns), [])
        self.parts = [part.summary for part in self.done]

    def rows(self) -> Iterator[dict[str, Any]]:
        for part in self.done:
            for row in self.hunt_parts.rows_of(part):
                self.row_count += 1
                yield row
