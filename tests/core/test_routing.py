"""Which API runs a hunt (shared.core.routing): each mode x requested API x before/after the retirement date x
a retirement already seen; and the answers that mean "retired"."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from shared.core.routing import RETIREMENT, Route, is_retired_answer, route

BEFORE, AFTER = RETIREMENT - timedelta(seconds=1), RETIREMENT


@pytest.mark.parametrize(("mode", "requested", "now", "retired", "runs_on"), [
    ("auto", "graph", BEFORE, set(), "graph"),
    ("auto", "graph", AFTER, {"mde"}, "graph"),
    ("auto", "mde", BEFORE, set(), "mde"),
    ("auto", "m365d", BEFORE, set(), "m365d"),
    ("auto", "mde", BEFORE, {"mde"}, "graph"),         # one instance saw it retired: the fleet knows
    ("auto", "m365d", BEFORE, {"mde"}, "m365d"),       # only the API that answered so
    ("auto", "mde", AFTER, set(), "graph"),            # the date has come
    ("auto", "m365d", AFTER, set(), "graph"),
    ("graph", "mde", BEFORE, set(), "graph"),
    ("graph", "m365d", AFTER, set(), "graph"),
    ("graph", "graph", BEFORE, set(), "graph"),
    ("legacy", "mde", AFTER, {"mde"}, "mde"),          # whatever happens
    ("legacy", "m365d", AFTER, set(), "m365d"),
    ("legacy", "graph", AFTER, set(), "graph"),
])
def test_each_mode_routes_each_api_before_and_after_the_date(mode, requested, now, retired, runs_on):
    chosen = route(requested, mode, now=now, retired=retired)
    assert (chosen.api, chosen.requested_api) == (runs_on, requested)
    assert bool(chosen.warnings) == chosen.routed == (runs_on != requested)


def test_a_routed_hunt_says_why():
    assert route("mde", "auto", now=AFTER, retired=set()) == Route(
        "graph", "mde", ("the mde API was retired on 2027-02-01; the hunt ran on Microsoft Graph",))
    assert "answered as retired" in route("m365d", "auto", now=BEFORE, retired={"m365d"}).warnings[0]


def envelope(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


@pytest.mark.parametrize(("status", "body", "retired"), [
    (410, envelope("Gone", "gone"), True),
    (404, "", True),                                                        # a 404 on the hunting path
    (400, envelope("ApiRetired", "The request cannot be served."), True),    # the code says so
    (403, envelope("Forbidden", "The API is deprecated; use Graph."), True),  # the message says so
    (400, envelope("BadRequest", "This API has been RETIRED"), True),
    (400, envelope("BadRequest", "Query could not be parsed"), False),
    (403, envelope("Forbidden", "Missing application roles."), False),
    (429, envelope("TooManyRequests", "again in 5 seconds"), False),
    (500, "retired?", False),                                               # not an envelope: not a statement
    (200, "", False),
])
def test_the_answers_that_mean_retired(status, body, retired):
    assert is_retired_answer(status, body) is retired
