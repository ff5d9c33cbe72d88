"""The parts of split hunts, kept in storage until they are assembled into one result (shared.core.splitting).

One folder per request in the results container (HUNT_RESULTS_CONTAINER), `split-parts/<job id>.<digest>/`, where
the digest is the first 16 hex digits of `HuntRequest.digest()` (another request under the same id never meets
these parts). Every name is deterministic, so a worker killed between parts, or a copy back from a 429, finds
what is done:

    range.plan.json        the hunt's range, written create-only when it first runs: every later attempt (and
                           every instance) cuts the same range, whatever the clock says then
    <part>.rows.ndjson     a finished part's rows, one JSON object a line (staged blocks, committed whole)
    <part>.done.json       written after its rows: {timespan, row_count, truncated, schema}; a part is done when
                           this exists (rows without it are from a worker that died in between: run again)
    <part>.split.json      the part reached a cap: its halves replace it

`<part>` is `Span.key` (start and end ticks, so names sort in time order). A part found too big never commits its
rows: the blocks staged for it are left uncommitted (the service discards them within a week). `remove()` deletes
the folder once the result is delivered, or once the hunt fails; anything left (a hunt that gave up while its
message was poisoned) expires with the container's retention rule.

Assembly (`HuntParts.assembled`) streams the parts' rows in time order, one download chunk at a time: memory does
not grow with the number of rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.adapters.blob_writer import StagedBlobWriter, write_json_create_only
from shared.core.errors import StreamBroken
from shared.core.hunt_request import HuntRequest
from shared.core.rows import Column, PartSummary, RowStream
from shared.core.splitting import Span, SpanError
from shared.core.strict_json import dumps

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


@dataclass
class Stored:
    """What storing one part's answer found: done (kept), or too big (its rows were not kept)."""

    part: DonePart | None
    row_count: int


class SplitParts:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def folder(self, request: HuntRequest) -> str:
        return f"{PARTS_PREFIX}{request.id}.{request.digest()[:16]}/"

    def open(self, request: HuntRequest, proposed: Span) -> HuntParts:
        """The hunt's parts: its range (the one first written for this request, else `proposed`), and which parts
        are done or split so far (one listing)."""
        folder = self.folder(request)
        plan = self._container.get_blob_client(folder + _PLAN)
        if write_json_create_only(plan, {"start": proposed.start, "end": proposed.end,
                                         "timespan": proposed.timespan}):
            root = proposed
        else:
            stored = json.loads(plan.download_blob().readall())
            root = Span(int(stored["start"]), int(stored["end"]))
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

    def store(self, span: Span, stream: RowStream, *, row_cap: int, keep_if_capped: bool) -> Stored:
        """Streams one part's answer into its rows blob. A part that reaches `row_cap` rows is too big: unless
        `keep_if_capped` (the floor), reading stops there and nothing is kept. StreamBroken escapes."""
        writer = StagedBlobWriter(self.container.get_blob_client(self.folder + span.key + _ROWS))
        for row in stream.rows():
            writer.write(dumps(row) + b"\n")
            if stream.row_count >= row_cap and not keep_if_capped:
                return Stored(None, stream.row_count)   # the rest is not read: the halves will ask again
        self._commit_rows(writer)
        summary = PartSummary(span.timespan, stream.row_count, stream.row_count >= row_cap)
        return Stored(self._done(span, summary, stream.columns), stream.row_count)

    def store_empty_capped(self, span: Span) -> DonePart:
        """A part of the shortest length still refused as too large: done, with no rows, and flagged."""
        self._commit_rows(StagedBlobWriter(self.container.get_blob_client(self.folder + span.key + _ROWS)))
        return self._done(span, PartSummary(span.timespan, 0, True), [])

    def mark_split(self, span: Span) -> None:
        write_json_create_only(self.container.get_blob_client(self.folder + span.key + _SPLIT),
                               {"timespan": span.timespan})
        self.split.add(span)

    @staticmethod
    def _commit_rows(writer: StagedBlobWriter) -> None:
        # Rows without a record are from a worker that died in between: this answer replaces them.
        writer.commit("application/x-ndjson", overwrite=True)

    def _done(self, span: Span, summary: PartSummary, columns: list[Column]) -> DonePart:
        record = {**summary.as_dict(), "schema": [{"name": c.name, "type": c.type} for c in columns]}
        self.container.get_blob_client(self.folder + span.key + _DONE).upload_blob(
            dumps(record), overwrite=True, content_settings=ContentSettings(content_type="application/json"))
        self.done_keys.add(span)
        return DonePart(span, summary, columns)

    def load(self, span: Span) -> DonePart:
        record = json.loads(self.container.get_blob_client(self.folder + span.key + _DONE).download_blob().readall())
        return DonePart(span, PartSummary(str(record["timespan"]), int(record["row_count"]), bool(record["truncated"])),
                        [Column(str(c["name"]), str(c["type"])) for c in record["schema"]])

    def assembled(self, order: list[Span], row_cap: int) -> AssembledParts:
        return AssembledParts(self, [self.load(span) for span in order], row_cap)

    def rows_of(self, span: Span) -> Iterator[dict[str, Any]]:
        """One part's rows, read in ranges of READ_BYTES (one GET each): the SDK's own download would fetch its
        first 32 MB at once."""
        blob = self.container.get_blob_client(self.folder + span.key + _ROWS)
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
                yield json.loads(line)
            if len(chunk) < READ_BYTES:
                break
        if pending.strip():
            yield json.loads(pending)


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
            for row in self.hunt_parts.rows_of(part.span):
                self.row_count += 1
                yield row
