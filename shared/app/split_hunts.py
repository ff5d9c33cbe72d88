"""Running a split hunt (`"split": true`): its parts, one call each, until every part fits under the caps.

    run(ran, query) -> AssembledParts   every part is done: the one result to deliver (then `finished`)
                     | Wait             the quota gate said not now (no call spent)
                     | ApiReply         a part's call failed: 429, an error (the processor classifies it)
                     | TransportFailure | PartBroken   nothing usable came back, or the stream broke
                     | Continue         this invocation's time is used; the finished parts are kept

Each turn asks the core (shared.core.splitting) for the first part not done, calls the API for it through the
processor's `call` (the quota gate, then the client), and stores what came back (shared.adapters.split_parts).
A part that reaches the row cap, or that the service refuses as too large, is split in two, unless its halves
would be shorter than HUNT_SPLIT_MIN, or the hunt has HUNT_SPLIT_MAX_PARTS parts: then it is kept as it came (or
empty, for a refusal) and flagged truncated. A finished part is never asked for again: a copy back from a 429, or a
worker that was killed, finds it done, and a second copy of the hunt looks for the part's record before each call.
A part whose rows lie outside it (PartRefused) shows a query that splitting would repeat: the hunt is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from shared.adapters.hunting_client import ApiReply, ApiResult, SignInRefused, TransportFailure
from shared.adapters.split_parts import AssembledParts, HuntParts, RowsOutsidePart, SplitParts
from shared.core.apis import APIS
from shared.core.classify import Terminal, classify
from shared.core.errors import StreamBroken
from shared.core.hunt_request import HuntRequest
from shared.core.quota import Wait
from shared.core.splitting import TICKS_PER_SECOND, hunt_range, next_part, parts_in_order

logger = logging.getLogger(__name__)

# The Functions host stops an invocation at host.json's functionTimeout (10 min); one Graph call may take 3.
INVOCATION_BUDGET_SECONDS = 240.0


@dataclass(frozen=True)
class Continue:
    parts_done: int
    reason: str


@dataclass(frozen=True)
class PartBroken:
    reason: str


@dataclass(frozen=True)
class PartRefused:
    """The rows that came back show the query cannot be split by time (shared.core.splitting.outside)."""

    reason: str


SplitStep = (AssembledParts | Wait | ApiReply | TransportFailure | SignInRefused | Continue | PartBroken
             | PartRefused)


class SplitHunts:
    def __init__(self, parts: SplitParts, call: Callable[[HuntRequest, str], ApiResult | Wait], *, row_cap: int,
                 split_min_seconds: float, max_parts: int, budget_seconds: float | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._parts = parts
        self._max_parts = max_parts
        self._call = call
        self._row_cap = row_cap
        self._floor = max(1, round(split_min_seconds * TICKS_PER_SECOND))
        self._budget = INVOCATION_BUDGET_SECONDS if budget_seconds is None else budget_seconds
        self._monotonic = monotonic

    def run(self, ran: HuntRequest, query: str) -> SplitStep:
        assert ran.first_enqueued_at is not None   # set by decoding: the first attempt's time
        hunt = self._parts.open(ran, hunt_range(ran.timespan, ran.first_enqueued_at))
        started, calls = self._monotonic(), 0
        while (part := next_part(hunt.root, hunt.split, hunt.done_keys)) is not None:
            if calls and self._over_budget(started):
                return self._continue(hunt)
            if hunt.is_done(part):   # another copy of the hunt finished it meanwhile
                continue
            calls += 1
            # The floor: halves would be shorter than HUNT_SPLIT_MIN, or the hunt has as many parts as it may have.
            floor = not part.splittable(self._floor) or len(parts_in_order(hunt.root, hunt.split)) >= self._max_parts
            reply = self._call(replace(ran, timespan=part.timespan), query)
            if isinstance(reply, Wait | TransportFailure | SignInRefused):
                return reply
            if isinstance(reply, ApiReply):
                verdict = classify(reply.status, reply.body, APIS[ran.api])
                if not (isinstance(verdict, Terminal) and verdict.error.code == "ResultTooLarge"):
                    return reply
                if floor:
                    logger.warning("hunt %s: a part of the shortest length is still too large; delivered empty "
                                   "and flagged", ran.id)
                    hunt.store_empty_capped(part)
                else:
                    hunt.mark_split(part)
                continue
            try:
                stored = hunt.store(part, reply, row_cap=self._row_cap, keep_if_capped=floor)
            except StreamBroken as error:
                return PartBroken(str(error))
            except RowsOutsidePart as error:
                return PartRefused(f"{error}: its rows are not what the timespan filters (print, datatable, range, "
                                   "a table without Timestamp, or a computed Timestamp), so every part would "
                                   "return them again")
            finally:
                reply.close()
            if stored.part is None:
                hunt.mark_split(part)
                logger.info("hunt %s: a part reached %s rows, split in two", ran.id, stored.row_count)
            else:
                logger.info("hunt %s: part %s of the split hunt done, %s rows", ran.id, len(hunt.done_keys),
                            stored.row_count)
        if calls and self._over_budget(started):   # assembling a big result may take as long again
            return self._continue(hunt)
        order = parts_in_order(hunt.root, hunt.split)
        return hunt.assembled(order, self._row_cap)

    def _over_budget(self, started: float) -> bool:
        return self._monotonic() - started > self._budget

    @staticmethod
    def _continue(hunt: HuntParts) -> Continue:
        return Continue(len(hunt.done_keys), f"split hunt: {len(hunt.done_keys)} parts done, the rest from a copy "
                                             "(this invocation's time is used)")

    def finished(self, request: HuntRequest) -> None:
        """The hunt is answered (delivered, kept for a delivery-only retry, or failed): its parts go."""
        self._parts.remove(request)
