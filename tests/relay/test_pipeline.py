"""The hunt pipeline end to end over the local stack: queue -> credential -> API -> sink, through the worker."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.relay.conftest import CREDENTIAL_KINDS, RelayStack, drain

SEED_QUERY = ('DeviceProcessEvents | where InitiatingProcessFileName =~ "powershell.exe" '
              "| project Timestamp, FileName, InitiatingProcessFileName | order by Timestamp desc | limit 2")
ENDPOINTS = {"mde": "mde", "m365d": "m365d", "graph": "graph"}


def enqueue(relay, **body) -> str:
    body.setdefault("id", "job-" + uuid.uuid4().hex[:12])
    relay.hunt_queue.send_message(json.dumps(body))
    return body["id"]


@pytest.mark.parametrize("credential", CREDENTIAL_KINDS)
@pytest.mark.parametrize("api", ["mde", "m365d", "graph"])
def test_a_hunt_lands_in_blob_storage_for_each_api_and_credential(relay_stack: RelayStack, api, credential):
    relay = relay_stack.make(credential)
    job = enqueue(relay, query=SEED_QUERY, api=api, context={"incident": 7})
    stats = drain(relay)
    assert [o.status for o in stats.outcomes] == ["delivered"]
    result = relay_stack.read_json(relay_stack.results_container, f"{job}.json")
    assert (result["id"], result["status"], result["api"]) == (job, "succeeded", api)
    assert result["context"] == {"incident": 7}
    assert result["row_count"] == 2 == len(result["results"])
    assert [c["name"] for c in result["schema"]] == ["Timestamp", "FileName", "InitiatingProcessFileName"]
    assert all(r["InitiatingProcessFileName"].lower() == "powershell.exe" for r in result["results"])
    assert result["query"] == SEED_QUERY and result["attempts"] == 1 and result["truncated"] is False


@pytest.mark.parametrize("credential", CREDENTIAL_KINDS)
@pytest.mark.parametrize("api", ["mde", "m365d", "graph"])
def test_a_hunt_reaches_a_webhook_for_each_api_and_credential(relay_stack: RelayStack, webhook_receiver, api,
                                                               credential):
    relay = relay_stack.make(credential, **relay_stack.with_webhook(webhook_receiver.url))
    job = enqueue(relay, query=SEED_QUERY, api=api)
    drain(relay)
    [request] = webhook_receiver.requests
    envelope = json.loads(request.body)
    assert (envelope["id"], envelope["status"], envelope["row_count"]) == (job, "succeeded", 2)
    assert request.headers["webhook-id"].startswith("hunt_")
    assert request.headers["Content-Type"] == "application/json"


AWKWARD_QUERIES = {
    "multi-line": "DeviceProcessEvents\n| where FileName =~ 'powershell.exe'\n| take 1",
    "comments": "// find powershell\nDeviceProcessEvents // the table\n| take 1 // one row",
    "unicode": "DeviceFileEvents | where FileName == 'résumé.pdf' or FileName == '报告.docx' | take 1",
    "both quotes": "DeviceProcessEvents | where ProcessCommandLine has \"it's\" or FileName == 'say \"hi\"' | take 1",
    "backslashes": 'DeviceProcessEvents | where FolderPath startswith @"C:\\Windows\\" or FolderPath has "\\\\temp" '
                   "| take 1",
    "crlf and tabs": "DeviceProcessEvents\r\n\t| take 1",
    "40 KB": "// " + "x" * 40_000 + "\nDeviceProcessEvents | take 1",
}


@pytest.mark.parametrize("name", AWKWARD_QUERIES)
def test_the_query_reaches_the_api_byte_for_byte(relay_stack: RelayStack, name):
    query = AWKWARD_QUERIES[name]
    relay = relay_stack.make()
    enqueue(relay, query=query, api="m365d")
    drain(relay)
    [body] = relay_stack.sandbox.counters.bodies_for("m365d")
    assert json.loads(body)["Query"].encode("utf-8") == query.encode("utf-8")


def test_the_graph_timespan_is_passed_on(relay_stack: RelayStack):
    relay = relay_stack.make()
    enqueue(relay, query="DeviceInfo | take 1", api="graph", timespan="P1D")
    drain(relay)
    [body] = relay_stack.sandbox.counters.bodies_for("graph")
    assert json.loads(body)["Timespan"] == "P1D"


def assert_failed_once(relay_stack: RelayStack, relay, job: str, code: str):
    failure = relay_stack.read_json(relay_stack.results_container, f"{job}.failed.json")
    assert (failure["id"], failure["status"], failure["error"]["code"]) == (job, "failed", code)
    [record] = relay_stack.dead_letters()
    assert (record["key"], record["reason"], record["dequeue_count"]) == (job, code, 1)
    assert relay.hunt_queue.get_queue_properties().approximate_message_count == 0
    return failure


def test_a_kql_syntax_error_ends_in_a_failed_envelope_and_a_dead_letter_after_one_dequeue(relay_stack):
    relay = relay_stack.make()
    job = enqueue(relay, query="DeviceProcessEvents | wherex", api="m365d")
    drain(relay)
    failure = assert_failed_once(relay_stack, relay, job, "QueryError")
    assert failure["error"]["http_status"] == 400
    assert relay_stack.sandbox.counters.calls_to("m365d") == 1


def test_a_non_device_table_on_mde_is_a_query_error(relay_stack):
    relay = relay_stack.make()
    job = enqueue(relay, query="EmailEvents | take 1", api="mde")
    drain(relay)
    assert_failed_once(relay_stack, relay, job, "QueryError")


def test_a_missing_role_fails_with_a_hint_naming_the_permission(relay_stack):
    relay_stack.sandbox.add_identity("limited-identity", roles=["ThreatHunting.Read.All"])
    relay = relay_stack.make(AZURE_CLIENT_ID="limited-identity")
    job = enqueue(relay, query="DeviceInfo | take 1", api="mde")
    drain(relay)
    failure = assert_failed_once(relay_stack, relay, job, "Forbidden")
    assert "AdvancedQuery.Read.All" in failure["error"]["hint"]


def test_a_token_for_the_wrong_audience_fails_without_a_retry(relay_stack):
    # The US Government cloud's audience is not the (public) sandbox API's.
    relay = relay_stack.make(HUNT_CLOUD="gcchigh")
    job = enqueue(relay, query="DeviceInfo | take 1", api="mde")
    drain(relay)
    failure = assert_failed_once(relay_stack, relay, job, failure_code := "Forbidden")
    assert failure_code in failure["error"]["code"]


@pytest.mark.parametrize(("raw", "field"), [
    ("this is not json", "neither a JSON object nor base64"),
    (json.dumps({"query": "DeviceInfo", "api": "splunk", "id": "bad-api"}), "api"),
    (json.dumps({"id": "no-query"}), "query"),
])
def test_an_invalid_message_is_dead_lettered_after_one_dequeue(relay_stack, raw, field):
    relay = relay_stack.make()
    relay.hunt_queue.send_message(raw)
    stats = drain(relay)
    assert [o.status for o in stats.outcomes] == ["rejected"]
    [record] = relay_stack.dead_letters()
    assert record["reason"] == "InvalidHuntRequest" and field in record["error"]["message"]
    assert record["dequeue_count"] == 1 and record["message"]["text"] == raw
    assert relay.hunt_queue.get_queue_properties().approximate_message_count == 0
    assert relay_stack.sandbox.counters.calls_to("mde") == 0


def test_an_invalid_message_with_a_usable_id_also_gets_a_failed_envelope(relay_stack):
    relay = relay_stack.make()
    relay.hunt_queue.send_message(json.dumps({"id": "job-bad", "query": "x", "format": "xml", "context": {"a": 1}}))
    drain(relay)
    failure = relay_stack.read_json(relay_stack.results_container, "job-bad.failed.json")
    assert (failure["status"], failure["error"]["code"]) == ("failed", "InvalidHuntRequest")
    assert failure["context"] == {"a": 1}


def test_an_invalid_poisoned_message_whose_destination_storage_fails_is_still_recorded_and_answered(relay_stack):
    relay = relay_stack.make()
    relay_stack.blob_service().delete_container(relay_stack.results_container)   # the failure envelope's home
    raw = json.dumps({"id": "job-bad-poison", "query": "x", "format": "xml"}).encode()
    outcome = relay.handle_poison(raw, message_id="p-1", dequeue_count=6)
    assert outcome.status == "rejected" and outcome.location is None
    [record] = relay_stack.dead_letters()
    assert (record["key"], record["reason"]) == ("job-bad-poison", "InvalidHuntRequest")


def test_a_redelivered_job_is_not_run_twice(relay_stack):
    relay = relay_stack.make()
    enqueue(relay, query="DeviceInfo | take 1", id="job-twice")
    enqueue(relay, query="DeviceInfo | take 1", id="job-twice")
    stats = drain(relay, concurrency=1)
    assert sorted(o.status for o in stats.outcomes) == ["delivered", "duplicate"]
    assert relay_stack.sandbox.counters.calls_to("mde") == 1


def test_a_result_left_by_a_job_the_ledger_never_saw_is_kept_and_the_ledger_says_what_is_looked_for(relay_stack):
    """The ledger's first sight of a job (its create-only write) means no run of it can have delivered, so the
    relay does not look for the result: a blob left under that id (a job whose entity outlived its retention) costs
    a query, never an overwrite. Without the ledger the relay looks first and runs nothing."""
    def leftover(relay) -> str:
        job_id = "job-" + uuid.uuid4().hex[:12]
        relay_stack.blob_service().get_blob_client(relay_stack.results_container, f"{job_id}.json").upload_blob(
            b'{"left": "before"}')
        enqueue(relay, query="DeviceInfo | take 1", id=job_id)
        return job_id

    with_ledger = relay_stack.make()
    kept = leftover(with_ledger)
    assert [o.status for o in drain(with_ledger).outcomes] == ["delivered"]
    assert relay_stack.sandbox.counters.calls_to("mde") == 1
    assert relay_stack.read_json(relay_stack.results_container, f"{kept}.json") == {"left": "before"}

    without_ledger = relay_stack.make(HUNT_JOB_LEDGER="false")
    looked_for = leftover(without_ledger)
    assert [o.status for o in drain(without_ledger).outcomes] == ["duplicate"]
    assert relay_stack.sandbox.counters.calls_to("mde") == 1
    assert relay_stack.read_json(relay_stack.results_container, f"{looked_for}.json") == {"left": "before"}


def test_fifty_hunts_in_one_process_fetch_one_token_and_reuse_connections(relay_stack):
    relay = relay_stack.make("user_assigned")
    before = relay_stack.sandbox.counters.snapshot()
    for _ in range(50):
        enqueue(relay, query="DeviceInfo | take 1", api="mde")
    stats = drain(relay, concurrency=4)
    after = relay_stack.sandbox.counters.snapshot()
    assert [o.status for o in stats.outcomes] == ["delivered"] * 50
    tokens = "sandbox-user-identity"
    assert after["tokens_issued"][tokens] - before["tokens_issued"].get(tokens, 0) == 1
    # One pooled connection per concurrent hunt, plus the token request's (the sandbox serves both on one port).
    assert after["connections_accepted"] - before["connections_accepted"] <= 4 + 1
