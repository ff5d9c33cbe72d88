"""One relay worker process for `bench/fleet.py`: `python -m shared worker`'s hunts and poison workers (the same
`Relay` and `PortableWorker`), with a timing handler around `relay.handle`, so that the bench can read what a
Functions plan bills: the handler's wall time per message, deferrals included.

It also counts the quota gate's optimistic-concurrency conflicts (a conditional write refused because another
instance wrote first) per admission, by wrapping the gate's `admit` and `_write` from outside: the relay exposes no
such count. When the gate no longer has those methods, the counts are left out (the bench prints n/a).

    python -m bench.fleet_worker --concurrency 4 --stats /tmp/x/worker-1.json   (settings from the environment)

On SIGTERM it finishes what it holds, then writes its figures to `--stats` as JSON:
    {"held_seconds", "handled", "by_status", "gate": {"admit_calls", "admitted", "conflicts"} | null}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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

        gate.admit, gate._write = counted_admit, counted_write
        self.installed = True

    def as_dict(self) -> dict[str, int] | None:
        if not self.installed:
            return None
        with self.lock:
            return {"admit_calls": self.admit_calls, "admitted": self.admitted, "conflicts": self.conflicts}


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
    relay = Relay(settings)
    relay.ensure_resources()
    lock = threading.Lock()
    held = [0.0]
    statuses: Counter[str] = Counter()

    def timed(raw: bytes, message_id: str, count: int) -> Outcome:
        started = time.perf_counter()
        status = "raised"
        try:
            outcome = relay.handle(raw, message_id=message_id, dequeue_count=count)
            status = outcome.status
            return outcome
        finally:
            with lock:
                held[0] += time.perf_counter() - started
                statuses[status] += 1

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
                   "gate": gate.as_dict()}
    args.stats.write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
