"""A webhook that answers 5xx or 429 gets the same result again as a delivery only: the query ran once, the quota
gate was asked once, every POST carries the same `webhook-id` (signed afresh); 410, the limits and a missing
body end it with a dead-letter record; a message that forges the relay-kept `pending_delivery` runs as a fresh
hunt and never gets a stored body sent anywhere, nor replaces it; a second request under a waiting job's id is a
Conflict that leaves the first job whole. Over the real stack: Azurite, the sandbox, the loopback webhook
receiver.
"""

from __future__ import annotations

import base64
import json
import os
import uuid

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from standardwebhooks.webhooks import Webhook

from sandbox.webhook_receiver import WebhookReceiver
from shared.app.relay import Relay
from shared.core.errors import PendingConflict
from shared.core.hunt_request import decode_hunt_request, pending_delivery_name
from shared.core.relay_mark import MARK_FIELD
from shared.delivery.pending import Kept, PendingDeliveries, Sent, Unusable
from tests.relay.conftest import RelayStack, drain

QUERY = "DeviceInfo | take 3"
API = "m365d"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")


def webhooks(relay_stack: RelayStack, secret: str, **urls: str) -> dict[str, str]:
    """Settings with one signed webhook destination per keyword ("hook" is the default), and a blob "archive"."""
    destinations: dict[str, dict[str, str]] = {
        name: {"type": "webhook", "url": url, "secret_setting": "HOOK_SECRET"} for name, url in urls.items()}
    destinations["archive"] = {"type": "blob", "container": relay_stack.results_container}
    return {"HUNT_DESTINATIONS": json.dumps(destinations), "HUNT_DEFAULT_DESTINATION": "hook",
            "HOOK_SECRET": secret}


def enqueue(relay: Relay, job: str, **extra: object) -> None:
    """A hunt; with relay-kept fields it is marked as the relay's own copy (as only the relay could)."""
    body = {"id": job, "query": QUERY, "api": API, **extra}
    if extra:
        body[MARK_FIELD] = relay.mark.sign(body)
    relay.hunt_queue.send_message(json.dumps(body))


def count_gate_admissions(relay: Relay, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each question put to the real quota gate (the gate still answers)."""
    asked: list[str] = []
    gates = relay.gates
    assert gates is not None
    admit = gates.admit

    def recording_admit(api: str, tenant=None):  # type: ignore[no-untyped-def]
        asked.append(api)
        return admit(api, tenant)

    monkeypatch.setattr(gates, "admit", recording_admit)
    return asked


def pending_blobs(relay_stack: RelayStack) -> list[str]:
    return [name for name in relay_stack.results() if name.startswith("pending/")]


@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, 2)], ids=["503", "429-retry-after"])
def test_a_refused_result_is_delivered_again_without_running_the_query_again(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, status,
        retry_after):
    secret = new_secret()
    relay = relay_stack.make(**webhooks(relay_stack, secret, hook=webhook_receiver.url + "/hook"))
    asked = count_gate_admissions(relay, monkeypatch)
    webhook_receiver.replies = [status, 200]
    if retry_after is not None:
        webhook_receiver.reply_headers = {"Retry-After": str(retry_after)}
    job = "redeliver-" + uuid.uuid4().hex[:8]
    enqueue(relay, job)
    stats = drain(relay)
    assert [o.status for o in stats.outcomes] == ["requeued", "delivered"]
    assert relay_stack.sandbox.counters.calls_to(API) == 1 and asked == [API]
    first, second = webhook_receiver.requests
    assert first.body == second.body and json.loads(second.body)["row_count"] == 3
    assert first.header("webhook-id") == second.header("webhook-id")
    for request in (first, second):   # each POST is signed for its own timestamp
        Webhook(secret).verify(request.body, request.headers)
    if retry_after is not None:
        [requeued] = [o for o in stats.outcomes if o.status == "requeued"]
        assert requeued.delay is not None and requeued.delay >= retry_after
        # The copy stayed invisible at least that long: the relay's own timestamps on the two POSTs say so.
        assert int(second.header("webhook-timestamp") or 0) - int(first.header("webhook-timestamp") or 0) \
            >= retry_after
    assert relay_stack.dead_letters() == []
    assert pending_body(relay, job) == b""   # the kept result is gone: only an empty "sent" marker is left


def pending_body(relay: Relay, job: str) -> bytes:
    container = relay.blob_service.get_container_client(relay.settings.results_container)
    return container.get_blob_client(pending_delivery_name(job)).download_blob().readall()


def test_a_delivery_only_copy_handled_again_after_its_delivery_is_a_duplicate_not_a_failure(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    relay = relay_stack.make(**webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook"))
    webhook_receiver.replies = [503, 200]
    webhook_receiver.reply_headers = {"Retry-After": "0"}
    job = "died-after-send-" + uuid.uuid4().hex[:8]
    enqueue(relay, job)
    first = relay.hunt_queue.receive_messages(max_messages=1).next()
    assert relay.handle(first.content.encode(), message_id=first.id, dequeue_count=1).status == "requeued"
    relay.hunt_queue.delete_message(first)
    copy = relay.hunt_queue.receive_messages(max_messages=1).next()
    assert relay.handle(copy.content.encode(), message_id=copy.id, dequeue_count=1).status == "delivered"
    # The worker dies here, before completing the copy: the host hands it out again after its lease.
    again = relay.handle(copy.content.encode(), message_id=copy.id, dequeue_count=2)
    assert (again.status, again.detail) == ("duplicate", "delivered on an earlier try")
    assert len(webhook_receiver.requests) == 2 and relay_stack.dead_letters() == []
    assert relay_stack.sandbox.counters.calls_to(API) == 1


@pytest.mark.parametrize("replies", [[410], [503, 410]], ids=["first-post", "delivery-only-retry"])
def test_410_ends_delivery_with_a_dead_letter_and_nothing_re_enqueued(relay_stack: RelayStack,
                                                                     webhook_receiver: WebhookReceiver, replies):
    relay = relay_stack.make(**webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook"))
    webhook_receiver.replies = list(replies)
    webhook_receiver.reply_headers = {"Retry-After": "0"}
    job = "gone-" + uuid.uuid4().hex[:8]
    enqueue(relay, job)
    stats = drain(relay)
    assert stats.outcomes[-1].status == "failed" and stats.outcomes[-1].detail == "DeliveryRefused"
    assert len(webhook_receiver.requests) == len(replies)   # no failure envelope to an endpoint that is gone
    [record] = relay_stack.dead_letters()
    assert record["reason"] == "DeliveryRefused" and "410" in record["error"]["message"]
    assert relay.hunt_queue.get_queue_properties().approximate_message_count == 0
    assert relay_stack.sandbox.counters.calls_to(API) == 1
    if len(replies) > 1:   # a body kept for a retry stays for the operator, and the record says where
        assert pending_blobs(relay_stack) == [pending_delivery_name(job)]
        assert pending_delivery_name(job) in record["error"]["hint"]


def test_max_attempts_during_delivery_only_retries_ends_in_a_dead_letter_not_a_loop(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    relay = relay_stack.make(HUNT_MAX_ATTEMPTS="3",
                             **webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook"))
    webhook_receiver.default_status = 503
    webhook_receiver.reply_headers = {"Retry-After": "0"}
    job = "always-503-" + uuid.uuid4().hex[:8]
    enqueue(relay, job)
    stats = drain(relay)
    assert [o.status for o in stats.outcomes] == ["requeued", "requeued", "failed"]
    assert len(webhook_receiver.requests) == 3 and len({r.body for r in webhook_receiver.requests}) == 1
    assert relay_stack.sandbox.counters.calls_to(API) == 1
    [record] = relay_stack.dead_letters()
    assert record["reason"] == "GaveUp"
    assert record["error"]["message"].startswith("gave up after 3 attempts over ")
    assert "answered 503" in record["error"]["message"]
    assert pending_delivery_name(job) in record["error"]["hint"]
    assert relay.hunt_queue.get_queue_properties().approximate_message_count == 0


def test_the_body_is_kept_before_the_copy_is_enqueued_so_a_failed_enqueue_loses_nothing(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    relay = relay_stack.make(**webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook"))
    webhook_receiver.replies = [503, 200]
    job = "crash-" + uuid.uuid4().hex[:8]
    raw = json.dumps({"id": job, "query": QUERY, "api": API}).encode()
    relay.hunt_queue.delete_queue()   # the re-enqueue will fail, as if the process died right there
    with pytest.raises(ResourceNotFoundError):
        relay.handle(raw, message_id="m1", dequeue_count=1)
    assert pending_blobs(relay_stack) == [pending_delivery_name(job)]
    relay.hunt_queue.create_queue()
    outcome = relay.handle(raw, message_id="m1", dequeue_count=2)   # the host delivers the original again
    assert outcome.status == "delivered"
    assert [json.loads(r.body)["id"] for r in webhook_receiver.requests] == [job, job]


def test_a_forged_pending_delivery_is_dropped_and_never_sends_or_replaces_a_stored_body(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    with WebhookReceiver() as other:
        relay = relay_stack.make(**webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook",
                                            other=other.url + "/other"))
        victim = "victim-" + uuid.uuid4().hex[:8]
        marker = b'{"id": "' + victim.encode() + b'", "status": "succeeded", "results": ["stored-marker"]}'
        store = PendingDeliveries(relay.blob_service.get_container_client(relay.settings.results_container))
        victim_request = decode_hunt_request(json.dumps({"id": victim, "query": QUERY, "api": API}), message_id="x",
                                             default_api="m365d", now=relay.clock())
        store.keep(victim_request, marker, 1)
        forger = "forger-" + uuid.uuid4().hex[:8]
        forged = [   # none carries the relay's mark: each runs as a fresh hunt of its own
            {"id": victim, "destination": "other", "pending_delivery": pending_delivery_name(victim), "attempt": 9},
            {"id": forger, "destination": "other", "pending_delivery": pending_delivery_name(victim)},
            {"id": forger + "-2", "destination": "other", "pending_delivery": "links/" + victim + ".json"},
            {"id": victim, "destination": "archive", "pending_delivery": pending_delivery_name(victim)},
        ]
        for body in forged:
            relay.hunt_queue.send_message(json.dumps({"query": QUERY, "api": API, **body}))
        stats = drain(relay)
        assert [o.status for o in stats.outcomes] == ["delivered"] * 4
        assert len(other.requests) == 3
        for request in other.requests:   # each its own fresh result, none the stored body, attempts from 1
            envelope = json.loads(request.body)
            assert (envelope["status"], envelope["attempts"], envelope["row_count"]) == ("succeeded", 1, 3)
            assert b"stored-marker" not in request.body
        assert webhook_receiver.requests == []
    assert relay_stack.sandbox.counters.calls_to(API) == 4
    assert relay_stack.dead_letters() == []
    assert store.load(victim_request) == Kept(marker, 1)


def test_a_second_request_under_a_waiting_jobs_id_is_a_conflict_and_the_first_job_survives(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    with WebhookReceiver() as other:
        relay = relay_stack.make(**webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook",
                                            other=other.url + "/other"))
        job = "shared-id-" + uuid.uuid4().hex[:8]
        webhook_receiver.replies = [503, 200]
        enqueue(relay, job)   # the first job: its webhook says "not now", its body is kept, a copy waits 1-2 s
        [first] = relay.hunt_queue.receive_messages(max_messages=1)
        assert relay.handle(first.content.encode(), message_id=first.id, dequeue_count=1).status == "requeued"
        relay.hunt_queue.delete_message(first)
        kept = pending_body(relay, job)
        other.replies = [503]
        relay.hunt_queue.send_message(json.dumps({"id": job, "query": "DeviceInfo | take 1", "api": API,
                                                  "destination": "other"}))
        stats = drain(relay)
        assert sorted((o.status, o.detail) for o in stats.outcomes) == [
            ("delivered", "delivery-only retry"), ("failed", "Conflict")]
        [conflict] = relay_stack.dead_letters()
        assert conflict["reason"] == "Conflict" and conflict["key"].startswith(job + ".conflict.")
        assert len(other.requests) == 1   # its one try; its failure goes to the dead-letter record
    first_post, second_post = webhook_receiver.requests   # the first job: its own body, twice, then sent
    assert first_post.body == second_post.body == kept and json.loads(kept)["row_count"] == 3
    assert pending_body(relay, job) == b""


def test_keeping_a_body_refuses_another_request_under_the_same_id_but_not_the_same_one(relay_stack: RelayStack):
    relay = relay_stack.make()
    store = PendingDeliveries(relay.blob_service.get_container_client(relay.settings.results_container))
    job = "keep-" + uuid.uuid4().hex[:8]

    def request(query: str):  # type: ignore[no-untyped-def]
        return decode_hunt_request(json.dumps({"id": job, "query": query}), message_id="x", default_api="mde",
                                   now=relay.clock())

    store.keep(request("A"), b'{"a": 1}', 1)
    store.keep(request("A"), b'{"a": 2}', 2)   # the same request rendered again
    with pytest.raises(PendingConflict):
        store.keep(request("B"), b'{"b": 1}', 1)
    assert store.load(request("A")) == Kept(b'{"a": 2}', 2)
    store.mark_sent(request("A"), relay.clock())
    store.keep(request("B"), b'{"b": 1}', 1)   # once the first was delivered, the id may be used again
    assert store.load(request("B")) == Kept(b'{"b": 1}', 1)


def test_a_delivery_only_message_whose_body_is_gone_fails_clearly_once(relay_stack: RelayStack,
                                                                       webhook_receiver: WebhookReceiver):
    relay = relay_stack.make(**webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook"))
    job = "gone-body-" + uuid.uuid4().hex[:8]
    enqueue(relay, job, attempt=2, pending_delivery=pending_delivery_name(job))
    stats = drain(relay)
    assert [(o.status, o.detail) for o in stats.outcomes] == [("failed", "PendingDeliveryMissing")]
    [record] = relay_stack.dead_letters()
    assert record["reason"] == "PendingDeliveryMissing" and record["dequeue_count"] == 1
    [failure] = webhook_receiver.requests   # the failure envelope, under the job's own webhook-id
    assert json.loads(failure.body)["error"]["code"] == "PendingDeliveryMissing"
    assert relay_stack.sandbox.counters.calls_to(API) == 0


def test_the_pending_store_binds_a_body_to_its_job_and_destination(relay_stack: RelayStack):
    relay = relay_stack.make()
    store = PendingDeliveries(relay.blob_service.get_container_client(relay.settings.results_container))

    def request(job: str, destination: str | None):  # type: ignore[no-untyped-def]
        body: dict[str, object] = {"id": job, "query": QUERY}
        if destination is not None:
            body["destination"] = destination
        return decode_hunt_request(json.dumps(body), message_id="x", default_api="mde", now=relay.clock())

    job = "kept-" + uuid.uuid4().hex[:8]
    assert store.keep(request(job, "hook"), b'{"a": 1}', 7).endswith(pending_delivery_name(job))
    assert store.load(request(job, "hook")) == Kept(b'{"a": 1}', 7)
    assert isinstance(store.load(request(job, None)), Unusable)
    assert isinstance(store.load(request(job, "other")), Unusable)
    assert isinstance(store.load(request("never-" + job, "hook")), Unusable)
    store.keep(request(job, "hook"), b'{"a": 2}', None)   # a later render of the same job replaces it
    assert store.load(request(job, "hook")) == Kept(b'{"a": 2}', None)
    store.mark_sent(request(job, "hook"), relay.clock())
    assert isinstance(store.load(request(job, "hook")), Sent)
    assert isinstance(store.load(request(job, "other")), Unusable)   # the marker is bound to the destination too


def test_a_delivery_only_retry_signs_a_fresh_link_to_a_result_too_big_for_the_webhook(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    relay = relay_stack.make(HUNT_WEBHOOK_MAX_BYTES="2000", HUNT_LINK_LIFETIME="1m",
                             **webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook"))
    webhook_receiver.replies = [503, 200]
    webhook_receiver.reply_headers = {"Retry-After": "2"}
    job = "linked-" + uuid.uuid4().hex[:8]
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": "DeviceInfo | take 50", "api": API}))
    stats = drain(relay)
    assert [o.status for o in stats.outcomes] == ["requeued", "delivered"]
    first, second = (json.loads(r.body) for r in webhook_receiver.requests)
    assert first["results_url"] != second["results_url"]                 # signed again for the retry
    assert second["results_expires_at"] > first["results_expires_at"]
    assert {k: v for k, v in first.items() if not k.startswith("results_")} == \
        {k: v for k, v in second.items() if not k.startswith("results_")}
    linked = requests.get(second["results_url"], timeout=30)
    assert linked.status_code == 200 and json.loads(linked.content)["row_count"] == 50
    assert relay_stack.sandbox.counters.calls_to(API) == 1


def test_a_failure_envelope_the_webhook_did_not_take_is_delivered_again_without_running_the_query_again(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch):
    secret = new_secret()
    relay = relay_stack.make(**webhooks(relay_stack, secret, hook=webhook_receiver.url + "/hook"))
    asked = count_gate_admissions(relay, monkeypatch)
    webhook_receiver.replies = [503, 200]
    webhook_receiver.reply_headers = {"Retry-After": "1"}
    job = "failure-503-" + uuid.uuid4().hex[:8]
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": "DeviceInfo | wherex", "api": API}))
    stats = drain(relay)
    assert [(o.status, o.detail) for o in stats.outcomes] == [("failed", "QueryError"),
                                                               ("delivered", "delivery-only retry")]
    assert relay_stack.sandbox.counters.calls_to(API) == 1 and asked == [API]   # the query ran once
    first, second = webhook_receiver.requests
    assert first.body == second.body and first.header("webhook-id") == second.header("webhook-id")
    failure = json.loads(second.body)
    assert (failure["id"], failure["status"], failure["error"]["code"]) == (job, "failed", "QueryError")
    for request in (first, second):
        Webhook(secret).verify(request.body, request.headers)
    [record] = relay_stack.dead_letters()   # written once, before the first try: it holds the failure meanwhile
    assert (record["reason"], record["error"]["code"]) == ("QueryError", "QueryError")
    assert pending_body(relay, job) == b""


def test_a_failure_envelope_of_a_hunt_with_no_attempt_left_is_not_retried(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    relay = relay_stack.make(HUNT_MAX_ATTEMPTS="1",
                             **webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook"))
    webhook_receiver.replies = [503, 200]
    job = "failure-last-" + uuid.uuid4().hex[:8]
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": "DeviceInfo | wherex", "api": API}))
    stats = drain(relay)
    assert [o.status for o in stats.outcomes] == ["failed"]
    assert len(webhook_receiver.requests) == 1
    [record] = relay_stack.dead_letters()   # the answer that stays
    assert record["reason"] == "QueryError"
    assert pending_blobs(relay_stack) == []
    assert relay.hunt_queue.get_queue_properties().approximate_message_count == 0


def test_a_failure_envelope_never_replaces_a_result_that_waits_for_its_delivery(relay_stack: RelayStack):
    relay = relay_stack.make()
    store = PendingDeliveries(relay.blob_service.get_container_client(relay.settings.results_container))
    job = "poisoned-copy-" + uuid.uuid4().hex[:8]
    request = decode_hunt_request(json.dumps({"id": job, "query": QUERY}), message_id="x", default_api="mde",
                                  now=relay.clock())
    store.keep(request, b'{"results": ["the result"]}', 1)
    with pytest.raises(PendingConflict):   # the same request, but a failure envelope: the result stays
        store.keep(request, b'{"status": "failed"}', None, over_waiting=False)
    assert store.load(request) == Kept(b'{"results": ["the result"]}', 1)
    store.mark_sent(request, relay.clock())
    store.keep(request, b'{"status": "failed"}', None, over_waiting=False)   # once delivered, it may be used
    assert store.load(request) == Kept(b'{"status": "failed"}', None)


def test_a_poisoned_delivery_only_copy_keeps_its_result_when_the_failure_envelope_is_not_taken(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver):
    relay = relay_stack.make(**webhooks(relay_stack, new_secret(), hook=webhook_receiver.url + "/hook"))
    job = "poison-" + uuid.uuid4().hex[:8]
    store = PendingDeliveries(relay.blob_service.get_container_client(relay.settings.results_container))
    store.keep(decode_hunt_request(json.dumps({"id": job, "query": QUERY, "api": API}), message_id="x",
                                   default_api="mde", now=relay.clock()), b'{"results": ["kept"]}', 1)
    body = {"id": job, "query": QUERY, "api": API, "attempt": 2, "pending_delivery": pending_delivery_name(job)}
    body[MARK_FIELD] = relay.mark.sign(body)
    webhook_receiver.replies = [503]
    outcome = relay.handle_poison(json.dumps(body).encode(), message_id="p1", dequeue_count=6)
    assert (outcome.status, outcome.detail) == ("failed", "Poison")
    assert pending_body(relay, job) == b'{"results": ["kept"]}'   # the result is still there for the operator
    [record] = relay_stack.dead_letters()
    assert record["reason"] == "Poison"
