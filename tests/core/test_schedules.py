"""shared.core.schedules: schedule files and their slots, with an injected clock."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from shared.core.schedules import ScheduleError, Slot, due_ends, job_id, parse_cron, parse_schedule

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "schedule.v1.schema.json").read_text())


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def schedule(**fields):
    return parse_schedule("s.json", {"query": "DeviceInfo | take 1", **fields}, stem="s")


@pytest.mark.parametrize(("fields", "now", "expected"), [
    # epoch-aligned hourly: only the latest slot that has ended, for a new schedule
    ({"every": "PT1H"}, "2026-12-01T03:30:00Z", ["2026-12-01T03:00:00Z"]),
    ({"every": "PT1H"}, "2026-12-01T03:00:00Z", ["2026-12-01T03:00:00Z"]),   # a boundary: that slot has ended
    ({"every": "PT15M", "start": "2026-12-01T00:10:00Z"}, "2026-12-01T00:56:00Z",
     ["2026-12-01T00:25:00Z", "2026-12-01T00:40:00Z", "2026-12-01T00:55:00Z"]),
    ({"every": "PT1H", "start": "2030-01-01T00:00:00Z"}, "2026-12-01T00:00:00Z", []),   # a far-future start
    ({"every": "P1D", "start": "2028-02-28T00:00:00Z"}, "2028-03-01T12:00:00Z",   # a leap day
     ["2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"]),
    ({"cron": "30 2 * * *"}, "2026-12-01T02:29:00Z", ["2026-11-30T02:30:00Z"]),
    ({"cron": "0 */6 * * 1-5"}, "2026-12-06T12:00:00Z", ["2026-12-04T18:00:00Z"]),   # Sunday: Friday's last
])
def test_the_slots_due_for_a_new_schedule(fields, now, expected):
    assert due_ends(schedule(**fields), watermark=None, now=at(now)) == [at(e) for e in expected]


def test_after_a_watermark_every_slot_since_is_due_oldest_first():
    hourly = schedule(every="PT1H")
    ends = due_ends(hourly, watermark=at("2026-12-01T00:00:00Z"), now=at("2026-12-01T03:10:00Z"))
    assert ends == [at("2026-12-01T01:00:00Z"), at("2026-12-01T02:00:00Z"), at("2026-12-01T03:00:00Z")]


def test_consecutive_slots_are_contiguous_and_overlap_only_by_overlap():
    hourly = schedule(every="PT1H", overlap="PT5M")
    first, second = hourly.slot(at("2026-12-01T01:00:00Z")), hourly.slot(at("2026-12-01T02:00:00Z"))
    assert (first.start, first.end) == (at("2026-11-30T23:55:00Z"), at("2026-12-01T01:00:00Z"))
    assert second.start == first.end - timedelta(minutes=5)
    assert first.timespan == "2026-11-30T23:55:00.0000000Z/2026-12-01T00:59:59.9999999Z"
    plain = schedule(every="PT1H")
    assert plain.slot(at("2026-12-01T02:00:00Z")).start == plain.slot(at("2026-12-01T01:00:00Z")).end


def test_a_cron_slot_runs_from_the_previous_run_time():
    daily = schedule(cron="30 2 * * *", overlap="PT10M")
    slot = daily.slot(at("2026-12-01T02:30:00Z"))
    assert (slot.start, slot.end) == (at("2026-11-30T02:20:00Z"), at("2026-12-01T02:30:00Z"))
    leap = parse_cron("0 12 29 2 *")
    assert leap.next_after(at("2026-03-01T00:00:00Z")) == at("2028-02-29T12:00:00Z")
    assert parse_cron("0 0 * * 7").next_after(at("2026-12-01T00:00:00Z")) == at("2026-12-06T00:00:00Z")   # Sunday


def test_the_job_id_names_schedule_tenant_and_slot_within_the_id_rules():
    slot = Slot(at("2026-12-01T00:00:00Z"), at("2026-12-01T01:00:00Z"))
    assert job_id("hourly", None, slot) == "hourly-home-20261201T0100Z"
    assert job_id("h" * 48, "t" * 32, slot) and len(job_id("h" * 48, "t" * 32, slot)) <= 128


def test_a_changed_every_cron_or_start_is_another_series():
    assert schedule(every="PT1H").series != schedule(every="PT2H").series
    assert schedule(every="PT1H").series != schedule(every="PT1H", start="2026-01-01T00:00:00Z").series
    assert schedule(every="PT1H").series == schedule(every="PT1H", overlap="PT5M").series


@pytest.mark.parametrize(("fields", "message"), [
    ({"every": "PT4M"}, "every: must be at least PT5M"),
    ({"every": "P1M"}, "every:"),
    ({"every": "PT1H", "cron": "* * * * *"}, "give exactly one of 'every'"),
    ({"cron": "61 * * * *"}, "cron:"),
    ({"cron": "* * *"}, "cron:"),
    ({"cron": "0 0 30 2 *"}, "no run time"),
    ({"every": "PT1H", "overlap": "PT2H"}, "overlap: must be at most"),
    ({"every": "PT1H", "api": "mde"}, "api: a schedule runs on graph"),
    ({"every": "PT1H", "tenants": []}, "tenants:"),
    ({"every": "PT1H", "max_catch_up": -1}, "max_catch_up:"),
    ({"every": "PT1H", "start": "soon"}, "start:"),
    ({"every": "PT1H", "colour": "blue"}, "colour: unknown field"),
    ({"every": "PT1H", "name": "other"}, "name: must equal the file name"),
])
def test_every_error_names_the_file_and_the_field(fields, message):
    with pytest.raises(ScheduleError) as refused:
        schedule(**fields)
    assert str(refused.value).startswith("s.json: ") and message in str(refused.value)


def test_the_shipped_example_and_the_schema_agree_with_the_parser():
    for path in sorted((ROOT / "schedules").glob("*.json")):
        document = json.loads(path.read_text())
        jsonschema.validate(document, SCHEMA)
        assert parse_schedule(path.name, document, stem=path.stem).enabled is False   # shipped disabled
    jsonschema.validate({"cron": "0 * * * *", "template": "user-logons", "parameters": {}}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"every": "PT1H", "cron": "0 * * * *", "query": "x"}, SCHEMA)


def test_cron_steps_and_day_fields_read_as_vixie_cron_reads_them():
    assert sorted(parse_cron("5/15 * * * *").minutes) == [5, 20, 35, 50]
    every_other_day_on_mondays = parse_cron("0 0 */2 * 1")   # a '*'-field is unrestricted: both must match
    assert every_other_day_on_mondays.next_after(at("2027-01-01T00:00:00Z")).isoweekday() == 1
    with pytest.raises(ScheduleError, match="more often than every 5 minutes"):
        schedule(cron="*/2 * * * *")
    with pytest.raises(ScheduleError, match="max_catch_up"):
        schedule(every="PT1H", max_catch_up=0)


def test_a_start_years_back_counts_its_skipped_slots_without_listing_them():
    from shared.core.schedules import due

    old = schedule(every="PT5M", start="2020-01-01T00:00:00Z")
    found = due(old, watermark=None, now=at("2026-12-01T00:02:00Z"), keep=24)
    assert len(found.ends) == 24 and found.ends[-1] == at("2026-12-01T00:00:00Z")
    assert found.skipped_first == at("2020-01-01T00:05:00Z")
    assert found.skipped_last == found.ends[0] - timedelta(minutes=5)
    assert found.skipped_count + 24 == (at("2026-12-01T00:00:00Z") - at("2020-01-01T00:00:00Z")) // timedelta(
        minutes=5)
