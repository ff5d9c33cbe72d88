"""The operator's commands (`python -m shared redrive | quota | inspect`) over the real stack: Azurite, the sandbox,
the webhook receiver, with hunts that really failed, were poisoned, or had their delivery kept. Each command runs
through the command line's own `main`, reading its settings from the environment as it does in production.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.webhook_receiver import WebhookReceiver
from shared.app.cli import main
from shared.app.relay import Relay
from shared.core.hunt_request import pending_delivery_name
from tests.relay.conftest import RelayStack, drain
from tests.relay.test_tenants import QUERY as TENANT_QUERY
from tests.relay.test_tenants import TENANTS, WOODGROVE_SECRET, Tenancy

QUERY = "DeviceInfo | take 3"
API = "mde"


@pytest.fixture
def tenancy(relay_stack: RelayStack, webhook_receiver: WebhookReceiver) -> Tenancy:
    return Tenancy(relay_stack, webhook_receiver)


def configured(stack: RelayStack, **extra: str) -> Relay:
    """The relay (the test's worker), and the same settings in the environment, where the commands read them."""
    for name, value in stack.env(**extra).items():
        stack.monkeypatch.setenv(name, value)
    return stack.make(**extra)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    """The command's exit code, its JSON lines, and its stderr."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines() if line.strip()], out.err


def inspect(capsys: pytest.CaptureFixture[str], job: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    code = main(["inspect", job, *extra])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.out


def enqueue(relay: Relay, prefix: str, **body: Any) -> str:
    job = f"{prefix}-{uuid.uuid4().hex[:8]}"
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, "api": API, **body}))
    return job


def dead_letter_names(stack: RelayStack) -> list[str]:
    container = stack.blob_service().get_container_client(stack.deadletter_container)
    return sorted(b.name for b in container.list_blobs())


def queued(relay: Relay) -> int:
    return int(relay.hunt_queue.get_queue_properties().approximate_message_count)


def fail_once_with_503(stack: RelayStack, relay: Relay, prefix: str = "gave-up") -> str:
    """A hunt that gives up (HUNT_MAX_ATTEMPTS=1) on one 503: a GaveUp record and a failure envelope in the blob."""
    stack.sandbox.knobs.faults.status_next = 1
    job = enqueue(relay, prefix)
    assert [o.detail for o in drain(relay).outcomes] == ["GaveUp"]
    return job


def test_redrive_dry_run_changes_nothing_then_redrives_once_and_the_hunt_is_delivered_once(
        relay_stack: RelayStack, capsys):
    relay = configured(relay_stack, HUNT_MAX_ATTEMPTS="1")
    job = fail_once_with_503(relay_stack, relay)
    other = enqueue(relay, "kql-error", query="DeviceInfo | wherex")   # a QueryError: not chosen by --code GaveUp
    drain(relay)
    assert relay_stack.results() == sorted([f"{job}.failed.json", f"{other}.failed.json"])
    before, calls = dead_letter_names(relay_stack), relay_stack.sandbox.counters.calls_to(API)

    code, lines, err = run(capsys, "redrive", "--code", "GaveUp", "--dry-run")
    assert code == 0 and "nothing changed" in err
    [line] = lines
    assert (line["action"], line["kind"], line["id"], line["code"]) == ("would-redrive", "hunt", job, "GaveUp")
    assert line["record"].endswith(f"/{job}.json") and line["dead_lettered_at"]
    assert "DeviceInfo" not in json.dumps(lines)   # ids, codes and dates: never the query
    assert dead_letter_names(relay_stack) == before and queued(relay) == 0
    assert relay_stack.results() == sorted([f"{job}.failed.json", f"{other}.failed.json"])

    code, [line], _ = run(capsys, "redrive", "--code", "GaveUp")
    assert code == 0 and (line["action"], line["id"]) == ("redriven", job)
    ledger = relay.jobs
    assert ledger is not None and ledger.get(None, job).status == "queued"
    assert f"{job}.failed.json" not in relay_stack.results()   # moved aside: it must not stand for the new run
    outcomes = drain(relay).outcomes
    assert [(o.job_id, o.status) for o in outcomes] == [(job, "delivered")]
    result = relay_stack.read_json(relay_stack.results_container, f"{job}.json")
    assert (result["status"], result["attempts"], result["row_count"]) == ("succeeded", 1, 3)   # a fresh attempt
    assert relay_stack.sandbox.counters.calls_to(API) == calls + 1
    assert ledger.get(None, job).status == "delivered"
    names = dead_letter_names(relay_stack)
    assert not any(name.endswith(f"/{job}.json") and not name.startswith("redriven/") for name in names)
    assert any(name.startswith("redriven/") and f"/{job}." in name and name.endswith(".failed.json")
               for name in names)

    code, lines, err = run(capsys, "redrive", "--code", "GaveUp")   # redriven once only
    assert (code, lines, err.strip()) == (0, [], "no record matched")
    assert queued(relay) == 0 and drain(relay).outcomes == []
    assert relay_stack.sandbox.counters.calls_to(API) == calls + 1

    code, found, _ = inspect(capsys, job)   # the record stays findable, as redriven
    [record] = found["dead_letters"]
    assert code == 0 and record["redriven"] and record["redrive"]["done"] and record["reason"] == "GaveUp"


def test_redrive_refuses_no_filter_without_all_and_an_unknown_tenant(relay_stack: RelayStack, capsys):
    configured(relay_stack)
    code, lines, err = run(capsys, "redrive")
    assert (code, lines) == (2, []) and "--all" in err and "--dry-run" in err
    code, _, err = run(capsys, "redrive", "--tenant", "nobody", "--dry-run")
    assert code == 2 and "'nobody' is not a tenant of this relay" in err and "HUNT_TENANTS" in err
    code, _, err = run(capsys, "redrive", "--since", "yesterday")
    assert code == 2 and "is not a date" in err
    code, lines, _ = run(capsys, "redrive", "--all", "--dry-run")
    assert (code, lines) == (0, [])


def test_a_rejected_hunt_is_not_redriven_and_the_reason_says_why(relay_stack: RelayStack, capsys):
    relay = configured(relay_stack)
    job = "rejected-" + uuid.uuid4().hex[:8]
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, "api": "nope"}))
    drain(relay)

    code, [line], _ = run(capsys, "redrive", "--all")
    assert code == 0 and (line["action"], line["id"], line["code"]) == ("skipped", job, "InvalidHuntRequest")
    assert "cannot succeed as sent" in line["reason"]
    assert queued(relay) == 0 and any(name.endswith(f"/{job}.json") and not name.startswith("redriven/")
                                      for name in dead_letter_names(relay_stack))


def test_redrive_filters_by_tenant_date_and_id(tenancy: Tenancy, capsys):
    extra = {"HUNT_API": "graph", "HUNT_DESTINATIONS": json.dumps(tenancy.destinations()),
             "HUNT_TENANTS": json.dumps(tenancy.tenants()), "WOODGROVE_SECRET": WOODGROVE_SECRET,
             "AZURE_AUTHORITY_HOST": tenancy.stack.sandbox.authority}
    relay = configured(tenancy.stack, **extra)
    jobs = {}
    for name, foreign in (("contoso", "fabrikam-blob"), ("fabrikam", "contoso-blob")):   # DestinationRefused
        jobs[name] = f"{name}-{uuid.uuid4().hex[:8]}"
        relay.hunt_queue.send_message(json.dumps({"id": jobs[name], "tenant": name, "query": TENANT_QUERY,
                                                  "destination": foreign}))
    assert {o.detail for o in drain(relay).outcomes} == {"DestinationRefused"}
    old = f"contoso-old-{uuid.uuid4().hex[:6]}"   # a record of an earlier day, as the relay wrote it then
    relay.dead_letters.record(key=old, raw=json.dumps({"id": old, "tenant": "contoso", "query": TENANT_QUERY}).encode(),
                              reason="GaveUp", error={"code": "GaveUp"}, queue=relay.settings.queue, message_id="m",
                              dequeue_count=1, now=datetime(2026, 1, 5, 9, 30, tzinfo=UTC), tenant="contoso")
    assert sorted(n.split("/")[1] for n in tenancy.dead_letter_names()) == ["contoso", "contoso", "fabrikam"]

    def chosen(*argv: str) -> set[str]:
        code, lines, _ = run(capsys, "redrive", "--dry-run", *argv)
        assert code == 0 and {line["action"] for line in lines} <= {"would-redrive"}
        return {line["id"] for line in lines}

    assert chosen("--tenant", "contoso") == {jobs["contoso"], old}
    assert chosen("--tenant", "fabrikam") == {jobs["fabrikam"]}
    assert chosen("--until", "2026-01-05") == {old}
    assert chosen("--since", "2026-01-05T09:30:00Z", "--until", "2026-01-05T09:30:00Z") == {old}
    assert chosen("--since", "2026-01-06") == {jobs["contoso"], jobs["fabrikam"]}
    assert chosen("--code", "GaveUp") == {old}
    assert chosen("--code", "DestinationRefused", "--tenant", "contoso") == {jobs["contoso"]}
    assert chosen("--id", jobs["fabrikam"], "--id", old) == {jobs["fabrikam"], old}

    code, [line], _ = run(capsys, "redrive", "--tenant", "contoso", "--until", "2026-01-05")
    assert code == 0 and (line["action"], line["id"], line["tenant"]) == ("redriven", old, "contoso")
    assert queued(relay) == 1
    assert chosen("--tenant", "contoso") == {jobs["contoso"]}   # the old one is redriven: chosen once only


def test_a_poison_message_waiting_is_listed_then_its_record_is_redriven(relay_stack: RelayStack, capsys):
    relay = configured(relay_stack)
    job = "poisoned-" + uuid.uuid4().hex[:8]
    relay.poison_queue.send_message(json.dumps({"id": job, "query": QUERY, "api": API}))

    code, [line], _ = run(capsys, "redrive", "--code", "Poison", "--dry-run")
    assert (line["action"], line["source"], line["id"]) == ("skipped", "poison-queue", job)
    assert "not yet recorded" in line["reason"]

    message = relay.poison_queue.receive_message()   # the poison handler, as the worker runs it
    assert relay.handle_poison(message.content.encode(), message_id=message.id, dequeue_count=1).error_code == "Poison"
    relay.poison_queue.delete_message(message)
    assert f"{job}.failed.json" in relay_stack.results()

    code, [line], _ = run(capsys, "redrive", "--code", "Poison")
    assert code == 0 and (line["action"], line["id"], line["code"]) == ("redriven", job, "Poison")
    assert [(o.job_id, o.status) for o in drain(relay).outcomes] == [(job, "delivered")]
    assert relay_stack.read_json(relay_stack.results_container, f"{job}.json")["row_count"] == 3
    assert relay_stack.sandbox.counters.calls_to(API) == 1   # the poisoned message itself never ran


def test_a_kept_delivery_is_sent_again_without_a_query_or_quota(relay_stack: RelayStack,
                                                                 webhook_receiver: WebhookReceiver, capsys):
    relay = configured(relay_stack, HUNT_MAX_ATTEMPTS="2", HUNT_QUOTA_WINDOWS="1000/1d",
                       **relay_stack.with_webhook(webhook_receiver.url + "/hook"))
    webhook_receiver.default_status = 503
    webhook_receiver.reply_headers = {"Retry-After": "0"}
    job = enqueue(relay, "kept")
    assert [o.status for o in drain(relay).outcomes] == ["requeued", "failed"]
    first = webhook_receiver.requests[0]
    code, found, text = inspect(capsys, job)
    kept = found["kept_delivery"]
    assert code == 0 and kept["waiting"] and kept["rows"] == 3 and kept["bytes"] == len(first.body)
    assert kept["location"].endswith(pending_delivery_name(job)) and '"results"' not in text   # not the body
    quota_before = run(capsys, "quota", "--json")[1]
    assert quota_before[0]["windows"][0]["used"] == 1

    code, [line], _ = run(capsys, "redrive", "--code", "GaveUp")   # its result is kept: not run again
    assert (line["action"], line["id"]) == ("skipped", job) and "--kept" in line["reason"]
    assert queued(relay) == 0

    webhook_receiver.default_status = 200
    code, [line], _ = run(capsys, "redrive", "--kept", "--code", "GaveUp")
    assert code == 0 and (line["action"], line["kind"], line["id"]) == ("redriven", "kept", job)
    assert [(o.status, o.detail) for o in drain(relay).outcomes] == [("delivered", "delivery-only retry")]
    assert relay_stack.sandbox.counters.calls_to(API) == 1   # the query ran once, before
    assert run(capsys, "quota", "--json")[1] == quota_before   # no call admitted by the gate
    last = webhook_receiver.requests[-1]
    assert len(webhook_receiver.requests) == 3 and last.body == first.body
    assert last.header("webhook-id") == first.header("webhook-id")
    assert run(capsys, "redrive", "--kept", "--all")[1] == []   # sent: nothing left to send


def test_quota_shows_calls_used_and_left_per_tenant_and_a_paused_gate(tenancy: Tenancy, capsys):
    sandbox = tenancy.stack.sandbox
    sandbox.knobs.tenant_quotas[TENANTS["woodgrove"][0]] = type(sandbox.knobs.quota)(
        calls_per_window=1, window_seconds=3600.0)
    tenants = tenancy.tenants(contoso="100/1d", woodgrove="50/1d")
    relay = configured(tenancy.stack, HUNT_API="graph", HUNT_DESTINATIONS=json.dumps(tenancy.destinations()),
                       HUNT_TENANTS=json.dumps(tenants), WOODGROVE_SECRET=WOODGROVE_SECRET,
                       AZURE_AUTHORITY_HOST=sandbox.authority)
    for tenant, count in (("contoso", 2), ("woodgrove", 2)):
        for index in range(count):
            raw = json.dumps({"id": f"{tenant}-q{index}", "tenant": tenant, "query": TENANT_QUERY,
                              "destination": f"{tenant}-blob"}).encode()
            relay.handle(raw, message_id=f"m-{tenant}-{index}", dequeue_count=1)
    assert sandbox.counters.throttled >= 1   # woodgrove's second call met the service's 429

    code, lines, _ = run(capsys, "quota", "--json")
    assert code == 0
    gates = {(g["tenant"], g["api"]): g for g in lines}
    assert set(gates) == {("contoso", "graph"), ("fabrikam", "graph"), ("woodgrove", "graph")}
    contoso, fabrikam, woodgrove = (gates[(t, "graph")] for t in ("contoso", "fabrikam", "woodgrove"))
    assert [(w["seconds"], w["limit"], w["used"], w["left"]) for w in contoso["windows"]] == [(86400, 100, 2, 98)]
    assert contoso["paused_until"] is None
    assert [(w["limit"], w["used"], w["left"]) for w in fabrikam["windows"]] == [(1000, 0, 1000)]   # never used
    assert [(w["used"], w["left"]) for w in woodgrove["windows"]] == [(2, 48)]
    paused = datetime.fromisoformat(woodgrove["paused_until"].replace("Z", "+00:00"))
    assert datetime.now(UTC) < paused <= datetime.now(UTC) + timedelta(hours=1, seconds=5)

    code, lines, _ = run(capsys, "quota", "--tenant", "woodgrove", "--json")
    assert code == 0 and lines == [woodgrove]
    code, table = main(["quota"]), capsys.readouterr().out
    header, *rows = table.splitlines()
    assert code == 0 and "USED" in header and "PAUSED UNTIL" in header and len(rows) == 3
    [woodgrove_row] = [row for row in rows if row.startswith("woodgrove")]
    assert " 2 " in woodgrove_row and " 48 " in woodgrove_row and woodgrove["paused_until"][:16] in woodgrove_row
    code, lines, err = run(capsys, "quota", "--tenant", "nobody")
    assert code == 2 and "not a tenant" in err


def test_inspect_shows_a_delivered_job_and_a_failed_one_without_rows_or_query(relay_stack: RelayStack, capsys):
    relay = configured(relay_stack, HUNT_MAX_ATTEMPTS="1")
    delivered = enqueue(relay, "fine")
    drain(relay)
    failed = fail_once_with_503(relay_stack, relay)

    code, found, text = inspect(capsys, delivered)
    assert code == 0 and found["ledger"]["status"] == "delivered"
    [blob] = found["blobs"]
    assert (blob["kind"], blob["location"]) == ("result", f"{relay_stack.results_container}/{delivered}.json")
    assert blob["bytes"] > 0 and found["dead_letters"] == [] and found["kept_delivery"] is None
    rows = relay_stack.read_json(relay_stack.results_container, f"{delivered}.json")["results"]
    assert rows and all(str(value) not in text for value in rows[0].values() if len(str(value)) > 8)

    code, found, text = inspect(capsys, failed)
    assert code == 0 and (found["ledger"]["status"], found["ledger"]["error_code"]) == ("failed", "GaveUp")
    [blob] = found["blobs"]
    assert (blob["kind"], blob["error_code"], blob["status"]) == ("failure_envelope", "GaveUp", "failed")
    [record] = found["dead_letters"]
    assert (record["key"], record["reason"], record["redriven"]) == (failed, "GaveUp", False)
    assert record["message"]["encoding"] == "text" and record["message"]["chars"] > len(QUERY)
    assert QUERY not in text

    code, found, _ = inspect(capsys, "never-" + uuid.uuid4().hex[:8])
    assert code == 1 and found["ledger"] is None and found["blobs"] == found["dead_letters"] == []


def test_a_redrive_cut_short_before_its_enqueue_is_finished_by_the_next_one(relay_stack: RelayStack, capsys):
    relay = configured(relay_stack, HUNT_MAX_ATTEMPTS="1")
    job = fail_once_with_503(relay_stack, relay)
    relay.hunt_queue.delete_queue()   # the enqueue will fail, as if the process died right there

    code, lines, err = run(capsys, "redrive", "--id", job)
    assert code == 2 and lines == [] and "run the same command again" in err
    assert not any(name.endswith(f"/{job}.json") for name in dead_letter_names(relay_stack))   # in the journal

    relay.hunt_queue.create_queue()
    code, [line], _ = run(capsys, "redrive", "--id", job)
    assert (line["action"], line["id"], line["resumed"]) == ("redriven", job, True)
    assert [(o.job_id, o.status) for o in drain(relay).outcomes] == [(job, "delivered")]
    assert run(capsys, "redrive", "--id", job)[1] == []


def test_a_redrive_cut_short_before_it_removed_the_record_is_finished_by_the_next_one(
        relay_stack: RelayStack, capsys, monkeypatch):
    from azure.core.exceptions import ServiceRequestError

    from shared.adapters.dead_letters import DeadLetters

    relay = configured(relay_stack, HUNT_MAX_ATTEMPTS="1")
    job = fail_once_with_503(relay_stack, relay)

    def refused(self, name):  # type: ignore[no-untyped-def]
        raise ServiceRequestError("storage went away")

    with monkeypatch.context() as patched:   # the journal entry and the ledger are written, the delete fails
        patched.setattr(DeadLetters, "remove", refused)
        code, lines, _ = run(capsys, "redrive", "--id", job)
    assert code == 2 and lines == []
    assert relay.hunt_queue.get_queue_properties().approximate_message_count == 0

    code, [line], _ = run(capsys, "redrive", "--id", job)
    assert (line["action"], line["id"], line["resumed"]) == ("redriven", job, True)
    assert [(o.job_id, o.status) for o in drain(relay).outcomes] == [(job, "delivered")]
    assert run(capsys, "redrive", "--id", job)[1] == []
