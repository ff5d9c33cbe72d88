"""Relay-owned fields over the real stack: the relay's copies carry its mark and every instance of a deployment
verifies them (one stored key, or HUNT_MESSAGE_KEYS with rotation); a producer's `attempt`, `first_enqueued_at` or
`pending_delivery` without the mark is dropped, logged by name, and the hunt runs fresh. Inline webhook URLs are
signed with HUNT_INLINE_WEBHOOK_SECRETS.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid

import pytest
from standardwebhooks.webhooks import Webhook

from sandbox.webhook_receiver import WebhookReceiver
from shared.adapters.message_keys import KEYS_BLOB
from shared.app.config import load_settings
from shared.app.relay import Relay
from tests.relay.conftest import RelayStack, drain

QUERY = "DeviceInfo | take 2"


def requeued_copy(relay_stack: RelayStack, job: str, **env: str) -> str:
    """The copy a relay puts back on the queue after a transient fault (the sandbox answers 503 once); no jitter,
    so that the copy is visible at once."""
    relay = Relay(load_settings(relay_stack.env(**env)), rand=lambda: 0.0)
    relay.ensure_resources()
    relay_stack.sandbox.knobs.faults.status_next = 1
    outcome = relay.handle(json.dumps({"id": job, "query": QUERY}).encode(), message_id="m1", dequeue_count=1)
    assert outcome.status == "requeued"
    [copy] = relay.hunt_queue.receive_messages(max_messages=1)
    relay.hunt_queue.delete_message(copy)
    return str(copy.content)


def test_a_copy_made_by_one_instance_is_the_relays_own_for_another(relay_stack: RelayStack):
    job = "marked-" + uuid.uuid4().hex[:8]
    copy = requeued_copy(relay_stack, job)
    assert json.loads(copy)["relay_mark"].startswith("v1,")
    other = relay_stack.make()   # another instance over the same storage reads the same stored key
    outcome = other.handle(copy.encode(), message_id="m2", dequeue_count=1)
    assert outcome.status == "delivered"
    result = relay_stack.read_json(relay_stack.results_container, f"{job}.json")
    assert result["attempts"] == 2
    keys = relay_stack.blob_service().get_container_client(other.settings.state_container)
    assert [b.name for b in keys.list_blobs()] == [KEYS_BLOB]


def test_message_keys_from_settings_rotate_the_new_key_first_and_the_old_one_still_verifying(
        relay_stack: RelayStack):
    old, new = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    job = "rotated-" + uuid.uuid4().hex[:8]
    copy = requeued_copy(relay_stack, job, HUNT_MESSAGE_KEYS=old)
    rotated = relay_stack.make(HUNT_MESSAGE_KEYS=f"{new} {old}")
    assert rotated.handle(copy.encode(), message_id="m2", dequeue_count=1).status == "delivered"
    assert relay_stack.read_json(relay_stack.results_container, f"{job}.json")["attempts"] == 2
    stranger = relay_stack.make(HUNT_MESSAGE_KEYS=new)   # the old key dropped too soon: the copy runs fresh
    again = "rotated-" + uuid.uuid4().hex[:8]
    late = requeued_copy(relay_stack, again, HUNT_MESSAGE_KEYS=old)
    assert stranger.handle(late.encode(), message_id="m3", dequeue_count=1).status == "delivered"
    assert relay_stack.read_json(relay_stack.results_container, f"{again}.json")["attempts"] == 1


def test_forged_relay_fields_are_dropped_logged_by_name_and_the_hunt_runs_fresh(
        relay_stack: RelayStack, caplog: pytest.LogCaptureFixture):
    relay = relay_stack.make(HUNT_MAX_ATTEMPTS="3", HUNT_MAX_AGE="1h")
    job = "forged-" + uuid.uuid4().hex[:8]
    # Unmarked, these would make the hunt give up at once (attempt 3 of 3, enqueued a year ago).
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, "attempt": 3,
                                              "first_enqueued_at": "2025-12-01T00:00:00+00:00",
                                              "pending_delivery": f"pending/{job}.delivery.json"}))
    with caplog.at_level(logging.WARNING, logger="shared"):
        stats = drain(relay)
    assert [o.status for o in stats.outcomes] == ["delivered"]
    assert relay_stack.read_json(relay_stack.results_container, f"{job}.json")["attempts"] == 1
    [warning] = [r.getMessage() for r in caplog.records if "without the relay's mark" in r.getMessage()]
    assert "attempt, first_enqueued_at, pending_delivery" in warning and "2025" not in warning


def test_inline_webhook_urls_are_signed_with_the_inline_secrets(relay_stack: RelayStack,
                                                                webhook_receiver: WebhookReceiver):
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    relay = relay_stack.make(HUNT_WEBHOOK_ALLOWED_HOSTS="127.0.0.1", HUNT_INLINE_WEBHOOK_SECRETS=secret)
    job = "inline-" + uuid.uuid4().hex[:8]
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, "destination": webhook_receiver.url + "/x"}))
    assert [o.status for o in drain(relay).outcomes] == ["delivered"]
    [request] = webhook_receiver.requests
    Webhook(secret).verify(request.body, request.headers)
    assert json.loads(request.body)["id"] == job
