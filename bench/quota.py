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

The tenants run (issue [tenants]): one relay for three customer tenants (federated sign-in), each with its own quota
in the sandbox and in HUNT_TENANTS. Contoso is throttled hard (a tenth of the others' quota, a fifth of their
hunts); Fabrikam and Woodgrove have the quota above. All hunts wait on one queue, interleaved. For each tenant it
reports its makespan over its own theoretical minimum (its hunts / its quota rate) and its 429 share, so that one
tenant's quota is seen not to slow the others.

Run: .venv/bin/python bench/quota.py [--hunts 300] [--workers 4] [--concurrency 4] [--calls-per-window 20]
                                     [--window-seconds 10] [--mode all|both|gate|no-gate|tenants]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `python bench/...`

from bench.local_stack import ROOT, LocalStack, stop_workers

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


def run_workers(env: dict[str, str], args: argparse.Namespace, logs: Path, done: Callable[[], bool]) -> None:
    """`--workers` worker processes until `done()` (or `--timeout`), then SIGTERM each (a kill after 60 s)."""
    workers = []
    for n in range(args.workers):
        with (logs / f"worker-{n}.log").open("wb") as log:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "shared", "worker", "--concurrency", str(args.concurrency)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and not done():
            time.sleep(0.5)
    finally:
        stop_workers(workers, 60)


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
    run_workers(env, args, logs, lambda: len(stack.blob_names(container)) >= args.hunts)

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


TENANTS = {"contoso": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", 101),
           "fabrikam": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7002", 202),
           "woodgrove": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7003", 303)}
APP = "a1b2c3d4-0000-4000-8000-00000000abcd"
HARD = "contoso"   # the tenant throttled hard


@dataclass(frozen=True)
class TenantResult:
    name: str
    hunts: int
    makespan: float
    minimum: float
    calls: int
    throttled: int
    delivered: int


def run_tenants(stack: LocalStack, args: argparse.Namespace) -> list[TenantResult]:
    from sandbox.identity import SYSTEM_IDENTITY_CLIENT_ID
    from sandbox.tokens import object_id_for

    admin = stack.api + "/_sandbox/"
    requests.post(admin + "reset", timeout=30).raise_for_status()
    quotas: dict[str, tuple[int, float]] = {}
    for name, (tenant_id, seed) in TENANTS.items():
        requests.post(admin + "tenants", json={"tenant_id": tenant_id, "seed": seed}, timeout=60).raise_for_status()
        requests.post(admin + "apps", json={"tenant": tenant_id, "client_id": APP, "roles": ["ThreatHunting.Read.All"]},
                      timeout=30).raise_for_status()
        calls = max(1, args.calls_per_window // 10) if name == HARD else args.calls_per_window
        quotas[name] = (calls, args.window_seconds)
        requests.post(admin + "knobs", json={"tenant_quotas": {tenant_id: {
            "calls_per_window": calls, "window_seconds": args.window_seconds}}}, timeout=30).raise_for_status()
    requests.post(admin + "federated", json={"client_id": APP, "issuer": "https://sts.windows.net/sandbox-tenant/",
                                             "subject": object_id_for(SYSTEM_IDENTITY_CLIENT_ID)},
                  timeout=30).raise_for_status()
    env = {**os.environ, **stack.relay_env("managed_identity")}
    container = env["HUNT_RESULTS_CONTAINER"]
    env.update(
        AZURE_AUTHORITY_HOST=stack.authority, REQUESTS_CA_BUNDLE=stack.ca_bundle, HUNT_API="graph",
        HUNT_DESTINATIONS=json.dumps({f"{name}-results": {"type": "blob", "container": container}
                                      for name in TENANTS}),
        HUNT_TENANTS=json.dumps({name: {"tenant_id": tenant_id, "auth": "federated", "client_id": APP,
                                        "destinations": [f"{name}-results"],
                                        "quota": f"{quotas[name][0]}/{int(quotas[name][1])}s"}
                                 for name, (tenant_id, _) in TENANTS.items()}))
    stack.blobs().create_container(container)
    queue = stack.queue(env["HUNT_QUEUE"])
    queue.create_queue()
    counts = {name: max(1, args.hunts // 15) if name == HARD else args.hunts // 3 for name in TENANTS}
    order = [name for n in range(max(counts.values())) for name in TENANTS if n < counts[name]]
    for n, name in enumerate(order):
        queue.send_message(json.dumps({"id": f"{name}-{n:04d}", "tenant": name, "query": QUERY}))
    total = sum(counts.values())
    started = time.time()
    logs = Path(tempfile.mkdtemp(prefix="bench-quota-tenants-"))
    run_workers(env, args, logs, lambda: len(stack.blob_names(container)) >= total)
    print(f"  (tenants: worker logs in {logs})", file=sys.stderr)
    created = {b.name: b.creation_time for b in stack.blobs().get_container_client(container).list_blobs()}
    counters = requests.get(admin + "state", timeout=30).json()["counters"]
    results = []
    for name, (tenant_id, _) in TENANTS.items():
        mine = [t for blob, t in created.items() if blob.startswith(f"tenants/{name}/") and
                not blob.endswith(".failed.json")]
        finished = max(mine).timestamp() if mine else time.time()
        calls, seconds = quotas[name]
        results.append(TenantResult(name, counts[name], finished - started, counts[name] / (calls / seconds),
                                    counters["tenant_calls"].get(f"graph {tenant_id}", 0),
                                    counters["tenant_throttled"].get(f"graph {tenant_id}", 0), len(mine)))
    return results


def report_tenants(results: list[TenantResult], args: argparse.Namespace) -> None:
    print(f"tenants: one relay, {len(results)} tenants, {args.workers} worker processes x {args.concurrency}")
    for r in results:
        share = r.throttled / r.calls if r.calls else 0.0
        print(f"  {r.name:<10} {r.hunts:>4} hunts, quota {'hard: ' if r.name == HARD else ''}"
              f"{r.hunts / r.minimum * args.window_seconds:.0f} per {args.window_seconds:g} s: makespan "
              f"{r.makespan:6.1f} s over its minimum {r.minimum:5.1f} s = {r.makespan / r.minimum:.2f} x; "
              f"429s {r.throttled}/{r.calls} ({share:.1%}); delivered {r.delivered}")


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
    parser.add_argument("--mode", choices=("all", "both", "gate", "no-gate", "tenants"), default="all")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a run after this many seconds")
    args = parser.parse_args()
    modes = {"all": ("gate", "no-gate", "tenants"), "both": ("gate", "no-gate")}.get(args.mode, (args.mode,))
    print(f"{datetime.now():%Y-%m-%d %H:%M}: {args.hunts} hunts, {args.workers} worker processes x "
          f"{args.concurrency}, quota {args.calls_per_window} calls per {args.window_seconds:g} s window")
    with LocalStack(calls_per_window=args.calls_per_window, window_seconds=args.window_seconds) as stack:
        for mode in modes:
            if mode == "tenants":
                report_tenants(run_tenants(stack, args), args)
            else:
                report(run(stack, mode, args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
