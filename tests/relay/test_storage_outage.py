"""Storage outages: Azurite (with on-disk persistence) stops in the middle of a run and comes back on the same
ports. The worker processes stay alive, back off their polling while storage is away (no crash loop, no tight
retry loop), resume when it returns, and every hunt is delivered once."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from sandbox.azurite import Azurite
from tests.relay.conftest import RelayStack
from tests.relay.worker_fleet import WorkerFleet, wait_until

OUTAGE_SECONDS = 6.0
WORKERS = 2
POLL_LOOPS = 2 * WORKERS   # each worker process polls the hunt queue and, beside it, the poison queue
UNREACHABLE = re.compile(r"queue unreachable \((\w+)\); polling again in ([0-9.]+) s")


@pytest.fixture
def persistent_azurite(tmp_path) -> Iterator[Azurite]:
    azurite = Azurite(location=tmp_path / "azurite-data").start()
    try:
        yield azurite
    finally:
        azurite.stop()


@pytest.mark.slow
def test_workers_outlive_a_storage_outage_back_off_and_lose_nothing(persistent_azurite: Azurite, sandbox, monkeypatch,
                                                                    tmp_path):
    stack = RelayStack(persistent_azurite, sandbox, monkeypatch)
    sandbox.knobs.quota.calls_per_window = 1000
    sandbox.knobs.faults.latency_seconds = 0.05
    hunts = 60
    relay = stack.make()
    jobs = [f"outage-{n:03d}-{uuid.uuid4().hex[:6]}" for n in range(hunts)]
    for job in jobs:
        relay.hunt_queue.send_message(json.dumps({"id": job, "query": "DeviceInfo | take 2", "api": "mde"}))

    with WorkerFleet(stack.env(), tmp_path / "workers", concurrency=2, lease_seconds=3) as fleet:
        fleet.start(WORKERS)
        assert wait_until(lambda: len(stack.results()) >= 10, timeout=60), fleet.logs()
        persistent_azurite.stop()
        went_away = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        alive_during = len(fleet.running)
        persistent_azurite.start()
        came_back = time.monotonic()
        assert wait_until(lambda: len(stack.results()) >= hunts, timeout=120, interval=0.25), fleet.logs()
        resumed_in = time.monotonic() - came_back
        alive_after = len(fleet.running)
        fleet.stop()
        delays = [float(m.group(2)) for w in fleet.workers for m in UNREACHABLE.finditer(w.output())]
        logs = fleet.logs()

    names = stack.results()
    api_calls = sandbox.counters.calls_to("mde", 200)
    print(f"\nstorage outage: {hunts} hunts, storage away {came_back - went_away:.1f} s, all delivered "
          f"{resumed_in:.1f} s after it returned; {len(delays)} failed polls, backing off {delays}; "
          f"{api_calls} API calls ({api_calls - hunts} repeated)")
    assert (alive_during, alive_after) == (WORKERS, WORKERS), logs          # no crash
    assert names == sorted(f"{job}.json" for job in jobs)       # nothing lost, each once
    assert delays, "no worker noticed the outage"
    # Backing off, not a tight loop: the delays grow (0.5 s doubling), so each polling loop fails a handful of
    # times during the outage (0.5 + 1 + 2 + 4 + 8 s covers 15 s), where a fixed 0.5 s poll would fail 15 times.
    assert max(delays) > min(delays) and len(delays) <= POLL_LOOPS * 5
