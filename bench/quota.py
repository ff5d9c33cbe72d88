"""Benchmark: draining a backlog at the tenant's quota rate (issue [throttling], Measure).

300 hunts wait on the queue; 4 worker processes (`python -m shared worker`) drain it against the sandbox, whose
quota is scaled down to 20 calls per 10 s window (epoch-aligned, like the service's). The run is made twice in the
same invocation: with the fleet-wide quota gate (HUNT_QUOTA_WINDOWS matching the quota) and without it
(HUNT_QUOTA_GATE=false). For each it reports

    makespan / minimum   from the workers' start to the last result blob's creation, over hunts / quota rate;
                         beside it the best possible with epoch-aligned windows (the last window's calls at its
                         start), and how far the run was from that
    429 share            calls answered 429 over all hunting API calls
    lost                 hunts with neither a result nor a failure blob at the end
    failed               hunts that ended with a failure envelope (for example "gave up")
    run twice            successful API calls beyond one per hunt (a hunt queried twice)
    duplicate blobs      result blobs listed twice at the sink (names are create-only: expected 0)
    per window           results delivered in each quota window, to see where time went

Targets with the gate: makespan <= 1.10 x minimum, 429s <= 3% of calls, 0 lost, 0 duplicates.

Run: .venv/bin/python bench/quota.py [--hunts 300] [--workers 4] [--concurrency 4] [--calls-per-window 20]
                                     [--window-seconds 10] [--mode both|gate|no-gate]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `python bench/...`

from bench.local_stack import ROOT, LocalStack

QUERY = "DeviceInfo | project DeviceId, DeviceName | take 3"
TARGET_RATIO, TARGET_429_SHARE = 1.10, 0.03


@dataclass(frozen=True)
class Result:
    mode: str
    hunts: int
    makespan: float
    minimum: float
    ideal: float
    calls: int
    throttled: int
    delivered: int
    failed: int
    lost: int
    repeated: int
    duplicates: int
    per_window: list[int]

    @property
    def ratio(self) -> float:
        return self.makespan / self.minimum

    @property
    def share_429(self) -> float:
        return self.throttled / self.calls if self.calls else 0.0


def hunting_calls(stack: LocalStack) -> Counter[int]:
    """Answers of the hunting endpoint (mde), by status."""
    state = requests.get(stack.api + "/_sandbox/state", timeout=30).json()
    return Counter({int(status): n for status, n in state["counters"]["calls"].get("mde", {}).items()})


def run(stack: LocalStack, mode: str, args: argparse.Namespace) -> Result:
    gate = {"HUNT_QUOTA_WINDOWS": f"{args.calls_per_window}/{int(args.window_seconds)}s"} if mode == "gate" \
        else {"HUNT_QUOTA_GATE": "false"}
    env = {**os.environ, **stack.relay_env("managed_identity", **gate)}
    container = env["HUNT_RESULTS_CONTAINER"]
    requests.post(stack.api + "/_sandbox/reset", timeout=30).raise_for_status()   # counters to zero

    stack.blobs().create_container(container)
    queue = stack.queue(env["HUNT_QUEUE"])
    queue.create_queue()
    jobs = [f"quota-{n:04d}-{uuid.uuid4().hex[:6]}" for n in range(args.hunts)]
    for job in jobs:
        queue.send_message(json.dumps({"id": job, "query": QUERY, "api": "mde"}))

    logs = Path(tempfile.mkdtemp(prefix=f"bench-quota-{mode}-"))
    started = time.time()
    workers = []
    for n in range(args.workers):
        with (logs / f"worker-{n}.log").open("wb") as log:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "shared", "worker", "--concurrency", str(args.concurrency)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if len(stack.blob_names(container)) >= args.hunts:
                break
            time.sleep(0.5)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(10)

    blobs = list(stack.blobs().get_container_client(container).list_blobs())
    created = {b.name: b.creation_time for b in blobs}
    delivered = {name.removesuffix(".json") for name in created if not name.endswith(".failed.json")}
    failed = {name.removesuffix(".failed.json") for name in created if name.endswith(".failed.json")}
    finished = max(created.values()).timestamp() if created else time.time()
    answered = hunting_calls(stack)
    rate = args.calls_per_window / args.window_seconds
    windows = Counter(math.floor(t.timestamp() / args.window_seconds) for t in created.values())
    first = math.floor(started / args.window_seconds)
    per_window = [windows.get(first + n, 0) for n in range(max(windows, default=first) - first + 1)]
    # With epoch-aligned windows the last window's calls go at its very start: the best possible makespan ends
    # at the start of window ceil(hunts / quota) - 1, counted from the window the run started in.
    ideal = max(0.0, (first + math.ceil(args.hunts / args.calls_per_window) - 1) * args.window_seconds - started)
    print(f"  ({mode}: worker logs in {logs})", file=sys.stderr)
    return Result(mode, args.hunts, finished - started, args.hunts / rate, ideal, sum(answered.values()),
                  answered[429],
                  len(delivered & set(jobs)), len(failed & set(jobs)), len(set(jobs) - delivered - failed),
                  answered[200] - len(delivered), len(blobs) - len(created), per_window)


def report(result: Result, args: argparse.Namespace) -> None:
    print(f"{result.mode}: {result.hunts} hunts, makespan {result.makespan:.1f} s, minimum {result.minimum:.0f} s "
          f"-> {result.ratio:.2f} x minimum (best possible with aligned windows {result.ideal:.1f} s, "
          f"{result.makespan - result.ideal:+.1f} s)")
    print(f"  API calls {result.calls}, 429s {result.throttled} ({result.share_429:.1%}); "
          f"delivered {result.delivered}, failed {result.failed}, lost {result.lost}, run twice {result.repeated}, "
          f"duplicate blobs {result.duplicates}")
    print(f"  results per {args.window_seconds:g} s window (quota {args.calls_per_window}): {result.per_window}")
    if result.mode == "gate":
        checks = {f"makespan <= {TARGET_RATIO:.2f} x minimum": result.ratio <= TARGET_RATIO,
                  f"429s <= {TARGET_429_SHARE:.0%} of calls": result.share_429 <= TARGET_429_SHARE,
                  "0 lost": result.lost == 0, "0 duplicates": result.duplicates == 0}
        print("  targets: " + "; ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in checks.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hunts", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--calls-per-window", type=int, default=20)
    parser.add_argument("--window-seconds", type=float, default=10.0)
    parser.add_argument("--mode", choices=("both", "gate", "no-gate"), default="both")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a run after this many seconds")
    args = parser.parse_args()
    modes = ("gate", "no-gate") if args.mode == "both" else (args.mode,)
    print(f"{datetime.now():%Y-%m-%d %H:%M}: {args.hunts} hunts, {args.workers} worker processes x "
          f"{args.concurrency}, quota {args.calls_per_window} calls per {args.window_seconds:g} s window")
    with LocalStack(calls_per_window=args.calls_per_window, window_seconds=args.window_seconds) as stack:
        for mode in modes:
            report(run(stack, mode, args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
