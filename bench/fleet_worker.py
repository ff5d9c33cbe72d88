"""One relay worker process for `bench/fleet.py`: `python -m shared worker`'s hunts and poison workers (the same
`Relay` and `PortableWorker`), with a timing handler around `relay.handle`, so that the bench can read what a
Functions plan bills: the handler's wall time per message, deferrals included.

It also counts the quota gate's optimistic-concurrency conflicts (a conditional write refused because another
instance wrote first) per admission, by wrapping the gate's `admit` and `_write` from outside: the relay exposes no
such count. When the gate no longer has those methods, the counts are left out (the bench prints n/a).

    python -m bench.fleet_worker --concurrency 4 --stats /tmp/x/worker-1.json   (settings from the environment)

It also times, from outside, the parts of a handler run that wait (PHASES: the ledger, the gate, the API call,
the webhook, the requeue, the observers), so that the bench can say where the held time goes.

On SIGTERM it finishes what it holds, then writes its figures to `--stats` as JSON:
    {"held_seconds", "handled", "by_status", "gate": {"admit_calls", "admitted", "conflicts"} | null,
     "phases": {name: [calls, seconds]}, "storage_calls": {"table PUT": n, ...}, "cpu_seconds",
     "runs": [[started, ended, job id, status, delay], ...]}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from shared.app.config import load_settings
from shared.app.relay import Relay
from shared.app.worker import PortableWorker
from shared.core.outcome import Outcome


class GateCounts:
    """Admissions and conflicts of the quota gate in this process (a wrapper around the gate's methods)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.admit_calls = self.admitted = self.conflicts = 0
        self.metered: dict[str, float] = {}   # running time told to each gate (its key), by the relay's meter
        self.installed = False

    def install(self) -> None:
        from shared.adapters import quota_table

        gate = getattr(quota_table, "QuotaGate", None)
        if gate is None or not hasattr(gate, "admit") or not hasattr(gate, "_write"):
            return
        admit, write, counts = gate.admit, gate._write, self

        def counted_admit(self: Any, *args: Any, **kwargs: Any) -> Any:
            verdict = admit(self, *args, **kwargs)
            with counts.lock:
                counts.admit_calls += 1
                counts.admitted += type(verdict).__name__ == "Admit"
            return verdict

        def counted_write(self: Any, *args: Any, **kwargs: Any) -> Any:
            written = write(self, *args, **kwargs)
            if written is False:
                with counts.lock:
                    counts.conflicts += 1
            return written

        spent = getattr(gate, "spent", None)

        def metered_spent(self: Any, seconds: float, *args: Any, **kwargs: Any) -> Any:
            with counts.lock:
                counts.metered[self._key] = counts.metered.get(self._key, 0.0) + seconds
            return spent(self, seconds, *args, **kwargs)

        gate.admit, gate._write = counted_admit, counted_write
        if spent is not None:
            gate.spent = metered_spent
        self.installed = True

    def as_dict(self) -> dict[str, int] | None:
        if not self.installed:
            return None
        with self.lock:
            return {"admit_calls": self.admit_calls, "admitted": self.admitted, "conflicts": self.conflicts,
                    **{f"metered {key}": seconds for key, seconds in self.metered.items()}}


# (module, class, method) timed around: where a handler run's wall time goes
PHASES = [
    ("shared.adapters.job_ledger", "JobLedger", "begin"),
    ("shared.adapters.job_ledger", "LedgerObserver", "__call__"),
    ("shared.adapters.quota_table", "QuotaGates", "admit"),
    ("shared.adapters.quota_table", "QuotaGates", "spent"),
    ("shared.adapters.quota_table", "QuotaGates", "throttled"),
    ("shared.adapters.hunting_client", "HuntingClient", "run"),
    ("shared.delivery.webhook", "WebhookSink", "prepare_result"),
    ("shared.delivery.webhook", "WebhookSink", "send"),
    ("shared.app.endings", "HuntEndings", "requeue"),
]


class PhaseTimes:
    """Calls and wall seconds of each PHASES method in this process (the ones that no longer exist are skipped)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = {}

    def install(self) -> None:
        import importlib

        for module_name, class_name, method in PHASES:
            cls = getattr(importlib.import_module(module_name), class_name, None)
            original = getattr(cls, method, None)
            if original is None:
                continue
            name = f"{class_name}.{method}"
            self.times[name] = [0, 0.0]
            setattr(cls, method, self._timed(name, original))

    def _timed(self, name: str, original: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                took = time.perf_counter() - started
                with self.lock:
                    self.times[name][0] += 1
                    self.times[name][1] += took
        return timed

    def as_dict(self) -> dict[str, list[float]]:
        with self.lock:
            return {name: list(pair) for name, pair in self.times.items()}


class StorageCalls:
    """Storage requests this process sent, by service and method ("table PUT"), counted around the storage
    session's `request` (shared.adapters.http_session.DirectSession; requests to other hosts, the hunting API's,
    are not counted); skipped when it has none."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def install(self) -> None:
        from shared.adapters import http_session

        session = getattr(http_session, "DirectSession", None)
        original = getattr(session, "request", None)
        if original is None:
            return
        counts = self
        connection = os.environ.get("AzureWebJobsStorage", "")  # noqa: SIM112  (the Functions setting's own name)
        endpoints = dict(part.split("=", 1) for part in connection.split(";") if "=" in part)
        services = {endpoints[f"{name.capitalize()}Endpoint"].rstrip("/"): name
                    for name in ("blob", "queue", "table") if f"{name.capitalize()}Endpoint" in endpoints}

        def counted(self: Any, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:
            text = str(url)
            service = next((name for base, name in services.items() if text.startswith(base)), None)
            if service is not None:   # the hunting API's calls go over such a session too: not counted here
                with counts.lock:
                    counts.counts[f"{service} {method}"] += 1
            return original(self, method, url, *args, **kwargs)

        session.request = counted

    def as_dict(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease-seconds", type=int, default=60)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()
    settings = load_settings(os.environ)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    gate = GateCounts()
    gate.install()
    phases = PhaseTimes()
    phases.install()
    storage_calls = StorageCalls()
    storage_calls.install()
    relay = Relay(settings)
    relay.ensure_resources()
    lock = threading.Lock()
    held = [0.0]
    statuses: Counter[str] = Counter()

    runs: list[list[Any]] = []   # [started, ended (epoch seconds), job id, status, delay or None] per handler run

    def timed(raw: bytes, message_id: str, count: int) -> Outcome:
        started, wall = time.perf_counter(), time.time()
        status, job, delay = "raised", "", None
        try:
            outcome = relay.handle(raw, message_id=message_id, dequeue_count=count)
            status, job, delay = outcome.status, outcome.job_id, outcome.delay
            return outcome
        finally:
            with lock:
                held[0] += time.perf_counter() - started
                statuses[status] += 1
                runs.append([wall, time.time(), job, status, delay])

    hunts = PortableWorker(relay.hunt_queue, relay.poison_queue, timed, concurrency=args.concurrency,
                           max_dequeue_count=settings.max_dequeue_count, lease_seconds=args.lease_seconds)
    poison = PortableWorker(
        relay.poison_queue, None,
        lambda raw, message_id, count: relay.handle_poison(raw, message_id=message_id, dequeue_count=count),
        concurrency=1, lease_seconds=args.lease_seconds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    poison_thread = threading.Thread(target=poison.run, kwargs={"stop": stop}, daemon=True)
    poison_thread.start()
    hunts.run(stop=stop)
    poison_thread.join(10)
    with lock:
        figures = {"held_seconds": held[0], "handled": sum(statuses.values()), "by_status": dict(statuses),
                   "gate": gate.as_dict(), "phases": phases.as_dict(),
                   "storage_calls": storage_calls.as_dict(), "runs": runs,
                   "cpu_seconds": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}
    args.stats.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
