"""The job ledger's `begin` over real table storage (Azurite): how many storage calls each kind of copy costs, and
that a cancel is never overwritten."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from azure.data.tables import TableServiceClient

from shared.adapters.job_ledger import JobLedger
from shared.core.hunt_request import HuntRequest, decode_hunt_request
from shared.core.job_states import Begun


class CountingTable:
    """The real table client, its calls counted by name."""

    def __init__(self, table) -> None:
        self._table, self.calls = table, []

    def __getattr__(self, name):
        attribute = getattr(self._table, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        def counted(*args, **kwargs):
            self.calls.append(name)
            return attribute(*args, **kwargs)
        return counted


def ledger(azurite) -> tuple[JobLedger, CountingTable]:
    table = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(
        "jobs" + uuid.uuid4().hex[:10])
    table.create_table()
    counting = CountingTable(table)
    return JobLedger(counting, clock=lambda: datetime.now(UTC), retention_seconds=3600), counting  # type: ignore


def request(job: str) -> HuntRequest:
    return decode_hunt_request(json.dumps({"id": job, "query": "DeviceInfo | take 1"}), message_id=job,
                               default_api="mde", now=datetime.now(UTC))


def test_a_copy_the_gate_sent_back_merges_its_state_in_one_call(azurite):
    jobs, table = ledger(azurite)
    hunt = request("job-1")
    assert jobs.begin(hunt) is Begun.FIRST_SIGHT and table.calls == ["create_entity"]
    table.calls.clear()
    assert jobs.begin(replace(hunt, gate_waits=1)) is Begun.SEEN
    assert table.calls == ["upsert_entity"]   # no failed create, no read
    record = jobs.get(None, "job-1")
    assert record is not None and record.status == "running"


def test_a_fresh_copy_of_a_cancelled_submission_is_still_stopped(azurite):
    jobs, table = ledger(azurite)
    hunt = request("job-2")
    jobs.submit(hunt, "mde")
    assert jobs.cancel(None, "job-2") is not None
    table.calls.clear()
    assert jobs.begin(hunt) is Begun.CANCELLED   # a first sight reads what is there: the cancel stands
    assert "upsert_entity" not in table.calls and "update_entity" not in table.calls


def test_the_ledger_s_inserts_ask_storage_not_to_send_the_entity_back(azurite):
    """Storage answers an insert with 201 and the entity it stored unless asked not to; the ledger never reads
    that copy, so it asks for none (204), and the entity is stored all the same."""
    from azure.core.pipeline.transport import RequestsTransport

    answers: list[tuple[str, int, int]] = []

    class RecordingTransport(RequestsTransport):
        def send(self, request, **kwargs):  # type: ignore[no-untyped-def, override]
            response = super().send(request, **kwargs)
            answers.append((request.method, response.status_code, len(response.body())))
            return response

    table = TableServiceClient.from_connection_string(
        azurite.connection_string, transport=RecordingTransport()).get_table_client("jobs" + uuid.uuid4().hex[:10])
    table.create_table()
    answers.clear()
    jobs = JobLedger(table, clock=lambda: datetime.now(UTC), retention_seconds=3600)
    assert jobs.begin(request("job-echo")) is Begun.FIRST_SIGHT
    assert answers == [("POST", 204, 0)]
    record = jobs.get(None, "job-echo")
    assert record is not None and record.status == "running"
