"""Redrive's pure part: which names are records, which records a selection chooses, what each becomes, and the
fresh first attempt it is sent as."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from shared.core.hunt_request import decode_hunt_request, pending_delivery_name
from shared.core.redrive import (
    Facts,
    Redrive,
    Selection,
    Skip,
    decide,
    fresh,
    journal_name,
    parse_record_name,
    parse_when,
)

AT = datetime(2026, 12, 1, 10, 15, 2, tzinfo=UTC)
REQUEST = decode_hunt_request('{"id": "job-1", "query": "DeviceInfo | take 1", "tenant": "contoso"}',
                              message_id="m", default_api="graph", now=AT)


def record(**fields):
    return {"key": "job-1", "tenant": "contoso", "reason": "GaveUp", "dead_lettered_at": "2026-12-01T10:15:02Z",
            **fields}


@pytest.mark.parametrize(("name", "tenant", "day", "file", "journal"), [
    ("2026/12/01/job-1.json", None, date(2026, 12, 1), "job-1", False),
    ("tenants/contoso/2026/12/01/job-1.conflict.ab12.json", "contoso", date(2026, 12, 1), "job-1.conflict.ab12",
     False),
    ("redriven/2026/12/01/job-1.20261201T101502Z.json", None, date(2026, 12, 1), "job-1.20261201T101502Z", True),
])
def test_record_names_are_read_with_their_tenant_day_and_journal(name, tenant, day, file, journal):
    parsed = parse_record_name(name)
    assert parsed is not None and (parsed.tenant, parsed.day, parsed.file, parsed.journal) == (tenant, day, file,
                                                                                                journal)


@pytest.mark.parametrize("name", ["schedules-skipped/hourly/a--b.json", "redriven/2026/12/01/job-1.x.failed.json",
                                  "2026/13/40/job-1.json", "2026/12/01/job-1.txt"])
def test_other_blobs_in_the_container_are_not_records(name):
    assert parse_record_name(name) is None


def test_a_redriven_record_has_one_journal_name_of_its_own_time():
    name = parse_record_name("tenants/contoso/2026/12/01/job-1.json")
    assert name is not None
    assert journal_name(name, "2026-12-01T10:15:02.123456Z") == \
        "tenants/contoso/redriven/2026/12/01/job-1.20261201T101502123456Z.json"


@pytest.mark.parametrize(("text", "end", "expected"), [
    ("2026-12-01", False, datetime(2026, 12, 1, tzinfo=UTC)),
    ("2026-12-01", True, datetime(2026, 12, 2, tzinfo=UTC) - timedelta(microseconds=1)),
    ("2026-12-01T10:00:00Z", True, datetime(2026, 12, 1, 10, tzinfo=UTC)),
    ("2026-12-01T11:00:00+01:00", False, datetime(2026, 12, 1, 10, tzinfo=UTC)),
    ("2026-12-01T10:00:00", False, datetime(2026, 12, 1, 10, tzinfo=UTC)),
])
def test_dates_and_times_are_read_in_utc(text, end, expected):
    assert parse_when(text, end_of_day=end) == expected


@pytest.mark.parametrize(("selection", "chosen"), [
    (Selection(codes=frozenset({"GaveUp"})), True),
    (Selection(codes=frozenset({"Poison", "QueryError"})), False),
    (Selection(tenant="contoso"), True),
    (Selection(tenant="fabrikam"), False),
    (Selection(ids=frozenset({"job-1"})), True),
    (Selection(ids=frozenset({"job"})), False),
    (Selection(since=AT), True),
    (Selection(since=AT + timedelta(seconds=1)), False),
    (Selection(until=AT), True),
    (Selection(until=AT - timedelta(seconds=1)), False),
])
def test_a_selection_chooses_records_by_every_filter_given(selection, chosen):
    assert selection.matches(record()) is chosen


def test_no_filter_is_no_choice_unless_everything_is_asked_for():
    assert not Selection().filtered and Selection(everything=True).everything
    assert Selection(since=AT).filtered


def test_a_selection_skips_names_of_other_tenants_days_and_ids_before_reading_them():
    name = parse_record_name("tenants/contoso/2026/12/01/job-1.json")
    assert name is not None
    assert Selection(tenant="contoso", ids=frozenset({"job-1"}), since=AT).may_hold(name)
    assert not Selection(tenant="fabrikam").may_hold(name)
    assert not Selection(since=AT + timedelta(days=1)).may_hold(name)
    assert not Selection(ids=frozenset({"job-10"})).may_hold(name)


@pytest.mark.parametrize(("facts", "kept_only", "expected"), [
    (Facts(record(), REQUEST), False, Redrive("hunt")),
    (Facts(record(), REQUEST), True, None),
    (Facts(record(), REQUEST, kept="waiting"), True, Redrive("kept")),
    (Facts(record(), REQUEST, kept="sent"), True, None),
    (Facts(record(reason="InvalidHuntRequest"), None), True, None),
    (Facts(record(), REQUEST, ledger_status="failed", ledger_updated_at=AT), False, Redrive("hunt")),
    (Facts(record(), REQUEST, ledger_status="queued", interrupted=True, redriven_at=AT), False, Redrive("hunt")),
])
def test_what_a_chosen_record_becomes(facts, kept_only, expected):
    assert decide(facts, kept_only=kept_only) == expected


@pytest.mark.parametrize(("facts", "words", "ran"), [
    (Facts(record(reason="InvalidHuntRequest"), None), "cannot succeed as sent", False),
    (Facts(record(reason="Conflict"), REQUEST), "its own id", False),
    (Facts(record(), None, invalid="field 'tenant'"), "field 'tenant'", False),
    (Facts(record(), REQUEST, kept="waiting"), "redrive --kept", False),
    (Facts(record(), REQUEST, ledger_status="retrying"), "on its way", False),
    (Facts(record(), REQUEST, ledger_status="delivered", ledger_updated_at=AT + timedelta(minutes=1)),
     "delivered after this record", False),
    (Facts(record(), REQUEST, ledger_status="running", ledger_updated_at=AT + timedelta(minutes=2),
           interrupted=True, redriven_at=AT + timedelta(minutes=1)), "has run since", True),
])
def test_a_record_that_is_not_redriven_says_why(facts, words, ran):
    verdict = decide(facts, kept_only=False)
    assert isinstance(verdict, Skip) and words in verdict.reason and verdict.ran is ran


def test_a_redriven_hunt_is_a_fresh_first_attempt_and_a_kept_one_a_delivery_only_copy():
    later = AT + timedelta(days=2)
    tired = REQUEST.next_attempt("HTTP 503").next_attempt("HTTP 503").delivery_only()
    again = fresh(tired, later)
    assert (again.attempt, again.first_enqueued_at, again.last_error, again.pending_delivery) == (1, later, None,
                                                                                                 None)
    assert again.digest() == REQUEST.digest()   # the same request: same id, query, destination, tenant
    kept = fresh(tired, later, delivery_only=True)
    assert (kept.attempt, kept.pending_delivery) == (1, pending_delivery_name("job-1", "contoso"))
