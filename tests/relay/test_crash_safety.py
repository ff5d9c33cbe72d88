"""Crash safety: worker processes killed at any moment lose nothing and deliver each job once.

- The kill test: 200 hunts, worker processes SIGKILLed at random moments 20 times (a new one started after each
  kill), then a final drain. Every job is at the blob sink exactly once (create-only names), none is lost.
- Webhooks: a worker killed while a delivery is under way redelivers it later with the same `webhook-id`.
- Poison: a message the handler fails on every time ends in `<queue>-poison`, then as a dead-letter record with
  its reason, written by the worker's poison loop.

Leases are short (`--lease-seconds 3`) so that the messages a killed worker held come back quickly. Storage itself
going away (an Azurite restart mid-run, on-disk persistence) is in test_storage_outage.py.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import defaultdict

import pytest

from shared.app.worker import PortableWorker
from tests.relay.conftest import RelayStack
from tests.relay.worker_fleet import WorkerFleet, wait_until

QUERY = "DeviceInfo | project DeviceId, DeviceName | take 3"
LEASE_SECONDS = 3


def enqueue_hunts(relay, count: int, prefix: str) -> list[str]:
    jobs = [f"{prefix}-{n:03d}-{uuid.uuid4().hex[:6]}" for n in range(count)]
    for job in jobs:
        relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, "api": "mde"}))
    return jobs


def queue_is_empty(relay) -> bool:
    return relay.hunt_queue.get_queue_properties().approximate_message_count == 0


@pytest.mark.slow
def test_twenty_kills_lose_nothing_and_deliver_each_job_once_at_the_blob_sink(relay_stack: RelayStack, tmp_path):
    hunts, kills, seed = 200, 20, random.randrange(1_000_000)
    rng = random.Random(seed)
    relay_stack.sandbox.knobs.faults.latency_seconds = 0.05   # widen the moments between call and delivery
    relay = relay_stack.make()
    jobs = enqueue_hunts(relay, hunts, "kill")
    with WorkerFleet(relay_stack.env(), tmp_path / "workers", concurrency=4, lease_seconds=LEASE_SECONDS) as fleet:
        fleet.start(3)
        started = time.monotonic()
        while fleet.kills < kills:
            time.sleep(rng.uniform(0.1, 0.5))
            # A worker still starting holds nothing: kill one that has begun running hunts.
            busy = [w for w in fleet.running if "hunt " in w.output()]
            if busy:
                fleet.kill(rng.choice(busy))
                fleet.start(1)
        delivered_during_kills = len(relay_stack.results())
        fleet.stop()
        killing_ended = time.monotonic()
        assert fleet.drain() == 0, fleet.logs()
        drained = time.monotonic()
        redelivered = fleet.count_in_logs("already delivered, completing the redelivered message")

    names = relay_stack.results()
    delivered = {name.removesuffix(".json") for name in names}
    api_calls = relay_stack.sandbox.counters.calls_to("mde", 200)
    print(f"\nkill test (seed {seed}): {hunts} hunts, {fleet.kills} kills ({delivered_during_kills} delivered while "
          f"killing), {len(delivered & set(jobs))} delivered, {len(set(jobs) - delivered)} lost, "
          f"{len(names) - len(set(names))} duplicate blobs, {api_calls} API calls ({api_calls - hunts} repeated "
          f"after a kill), {redelivered} redelivered messages completed as already delivered; "
          f"{killing_ended - started:.1f} s killing, {drained - killing_ended:.1f} s stopping and draining")
    assert 0 < delivered_during_kills < hunts, "the kills did not fall while hunts were being processed"
    assert delivered == set(jobs), f"lost: {sorted(set(jobs) - delivered)[:5]}"
    assert len(names) == hunts
    for job in rng.sample(jobs, 20):
        result = relay_stack.read_json(relay_stack.results_container, f"{job}.json")
        assert (result["id"], result["status"], result["row_count"]) == (job, "succeeded", 3)
    assert api_calls >= hunts
    assert relay_stack.dead_letters() == []
    assert queue_is_empty(relay) and relay.poison_queue.get_queue_properties().approximate_message_count == 0


def test_a_webhook_delivery_interrupted_by_a_kill_is_redelivered_with_the_same_webhook_id(relay_stack: RelayStack,
                                                                                        webhook_receiver, tmp_path):
    hunts, kills = 16, 3
    webhook_receiver.delay_seconds = 0.3   # the receiver has the request, the worker still waits for its answer
    settings = relay_stack.with_webhook(webhook_receiver.url)
    relay = relay_stack.make(**settings)
    jobs = enqueue_hunts(relay, hunts, "hook")
    with WorkerFleet(relay_stack.env(**settings), tmp_path / "workers", concurrency=4,
                     lease_seconds=LEASE_SECONDS) as fleet:
        fleet.start(1)
        for _ in range(kills):
            seen = len(webhook_receiver.requests)
            # Kill the moment a delivery has reached the receiver and before the worker has its answer.
            assert wait_until(lambda seen=seen: len(webhook_receiver.requests) > seen, timeout=30, interval=0.005), \
                fleet.logs()
            fleet.kill(fleet.running[0])
            fleet.start(1)
        assert wait_until(lambda: queue_is_empty(relay), timeout=60, interval=0.2), fleet.logs()
        fleet.stop()

    ids_per_job: dict[str, set[str]] = defaultdict(set)
    for request in webhook_receiver.requests:
        ids_per_job[json.loads(request.body)["id"]].add(request.header("webhook-id") or "")
    posts = len(webhook_receiver.requests)
    redelivered = posts - len(ids_per_job)
    print(f"\nwebhook kill test: {hunts} hunts, {kills} kills, {posts} deliveries, {redelivered} redeliveries")
    assert set(ids_per_job) == set(jobs)                                   # none lost
    assert all(len(ids) == 1 and "" not in ids for ids in ids_per_job.values())   # one webhook-id per job
    assert len({next(iter(ids)) for ids in ids_per_job.values()}) == hunts        # and a different one per job
    assert redelivered >= kills                           # each kill interrupted at least one delivery


def test_a_message_that_fails_every_time_is_poisoned_then_persisted_as_a_dead_letter(relay_stack: RelayStack):
    settings = {"HUNT_DESTINATIONS": json.dumps({"archive": {"type": "blob", "container": "archive-" +
                                                             uuid.uuid4().hex[:10]}}),
                "HUNT_DEFAULT_DESTINATION": "archive"}
    relay = relay_stack.make(**settings)
    container = relay.settings.destinations["archive"].container
    # The destination's container is deleted after the relay started: every delivery now fails in storage.
    relay_stack.blob_service().delete_container(container)
    relay.hunt_queue.send_message(json.dumps({"id": "doomed", "query": QUERY, "api": "mde"}))

    def handle(raw: bytes, message_id: str, count: int):
        return relay.handle(raw, message_id=message_id, dequeue_count=count)

    hunts = PortableWorker(relay.hunt_queue, relay.poison_queue, handle, concurrency=1, retry_visibility=0,
                           max_dequeue_count=relay.settings.max_dequeue_count)
    stats = hunts.run(drain=True)
    assert (stats.failed_handler, stats.poisoned) == (relay.settings.max_dequeue_count, 1)
    assert relay_stack.sandbox.counters.calls_to("mde", 200) == relay.settings.max_dequeue_count
    assert relay.poison_queue.get_queue_properties().approximate_message_count == 1

    # The poison loop, as `python -m shared worker` runs it beside the hunts.
    def handle_poison(raw: bytes, message_id: str, count: int):
        return relay.handle_poison(raw, message_id=message_id, dequeue_count=count)

    stop = threading.Event()
    poison = PortableWorker(relay.poison_queue, None, handle_poison, concurrency=1, retry_visibility=0)
    timer = threading.Timer(10, stop.set)   # a poison handler that keeps failing would loop: bound it
    timer.start()
    try:
        poison_stats = poison.run(drain=True, stop=stop)
    finally:
        timer.cancel()
    [record] = relay_stack.dead_letters()
    assert (record["key"], record["reason"], record["queue"]) == ("doomed", "Poison", relay.settings.queue)
    assert "could not be processed" in record["error"]["message"]
    assert json.loads(record["message"]["text"])["id"] == "doomed"
    assert dict(poison_stats.by_status) == {"failed": 1}
    assert relay.poison_queue.get_queue_properties().approximate_message_count == 0
    assert relay_stack.sandbox.counters.calls_to("mde", 200) == relay.settings.max_dequeue_count  # not run again
