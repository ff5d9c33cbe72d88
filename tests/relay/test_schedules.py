"""Scheduled hunts over Azurite and the sandbox: one run per slot across schedulers, catch-up after an outage with
the skipped record, and contiguous slots whose rows are the rows of one hunt over their union."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.core.schedules import Slot
from shared.core.splitting import format_ticks, ticks_of
from tests.relay.conftest import RelayStack, drain

QUERY = "DeviceProcessEvents | project ReportId, Timestamp, DeviceName"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def write(folder: Path, name: str, **fields: Any) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"query": QUERY, **fields}))


def relay_for(stack: RelayStack, folder: Path, clock: Clock | None = None) -> Any:
    from shared.app.config import load_settings
    from shared.app.relay import Relay

    settings = load_settings(stack.env(HUNT_SCHEDULES_DIR=str(folder), HUNT_API="graph"))
    relay = Relay(settings, clock=clock) if clock else Relay(settings)
    relay.ensure_resources()
    return relay


def queued_ids(relay: Any) -> list[str]:
    ids = []
    while batch := list(relay.hunt_queue.receive_messages(messages_per_page=32, visibility_timeout=300,
                                                          max_messages=32)):
        ids += [json.loads(m.content)["id"] for m in batch]
    return ids


def hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def test_two_schedulers_at_once_enqueue_each_slot_exactly_once(relay_stack: RelayStack, tmp_path: Path):
    start = hour(datetime.now(UTC)) - timedelta(hours=2)
    write(tmp_path, "every-five", every="PT5M", start=start.isoformat(), max_catch_up=100)
    first, second = relay_for(relay_stack, tmp_path), relay_for(relay_stack, tmp_path)
    barrier = threading.Barrier(2)

    def run(relay: Any) -> None:
        barrier.wait()
        relay.scheduler.run_once()
        relay.scheduler.run_once()   # and again: nothing more

    threads = [threading.Thread(target=run, args=(r,)) for r in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    ids = queued_ids(first)
    expected = (datetime.now(UTC) - start) // timedelta(minutes=5)
    assert len(ids) == len(set(ids)) == expected >= 24
    assert [n for n in Counter(ids).values() if n > 1] == []


def test_after_a_three_hour_outage_slots_catch_up_in_order_and_the_rest_are_recorded_as_skipped(
        relay_stack: RelayStack, tmp_path: Path):
    clock = Clock(datetime(2026, 11, 30, 9, 7, tzinfo=UTC))
    write(tmp_path, "quarterly", every="PT15M", max_catch_up=4)
    relay = relay_for(relay_stack, tmp_path, clock)
    assert [r.enqueued for r in relay.scheduler.run_once()] == [["20261130T0900Z"]]

    clock.now += timedelta(hours=3)   # the outage: 09:07 -> 12:07, twelve slots ended meanwhile
    [ran] = relay.scheduler.run_once()

    assert ran.enqueued == ["20261130T1115Z", "20261130T1130Z", "20261130T1145Z", "20261130T1200Z"]
    assert ran.skipped == [f"20261130T{h:02d}{m:02d}Z" for h, m in
                           ((9, 15), (9, 30), (9, 45), (10, 0), (10, 15), (10, 30), (10, 45), (11, 0))]
    [record] = relay_stack.dead_letters()
    assert (record["schedule"], record["tenant"], record["count"]) == ("quarterly", None, 8)
    assert record["slots"] == ran.skipped and "max_catch_up" in record["reason"]
    assert queued_ids(relay) == [f"quarterly-home-{label}" for label in ["20261130T0900Z", *ran.enqueued]]
    assert relay.scheduler.run_once()[0].enqueued == []   # nothing twice


def test_the_rows_of_six_consecutive_slots_are_the_rows_of_one_hunt_over_their_union(relay_stack: RelayStack,
                                                                                    tmp_path: Path):
    start = hour(datetime.now(UTC)) - timedelta(hours=6)
    write(tmp_path, "hourly", every="PT1H", start=start.isoformat())
    relay = relay_for(relay_stack, tmp_path)
    [ran] = relay.scheduler.run_once()
    assert len(ran.enqueued) == 6

    outcomes = drain(relay).outcomes

    assert [o.status for o in outcomes] == ["delivered"] * 6
    documents = [relay_stack.read_json(relay_stack.results_container, f"hourly-home-{label}.json")
                 for label in ran.enqueued]
    delivered = Counter(row["ReportId"] for document in documents for row in document["results"])
    union = Slot(start, start + timedelta(hours=6)).timespan
    expected = [json.loads(r)["ReportId"] for r in relay_stack.sandbox.engine.run(QUERY, "graph", timespan=union,
                                                                                 row_cap=10**9).rows]
    assert sorted(delivered) == sorted(expected) and len(expected) > 20
    assert max(delivered.values()) == 1   # contiguous, no overlap: each row in one slot
    assert next(d["slot"] for d in documents) == f"{start.isoformat()}/{(start + timedelta(hours=1)).isoformat()}" \
        .replace("+00:00", "Z")
    assert {d["schedule"] for d in documents} == {"hourly"}
    assert documents[0]["timespan"] == f"{format_ticks(ticks_of(start))}/" \
                                       f"{format_ticks(ticks_of(start + timedelta(hours=1)) - 1)}"


def test_a_changed_period_starts_a_new_series_at_the_next_boundary_and_a_disabled_one_runs_nothing(
        relay_stack: RelayStack, tmp_path: Path):
    clock = Clock(datetime(2026, 11, 30, 9, 7, tzinfo=UTC))
    write(tmp_path, "changing", every="PT15M")
    write(tmp_path, "off", every="PT15M", enabled=False)
    assert [r.enqueued for r in relay_for(relay_stack, tmp_path, clock).scheduler.run_once()] == [["20261130T0900Z"]]

    write(tmp_path, "changing", every="PT30M")
    clock.now = datetime(2026, 11, 30, 9, 50, tzinfo=UTC)
    changed = relay_for(relay_stack, tmp_path, clock)
    assert changed.scheduler.run_once()[0].enqueued == []   # 09:30 began before the change: not run
    clock.now = datetime(2026, 11, 30, 10, 1, tzinfo=UTC)
    assert changed.scheduler.run_once()[0].enqueued == ["20261130T1000Z"]
    assert queued_ids(changed) == ["changing-home-20261130T0900Z", "changing-home-20261130T1000Z"]


def test_run_now_enqueues_the_latest_slot_once_alongside_the_timer(relay_stack: RelayStack, tmp_path: Path):
    write(tmp_path, "manual", every="PT1H")
    relay = relay_for(relay_stack, tmp_path)
    [job] = relay.scheduler.run_now("manual")
    assert relay.scheduler.run_now("manual") == [job]     # idempotent: the slot is already enqueued
    assert relay.scheduler.run_once()[0].enqueued == []   # the timer finds it done
    assert queued_ids(relay) == [job]
    rows = relay.scheduler.describe()
    assert rows[0]["last_slot"] == job.rsplit("-", 1)[1]


def test_a_broken_schedule_file_stops_the_scheduler_naming_the_file_and_field(relay_stack: RelayStack, tmp_path):
    from shared.core.schedules import ScheduleError

    write(tmp_path, "broken", every="PT1M")
    with pytest.raises(ScheduleError) as refused:
        relay_for(relay_stack, tmp_path).scheduler.run_once()
    assert "broken.json: every" in str(refused.value)


def test_a_schedule_for_every_tenant_enqueues_one_hunt_per_tenant_under_its_own_id(relay_stack: RelayStack,
                                                                                  tmp_path: Path):
    from shared.app.config import load_settings
    from shared.app.relay import Relay

    (tmp_path / "fan-out.json").write_text(json.dumps({"every": "PT1H", "tenants": "*", "query": QUERY}))
    tenants = {name: {"tenant_id": f"3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c70{n:02d}", "auth": "federated",
                      "client_id": "app", "destinations": [f"{name}-results"]}
               for n, name in enumerate(("contoso", "fabrikam"))}
    destinations = {f"{name}-results": {"type": "blob", "container": f"{name}-results-x"} for name in tenants}
    relay = Relay(load_settings(relay_stack.env(HUNT_SCHEDULES_DIR=str(tmp_path), HUNT_API="graph",
                                                HUNT_TENANTS=json.dumps(tenants),
                                                HUNT_DESTINATIONS=json.dumps(destinations))))
    relay.ensure_resources()

    [contoso, fabrikam] = relay.scheduler.run_once()

    assert (contoso.tenant, fabrikam.tenant) == ("contoso", "fabrikam")
    messages = [json.loads(m.content) for m in relay.hunt_queue.receive_messages(max_messages=10)]
    assert sorted((m["tenant"], m["id"].rsplit("-", 1)[0]) for m in messages) == [
        ("contoso", "fan-out-contoso"), ("fabrikam", "fan-out-fabrikam")]


def test_run_now_leaves_the_slots_before_it_due_for_the_timer(relay_stack: RelayStack, tmp_path: Path):
    clock = Clock(datetime(2026, 11, 30, 9, 7, tzinfo=UTC))
    write(tmp_path, "quarterly", every="PT15M")
    relay = relay_for(relay_stack, tmp_path, clock)
    relay.scheduler.run_once()                    # 09:00
    clock.now = datetime(2026, 11, 30, 10, 7, tzinfo=UTC)
    relay.scheduler.run_now("quarterly")          # 10:00, out of turn
    [ran] = relay.scheduler.run_once()

    assert ran.enqueued == ["20261130T0915Z", "20261130T0930Z", "20261130T0945Z"]
    assert sorted(queued_ids(relay)) == sorted(f"quarterly-home-20261130T{t}Z"
                                              for t in ("0900", "0915", "0930", "0945", "1000"))


def test_a_schedule_changed_and_changed_back_never_runs_a_slot_twice_and_records_the_gap(relay_stack: RelayStack,
                                                                                       tmp_path: Path):
    clock = Clock(datetime(2026, 11, 30, 9, 7, tzinfo=UTC))
    write(tmp_path, "c", every="PT1H")
    relay_for(relay_stack, tmp_path, clock).scheduler.run_once()            # 09:00 (PT1H)
    write(tmp_path, "c", every="PT15M")
    clock.now = datetime(2026, 11, 30, 9, 50, tzinfo=UTC)
    quarter = relay_for(relay_stack, tmp_path, clock)
    quarter.scheduler.run_once()                                            # a new series after 09:45
    clock.now = datetime(2026, 11, 30, 10, 1, tzinfo=UTC)
    quarter.scheduler.run_once()                                            # 10:00 (PT15M)
    write(tmp_path, "c", every="PT1H")
    clock.now = datetime(2026, 11, 30, 11, 1, tzinfo=UTC)
    hourly = relay_for(relay_stack, tmp_path, clock)
    hourly.scheduler.run_once()                                             # back to PT1H: a new start
    clock.now = datetime(2026, 11, 30, 12, 1, tzinfo=UTC)
    hourly.scheduler.run_once()

    ids = queued_ids(hourly)
    assert len(ids) == len(set(ids))
    assert ids == ["c-home-20261130T0900Z", "c-home-20261130T1000Z", "c-home-20261130T1200Z"]
    gaps = sorted(r["reason"] for r in relay_stack.dead_letters())
    assert len(gaps) == 2 and all("changed" in reason for reason in gaps)


def test_the_shipped_disabled_example_loads_in_a_relay_with_tenants_and_no_default(relay_stack: RelayStack):
    from shared.app.config import load_settings
    from shared.app.relay import Relay

    tenants = {"contoso": {"tenant_id": "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", "auth": "federated",
                           "client_id": "app", "destinations": ["default"]}}
    relay = Relay(load_settings(relay_stack.env(HUNT_API="graph", HUNT_TENANTS=json.dumps(tenants))))
    relay.ensure_resources()
    assert relay.scheduler.run_once() == []   # the example is disabled: nothing runs, nothing fails
