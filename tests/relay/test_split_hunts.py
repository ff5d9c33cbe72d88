"""Split hunts over the local stack: more rows than the service returns for one query, delivered complete as one
result, every row exactly once, boundaries included; refused aggregations; a 429 between parts; a worker SIGKILLed
between parts.

The 250,000-row test runs the service's real caps (100,000 rows, 50 MB) on a sandbox of its own. The others lower
the cap on both sides (the sandbox's `row_cap` knob and HUNT_ROW_CAP) so that the session's 20,000-row sandbox
splits too, in a fraction of the time.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.azurite import Azurite
from shared.adapters.split_parts import PARTS_PREFIX
from shared.core.splitting import TICKS_PER_SECOND, Span, format_ticks, parse_instant
from tests.relay.conftest import RelayStack, drain
from tests.relay.worker_fleet import WorkerFleet, wait_until

QUERY = "DeviceProcessEvents | project Timestamp, ReportId, DeviceName"
SMALL_CAP = 3_000


def enqueue(relay: Any, **body: Any) -> str:
    body.setdefault("id", "split-" + uuid.uuid4().hex[:12])
    relay.hunt_queue.send_message(json.dumps(body))
    return str(body["id"])


def truth(sandbox: Any, timespan: str, query: str = QUERY) -> list[dict[str, Any]]:
    """Every row the sandbox holds for the query over the range: its own answer, without the caps."""
    return [json.loads(row) for row in sandbox.engine.run(query, "graph", timespan=timespan, row_cap=10**9).rows]


def timestamps(sandbox: Any) -> list[int]:
    rows = sandbox.engine.run("DeviceProcessEvents | project Timestamp", "graph", row_cap=10**9).rows
    return sorted(parse_instant(json.loads(row)["Timestamp"]) for row in rows)


def result(stack: RelayStack, job: str) -> dict[str, Any]:
    return stack.read_json(stack.results_container, f"{job}.json")


def part_blobs(stack: RelayStack) -> list[str]:
    container = stack.blob_service().get_container_client(stack.results_container)
    return [blob.name for blob in container.list_blobs(name_starts_with=PARTS_PREFIX)]


def assert_complete(document: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    """Every expected row once, nothing else, and the rows in the time order of their parts."""
    delivered = Counter(row["ReportId"] for row in document["results"])
    assert [key for key, n in delivered.items() if n > 1] == [], "rows delivered twice"
    assert set(delivered) == {row["ReportId"] for row in expected}
    assert document["row_count"] == len(expected) == sum(part["row_count"] for part in document["parts"])
    spans = [Span(*(parse_instant(end) for end in part["timespan"].split("/"))) for part in document["parts"]]
    assert all(left.end + 1 == right.start for left, right in itertools.pairwise(spans)), \
        "the parts leave a gap or overlap"
    index = 0
    for row in document["results"]:
        moment = parse_instant(row["Timestamp"])
        while not spans[index].start <= moment <= spans[index].end:
            index += 1   # a row of a later part: never one of an earlier part again
            assert index < len(spans), f"a row at {row['Timestamp']} outside its place in the parts' order"


# --- 250,000 rows, the service's real caps -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def split_sandbox() -> Iterator[Any]:
    from sandbox.server import Sandbox

    server = Sandbox(rows=250_000).start()
    try:
        yield server
    finally:
        server.stop()
        server.engine.close()


@pytest.fixture
def split_stack(azurite: Azurite, split_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> RelayStack:
    split_sandbox.reset()
    split_sandbox.knobs.quota.calls_per_window = 1000
    return RelayStack(azurite, split_sandbox, monkeypatch)


@pytest.mark.slow
def test_250000_rows_arrive_complete_every_row_once_with_rows_on_the_boundaries(split_stack):
    """The range is placed so that the first two boundaries fall exactly on rows' Timestamps: the middle of the
    range (the right half starts there) and the middle of its left half."""
    moments = timestamps(split_stack.sandbox)
    on_middle = moments[len(moments) // 2]
    on_quarter = next(m for m in moments if m >= on_middle - 7 * 86_400 * TICKS_PER_SECOND)
    quarter = on_middle - on_quarter
    start = on_quarter - quarter
    end = start + 4 * quarter - 1     # the root's middle: start + (4q) // 2 = on_middle; the left half's: on_quarter
    timespan = f"{format_ticks(start)}/{format_ticks(end)}"
    expected = truth(split_stack.sandbox, timespan)
    assert len(expected) > 200_000   # both halves exceed the cap: the tree grows two levels
    relay = split_stack.make(HUNT_API="graph")
    job = enqueue(relay, query=QUERY, api="graph", timespan=timespan, split=True)

    outcomes = drain(relay).outcomes

    assert [(o.status, o.rows) for o in outcomes] == [("delivered", len(expected))]
    document = result(split_stack, job)
    assert (document["status"], document["truncated"]) == ("succeeded", False)
    assert_complete(document, expected)
    assert [part["truncated"] for part in document["parts"]] == [False] * 4
    assert [part["timespan"].split("/")[0] for part in document["parts"][1:]] == [
        format_ticks(on_quarter), format_ticks(on_middle), format_ticks(on_middle + quarter)]
    on_boundaries = [row for row in document["results"] if parse_instant(row["Timestamp"]) in (on_middle, on_quarter)]
    assert len(on_boundaries) == len([m for m in moments if m in (on_middle, on_quarter)]) >= 2
    # 7 calls: the root and both halves reached the cap, 4 parts fit; no call asked twice
    assert split_stack.sandbox.counters.calls_to("graph", 200) == 7
    assert part_blobs(split_stack) == []


# --- the session's sandbox with a lower cap ----------------------------------------------------------------------

@pytest.fixture
def capped_stack(relay_stack: RelayStack) -> RelayStack:
    relay_stack.sandbox.knobs.row_cap = SMALL_CAP
    return relay_stack


def capped_relay(stack: RelayStack, **extra: str) -> Any:
    return stack.make(**{"HUNT_API": "graph", "HUNT_ROW_CAP": str(SMALL_CAP), **extra})


def graph_timespans(stack: RelayStack) -> list[str | None]:
    return [json.loads(body).get("Timespan") for body in stack.sandbox.counters.bodies_for("graph")]


def test_the_default_range_is_the_30_days_before_the_first_attempt_and_holds_every_row(capped_stack):
    relay = capped_relay(capped_stack)
    job = enqueue(relay, query=QUERY, split=True)   # HUNT_API=graph: the default API

    assert [o.status for o in drain(relay).outcomes] == ["delivered"]

    document = result(capped_stack, job)
    root = Span(parse_instant(document["parts"][0]["timespan"].split("/")[0]),
                parse_instant(document["parts"][-1]["timespan"].split("/")[1]))
    assert root.width - 1 == 30 * 86_400 * TICKS_PER_SECOND
    assert_complete(document, truth(capped_stack.sandbox, f"{format_ticks(root.start)}/{format_ticks(root.end)}"))
    assert document["row_count"] == 20_000 and not document["truncated"]
    assert graph_timespans(capped_stack)[0] == f"{format_ticks(root.start)}/{format_ticks(root.end)}"


def test_a_query_that_aggregates_is_refused_with_the_operator_named_and_no_call(capped_stack):
    relay = capped_relay(capped_stack)
    job = enqueue(relay, query="DeviceProcessEvents | summarize Runs = count() by DeviceName", split=True)

    assert [(o.status, o.error_code) for o in drain(relay).outcomes] == [("failed", "SplitRefused")]

    failed = capped_stack.read_json(capped_stack.results_container, f"{job}.failed.json")
    assert "'summarize'" in failed["error"]["message"] and "README" in failed["error"]["hint"]
    assert capped_stack.sandbox.counters.calls_to("graph") == 0
    assert [record["reason"] for record in capped_stack.dead_letters()] == ["SplitRefused"]


def test_an_operator_inside_a_string_literal_does_not_refuse_the_split(capped_stack):
    relay = capped_relay(capped_stack)
    query = 'DeviceProcessEvents | where ProcessCommandLine !has "| summarize" | project Timestamp, ReportId'
    job = enqueue(relay, query=query, split=True, timespan="P30D")

    assert [o.status for o in drain(relay).outcomes] == ["delivered"]
    assert result(capped_stack, job)["row_count"] == 20_000


def test_a_legacy_hunt_with_split_runs_on_graph_and_says_so(capped_stack):
    relay = capped_relay(capped_stack, HUNT_LEGACY_APIS="auto")
    job = enqueue(relay, query=QUERY, api="mde", split=True)

    assert [(o.status, o.api) for o in drain(relay).outcomes] == [("delivered", "graph")]

    document = result(capped_stack, job)
    assert (document["api"], document["requested_api"]) == ("graph", "mde")
    assert any("split" in warning for warning in document["warnings"])
    assert document["row_count"] == 20_000
    assert capped_stack.sandbox.counters.calls_to("mde") == 0


def test_under_legacy_mode_a_legacy_hunt_with_split_is_refused(capped_stack):
    relay = capped_relay(capped_stack, HUNT_LEGACY_APIS="legacy")
    enqueue(relay, query=QUERY, api="mde", split=True)

    assert [(o.status, o.error_code) for o in drain(relay).outcomes] == [("failed", "SplitNeedsGraph")]
    assert capped_stack.sandbox.counters.calls_to("mde") + capped_stack.sandbox.counters.calls_to("graph") == 0


def test_a_part_refused_as_too_large_is_split_like_a_capped_one(capped_stack):
    capped_stack.sandbox.knobs.max_result_mb = 0.5   # about 5,000 rows of these columns
    relay = capped_relay(capped_stack, HUNT_ROW_CAP="100000")
    capped_stack.sandbox.knobs.row_cap = 100_000
    job = enqueue(relay, query=QUERY, split=True, timespan="P30D")

    assert [o.status for o in drain(relay).outcomes] == ["delivered"]

    document = result(capped_stack, job)
    assert document["row_count"] == 20_000 and not document["truncated"]
    assert capped_stack.sandbox.counters.calls_to("graph", 400) >= 3   # the root and its halves, at least


def test_a_part_still_capped_at_the_floor_is_delivered_as_it_came_and_flagged(capped_stack):
    relay = capped_relay(capped_stack, HUNT_SPLIT_MIN="8d")   # 30 days: one split, halves of 15 days
    job = enqueue(relay, query=QUERY, split=True, timespan="P30D")

    assert [o.status for o in drain(relay).outcomes] == ["delivered"]

    document = result(capped_stack, job)
    assert document["truncated"] is True and "HUNT_SPLIT_MIN" in document["truncated_hint"]
    assert [(p["row_count"], p["truncated"]) for p in document["parts"]] == [(SMALL_CAP, True), (SMALL_CAP, True)]
    assert document["row_count"] == 2 * SMALL_CAP


def test_a_429_between_parts_requeues_the_rest_and_runs_no_finished_part_again(capped_stack):
    """The sandbox allows 4 calls per 3 s: the fifth is a 429 with a reset time; the copy goes on from there."""
    capped_stack.sandbox.knobs.quota.calls_per_window = 4
    capped_stack.sandbox.knobs.quota.window_seconds = 3.0
    relay = capped_relay(capped_stack)
    job = enqueue(relay, query=QUERY, split=True, timespan="P30D")

    outcomes = drain(relay).outcomes

    assert [o.status for o in outcomes][-1] == "delivered" and "throttled" in [o.cause for o in outcomes]
    document = result(capped_stack, job)
    assert_complete(document, truth(capped_stack.sandbox, graph_timespans(capped_stack)[0] or "P30D"))
    asked = Counter(graph_timespans(capped_stack))
    answered = capped_stack.sandbox.counters.calls_to("graph", 200)
    assert capped_stack.sandbox.counters.throttled >= 1
    # every answered call was a distinct part or split point; only the throttled ones were asked again
    assert answered == len(document["parts"]) + (len(document["parts"]) - 1)
    assert sum(n - 1 for n in asked.values()) == capped_stack.sandbox.counters.throttled
    assert part_blobs(capped_stack) == []


@pytest.mark.slow
def test_a_worker_killed_between_parts_loses_no_part_and_runs_none_again(capped_stack, tmp_path):
    capped_stack.sandbox.knobs.faults.latency_seconds = 0.3   # widen the time between parts
    relay = capped_relay(capped_stack)
    job = enqueue(relay, query=QUERY, split=True, timespan="P30D")
    env = capped_stack.env(HUNT_API="graph", HUNT_ROW_CAP=str(SMALL_CAP))
    with WorkerFleet(env, tmp_path / "workers", concurrency=1, lease_seconds=3) as fleet:
        [worker] = fleet.start(1)
        assert wait_until(lambda: worker.output().count("of the split hunt done") >= 3, timeout=60), fleet.logs()
        fleet.kill(worker)
        done_before_kill = worker.output().count("of the split hunt done")
        time.sleep(0.5)
        assert fleet.drain() == 0, fleet.logs()

    document = result(capped_stack, job)
    assert_complete(document, truth(capped_stack.sandbox, graph_timespans(capped_stack)[0] or "P30D"))
    asked = Counter(graph_timespans(capped_stack))
    repeated = {span: n for span, n in asked.items() if n > 1}
    # at most the one call in flight when the worker died is asked again; never a part it had finished
    assert len(repeated) <= 1 and all(n == 2 for n in repeated.values()), repeated
    assert done_before_kill >= 3
    assert part_blobs(capped_stack) == []


def test_a_split_hunt_that_uses_its_invocation_s_time_goes_on_from_a_copy_without_spending_attempts(
        capped_stack, monkeypatch):
    monkeypatch.setattr("shared.app.split_hunts.INVOCATION_BUDGET_SECONDS", 0.0)   # one part per invocation
    relay = capped_relay(capped_stack)
    job = enqueue(relay, query=QUERY, split=True, timespan="P30D")

    outcomes = drain(relay).outcomes

    calls = capped_stack.sandbox.counters.calls_to("graph", 200)
    # every invocation that called the API hands on, the last one before assembling; the next assembles
    assert [o.cause for o in outcomes] == ["split_continues"] * calls + ["delivered"]
    document = result(capped_stack, job)
    assert document["attempts"] == 1
    assert_complete(document, truth(capped_stack.sandbox, graph_timespans(capped_stack)[0] or "P30D"))


def test_a_query_whose_rows_are_not_what_the_timespan_filters_is_refused_when_they_come_back(capped_stack):
    relay = capped_relay(capped_stack)
    query = "DeviceProcessEvents | extend Timestamp = datetime(2020-01-01) | project Timestamp, ReportId"
    job = enqueue(relay, query=query, split=True, timespan="P30D")

    assert [(o.status, o.error_code) for o in drain(relay).outcomes] == [("failed", "SplitRefused")]

    failed = capped_stack.read_json(capped_stack.results_container, f"{job}.failed.json")
    assert "2020-01-01" in failed["error"]["message"] and "timespan" in failed["error"]["message"]
    assert capped_stack.sandbox.counters.calls_to("graph") == 1
    assert part_blobs(capped_stack) == []


def test_a_split_hunt_that_gives_up_leaves_no_parts_and_a_resend_cuts_its_own_range(capped_stack, monkeypatch):
    monkeypatch.setattr("shared.app.split_hunts.INVOCATION_BUDGET_SECONDS", 0.0)
    relay = capped_relay(capped_stack, HUNT_MAX_AGE="1")   # gives up at its first copy
    enqueue(relay, id="gives-up", query=QUERY, split=True)

    outcomes = drain(relay).outcomes

    assert [(o.status, o.error_code) for o in outcomes][-1] == ("failed", "GaveUp")
    assert part_blobs(capped_stack) == []


def test_a_second_copy_of_a_split_hunt_runs_no_part_the_first_finished(capped_stack):
    """Two copies of one message (a producer that sent it twice): the parts are shared, each is asked once."""
    relay = capped_relay(capped_stack)
    body = {"id": "twice", "query": QUERY, "split": True, "timespan": "P30D", "destination": "default"}
    relay.hunt_queue.send_message(json.dumps(body))
    relay.hunt_queue.send_message(json.dumps(body))

    outcomes = drain(relay, concurrency=1).outcomes

    assert sorted(o.status for o in outcomes) == ["delivered", "duplicate"]
    asked = Counter(graph_timespans(capped_stack))
    assert max(asked.values()) == 1
