"""Which API runs a hunt: Graph first, and legacy hunts kept working past the retirement of the mde and m365d APIs.

Microsoft retires the legacy advanced hunting endpoints (mde `advancedqueries/run`, m365d `advancedhunting/run`):
they stop returning data on RETIREMENT (2027-02-01T00:00:00Z). Graph's `runHuntingQuery` runs the same KQL over
the same tables. HUNT_LEGACY_APIS says what a hunt that names mde or m365d does:

    auto     (default) it runs on the API it names until RETIREMENT, or until that API answers as retired
             (`is_retired_answer`), whichever comes first; from then on on Graph. A retirement one instance met is
             remembered fleet-wide (shared.adapters.retirements), so the others do not each spend a call on it.
    graph    it always runs on Graph
    legacy   it runs on the API it names, whatever happens (a retired answer is then a failure)

A routed hunt's envelope has the shape of a native Graph hunt's: `api` is the API that ran it, `requested_api`
the one asked for, and `warnings` says why. Pure: the time and what is known retired are passed in.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from shared.core.apis import Api
from shared.core.classify import envelope_error

RETIREMENT = datetime(2027, 2, 1, tzinfo=UTC)
LegacyMode = Literal["auto", "graph", "legacy"]
LEGACY_MODES: tuple[str, ...] = ("auto", "graph", "legacy")
_RETIRED_WORDS = ("retired", "deprecated")


@dataclass(frozen=True)
class Route:
    api: Api                      # the API that runs the hunt
    requested_api: Api            # the API the hunt named
    warnings: tuple[str, ...] = ()

    @property
    def routed(self) -> bool:
        return self.api != self.requested_api


def route(requested: Api, mode: LegacyMode, *, now: datetime, retired: Collection[str],
          retirement: datetime = RETIREMENT) -> Route:
    if requested == "graph" or mode == "legacy":
        return Route(requested, requested)
    if mode == "graph":
        return Route("graph", requested, (f"the {requested} API retires on {retirement:%Y-%m-%d}; "
                                          "HUNT_LEGACY_APIS=graph runs its hunts on Microsoft Graph",))
    if now >= retirement:
        return Route("graph", requested, (f"the {requested} API was retired on {retirement:%Y-%m-%d}; the hunt ran "
                                          "on Microsoft Graph",))
    if requested in retired:
        return Route("graph", requested, retired_warning(requested))
    return Route(requested, requested)


def retired_warning(api: str) -> tuple[str, ...]:
    return (f"the {api} API answered as retired; the hunt ran on Microsoft Graph",)


def split_warning(api: str) -> str:
    return (f"the hunt asked for the {api} API with 'split', which needs Graph's timespan for its parts; it ran on "
            "Microsoft Graph")


def is_retired_answer(status: int, body: str) -> bool:
    """A legacy API's answer that says it is retired: 410, 404 on the hunting path, or an error whose code or
    message says retired or deprecated."""
    if status in (410, 404):
        return True
    if status < 400:
        return False
    code, message = envelope_error(body)
    text = f"{code or ''} {message or ''}".lower()
    return any(word in text for word in _RETIRED_WORDS)
