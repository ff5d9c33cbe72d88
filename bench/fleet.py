"""Benchmark: the relay at fleet scale, beside a sleep-in-process peer (issue [fleet-perf], items 2 and 3).

16 worker processes drain 1,200 hunts of mixed cost on Graph, for 3 customer tenants (federated sign-in), against
the sandbox's quotas: per tenant 40 calls per 10 s window, and running time charged by the sandbox's cost model
(sandbox.knobs: 0.05 s per call + 0.25 s per 1,000 rows scanned, the answer taking as long as it is charged).
Contoso's running-time budget is tight (15 s per 30 s window); Fabrikam's and Woodgrove's are not. A cheap hunt
reads a small table (AlertInfo, EmailEvents: 0.06-0.10 s), an expensive one a big table (DeviceNetworkEvents,
DeviceProcessEvents: 0.30-0.55 s); one hunt in three is expensive, interleaved across tenants on one queue.

Two runs, same backlog, quotas, worker processes and concurrency:
    relay   `bench/fleet_worker.py`: the relay's own Relay and PortableWorker (as `python -m shared worker`), with a
            timing handler around relay.handle and counts of the quota gate's conflicts
    peer    `bench/peer_relay.py`: call inline, on a 429 sleep Retry-After (or 60 s), up to 5 tries, then give up

Every hunt's messages become visible at one moment aligned on the windows (the service's windows are epoch
aligned), so that both runs start alike. Per tenant it reports
    makespan / best possible   the start to the tenant's last delivery (webhook), over what a perfect scheduler
                               reaches with the windows as the service aligns them: the calls and the running time
                               each spent at the start of every window, no window's budget exceeded (a lower bound:
                               each budget alone), plus the cheapest hunt's own running time
    429s                       as a share of the tenant's calls (the sandbox's counters), running-time ones apart
    lost, failed, duplicates   no envelope and no dead letter; a failure envelope; an envelope delivered twice
and for the gate: conflicts (a conditional write refused because another process wrote first) per admission.
Against the peer: makespan, hunts lost or failed, and worker-seconds held (the handler's wall time per message,
summed: what a Functions plan bills).

Targets: makespan <= 1.05 x best possible per tenant; 429s <= 1% of calls; 0 lost; 0 duplicates; 0 lost where the
peer loses hunts; the relay's worker-seconds <= 1/5 of the peer's.

Run: .venv/bin/python bench/fleet.py [--hunts 1200] [--workers 16] [--concurrency 4] [--calls-per-window 40]
                                     [--window-seconds 10] [--tight-budget 15s/30s] [--budget 600s/30s]
                                     [--mode both|relay|peer] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `python bench/...`

from bench.local_stack import ROOT, LocalStack, stop_workers
from sandbox.identity import SYSTEM_IDENTITY_CLIENT_ID
from sandbox.tokens import object_id_for
from sandbox.webhook_receiver import ReceivedRequest, WebhookReceiver

TENANTS = {"contoso": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", 101),
           "fabrikam": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7002", 202),
           "woodgrove": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7003", 303)}
TIGHT = "contoso"
APP, SECRET = "a1b2c3d4-0000-4000-8000-00000000abcd", "fleet-app-secret"
PER_CALL, PER_1K_SCANNED = 0.05, 0.25
# (query, the tables it reads): one in three expensive
QUERIES = [
    ("AlertInfo | project AlertId, Title, Severity | take 5", ("AlertInfo",)),
    ("DeviceProcessEvents | summarize n = count() by FileName | top 5 by n", ("DeviceProcessEvents",)),
    ("EmailEvents | project NetworkMessageId, SenderFromAddress | take 5", ("EmailEvents",)),
    ("AlertInfo | summarize n = count() by Severity", ("AlertInfo",)),
    ("DeviceNetworkEvents | summarize n = count() by RemotePort | top 5 by n", ("DeviceNetworkEvents",)),
    ("EmailEvents | summarize n = count() by SenderFromAddress | top 3 by n", ("EmailEvents",)),
]
TARGET_RATIO, TARGET_429_SHARE, TARGET_HELD = 1.05, 0.01, 1 / 5
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def seconds_of(text: str) -> float:
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 15m or 1h")
    return float(match.group(1)) * _UNIT[match.group(2)]


def budgets_of(text: str) -> list[tuple[float, float]]:
    """'15s/30s,45s/2m' -> [(15, 30), (45, 120)]: running-time seconds per window seconds."""
    try:
        return [(seconds_of(budget), seconds_of(window))
                for budget, window in (part.split("/") for part in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of budget/window such as 15s/30s,3h/1d") from None


# --- the best possible -----------------------------------------------------------------------------------------

def earliest_start_of_last(total: float, windows: list[tuple[float, float]], start: float, whole: bool) -> float:
    """When a perfect scheduler makes its last call: from `start`, it spends what every window of this kind allows
    at each boundary (limit, seconds; epoch-aligned), never past a limit, until `total` is spent."""
    used = dict.fromkeys((seconds for _, seconds in windows), 0.0)
    index = {seconds: math.floor(start / seconds) for seconds in used}
    now, left = start, total
    for _ in range(1_000_000):
        room = min(limit - used[seconds] for limit, seconds in windows)
        take = min(math.floor(room) if whole else room, left)
        if take > 0:
            left -= take
            for seconds in used:
                used[seconds] += take
        if left <= 1e-9:
            return now
        now = min((index[seconds] + 1) * seconds for seconds in used)
        for seconds in used:
            if math.floor(now / seconds + 1e-9) != index[seconds]:
                index[seconds], used[seconds] = round(now / seconds), 0.0
    raise RuntimeError("the windows never let the backlog through")


# --- one run ---------------------------------------------------------------------------------------------------

class TimedReceiver(WebhookReceiver):
    """The webhook receiver, with each delivery's arrival time."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, str, bytes]] = []

    def start(self) -> TimedReceiver:
        super().start()
        return self

    def _record(self, request: ReceivedRequest) -> tuple[int, float, dict[str, str], bytes]:
        self.arrivals.append((time.time(), request.path, request.body))
        return super()._record(request)

    def clear(self) -> None:
        with self._lock:
            self.arrivals.clear()
            self.requests.clear()


@dataclass
class Hunt:
    id: str
    tenant: str
    query: str
    cost: float


@dataclass
class TenantFigures:
    name: str
    hunts: int
    running_time: float          # what its hunts cost, by the cost model
    best: float                  # the best possible makespan
    makespan: float = 0.0
    calls: int = 0
    throttled: int = 0
    running_time_throttled: int = 0
    charged: float = 0.0
    delivered: int = 0
    failed: int = 0
    lost: int = 0
    duplicates: int = 0
    per_window: list[int] = field(default_factory=list)   # deliveries in each call window from the start

    @property
    def ratio(self) -> float:
        return self.makespan / self.best if self.best else math.inf

    @property
    def share_429(self) -> float:
        return self.throttled / self.calls if self.calls else 0.0


@dataclass
class RunFigures:
    mode: str
    tenants: list[TenantFigures]
    held_seconds: float
    handled: int
    gate: dict[str, int] | None
    logs: Path
    phases: dict[str, list[float]] = field(default_factory=dict)   # name -> [calls, seconds], all workers
    cpu: dict[str, float] = field(default_factory=dict)   # CPU seconds in the run: workers, azurite, sandbox
    storage_calls: Counter[str] = field(default_factory=Counter)   # the relay's storage requests, "table PUT": n
    runs: list[list[Any]] = field(default_factory=list)   # every handler run: [started, ended, job, status, delay]
    notes: list[str] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        return max(t.makespan for t in self.tenants)

    @property
    def lost_or_failed(self) -> int:
        return sum(t.lost + t.failed for t in self.tenants)


class Fleet:
    def __init__(self, stack: LocalStack, receiver: TimedReceiver, args: argparse.Namespace) -> None:
        self.stack, self.receiver, self.args = stack, receiver, args
        self.admin = stack.api + "/_sandbox/"
        self.budgets = {name: args.tight_budget if name == TIGHT else args.budget for name in TENANTS}

    def configure_sandbox(self) -> dict[str, dict[str, int]]:
        """Counters and quotas to zero, then the tenants, the app (a secret for the peer, a federated credential
        for the relay) and each tenant's quota; returns the rows per table of each tenant's dataset."""
        requests.post(self.admin + "reset", timeout=60).raise_for_status()
        quotas = {}
        for name, (tenant_id, seed) in TENANTS.items():
            requests.post(self.admin + "tenants", json={"tenant_id": tenant_id, "seed": seed, "rows": self.args.rows},
                          timeout=120).raise_for_status()
            app = {"tenant": tenant_id, "client_id": APP, "secret": SECRET, "roles": ["ThreatHunting.Read.All"]}
            requests.post(self.admin + "apps", json=app, timeout=30).raise_for_status()
            (budget, window), *extra = self.budgets[name]
            quotas[tenant_id] = {"calls_per_window": self.args.calls_per_window,
                                 "window_seconds": self.args.window_seconds, "cpu_seconds_per_call": PER_CALL,
                                 "cpu_seconds_per_1k_rows_scanned": PER_1K_SCANNED, "cpu_budget_seconds": budget,
                                 "cpu_window_seconds": window, "cpu_extra_windows": [list(pair) for pair in extra],
                                 "cpu_latency_ratio": self.args.latency_ratio}
        requests.post(self.admin + "knobs", json={"tenant_quotas": quotas}, timeout=30).raise_for_status()
        requests.post(self.admin + "federated", json={"client_id": APP, "issuer": "https://sts.windows.net/sandbox-tenant/",
                                                      "subject": object_id_for(SYSTEM_IDENTITY_CLIENT_ID)},
                      timeout=30).raise_for_status()
        rows = requests.get(self.admin + "state", timeout=30).json()["table_rows"]
        return {name: rows[tenant_id] for name, (tenant_id, _) in TENANTS.items()}

    def backlog(self, rows: dict[str, dict[str, int]]) -> list[Hunt]:
        """`--hunts` hunts, a third per tenant, interleaved; the mix of QUERIES in turn within each tenant."""
        suffix = uuid.uuid4().hex[:6]
        hunts = []
        for n in range(self.args.hunts):
            name = list(TENANTS)[n % len(TENANTS)]
            query, tables = QUERIES[(n // len(TENANTS)) % len(QUERIES)]
            cost = PER_CALL + PER_1K_SCANNED * sum(rows[name][table] for table in tables) / 1000
            hunts.append(Hunt(f"{name}-{n:05d}-{suffix}", name, query, cost))
        return hunts

    def best_possible(self, hunts: list[Hunt], name: str, start: float) -> tuple[float, float]:
        """(best possible makespan, running time) of one tenant's hunts from `start`."""
        mine = [h for h in hunts if h.tenant == name]
        total = sum(h.cost for h in mine)
        calls = earliest_start_of_last(len(mine), [(self.args.calls_per_window, self.args.window_seconds)], start,
                                       whole=True)
        running = earliest_start_of_last(total, self.budgets[name], start, whole=False)
        cheapest = min(h.cost for h in mine) * self.args.latency_ratio
        return max(calls, running) - start + cheapest, total

    def relay_env(self) -> tuple[dict[str, str], list[str]]:
        from shared.core import tenants as tenant_settings

        notes = []
        paced = "runtime_budget" in getattr(tenant_settings, "_FIELDS", ())
        spec = {}
        for name, (tenant_id, _) in TENANTS.items():
            spec[name] = {"tenant_id": tenant_id, "auth": "federated", "client_id": APP,
                          "destinations": [f"{name}-hook"],
                          "quota": f"{self.args.calls_per_window}/{int(self.args.window_seconds)}s"}
            if paced:
                spec[name]["runtime_budget"] = ",".join(f"{b:g}s/{w:g}s" for b, w in self.budgets[name])
        notes.append("the relay paces running time (HUNT_TENANTS.runtime_budget)" if paced else
                     "the relay does not pace running time yet (HUNT_TENANTS has no runtime_budget field): "
                     "the gate paces calls only")
        env = {**os.environ, **self.stack.relay_env("managed_identity")}
        env.update(
            AZURE_AUTHORITY_HOST=self.stack.authority, REQUESTS_CA_BUNDLE=self.stack.ca_bundle, HUNT_API="graph",
            HUNT_DESTINATIONS=json.dumps({f"{name}-hook": {"type": "webhook",
                                                           "url": f"{self.receiver.url}/hooks/{name}"}
                                          for name in TENANTS}),
            HUNT_TENANTS=json.dumps(spec), HUNT_LOG_LEVEL="WARNING")
        return env, notes

    def peer_env(self, queue: str) -> dict[str, str]:
        return {**os.environ, "PEER_STORAGE": self.stack.azurite.connection_string, "PEER_QUEUE": queue,
                "PEER_API": self.stack.api, "PEER_WEBHOOK": self.receiver.url, "PEER_AUTHORITY": self.stack.authority,
                "PEER_TENANTS": json.dumps({name: tenant_id for name, (tenant_id, _) in TENANTS.items()}),
                "PEER_CLIENT_ID": APP, "PEER_SECRET": SECRET, "REQUESTS_CA_BUNDLE": self.stack.ca_bundle}

    def run(self, mode: str) -> RunFigures:
        rows = self.configure_sandbox()
        self.receiver.clear()
        hunts = self.backlog(rows)
        logs = Path(tempfile.mkdtemp(prefix=f"bench-fleet-{mode}-"))
        notes: list[str] = []
        if mode == "relay":
            env, notes = self.relay_env()
            queue_name, deadletters = env["HUNT_QUEUE"], env["HUNT_DEADLETTER_CONTAINER"]
            command = [sys.executable, "-m", "bench.fleet_worker", "--concurrency", str(self.args.concurrency)]
        else:
            queue_name, deadletters = "peer-" + uuid.uuid4().hex[:10], None
            env = self.peer_env(queue_name)
            command = [sys.executable, str(ROOT / "bench" / "peer_relay.py"), "--concurrency",
                       str(self.args.concurrency)]
        queue = self.stack.queue(queue_name)
        queue.create_queue()
        stack_cpu = self.stack.cpu_seconds()
        workers = []
        for n in range(self.args.workers):
            with (logs / f"worker-{n:02d}.log").open("wb") as log:
                workers.append(subprocess.Popen([*command, "--stats", str(logs / f"worker-{n:02d}.json")],
                                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        start = self.enqueue_visible_at_a_boundary(queue, hunts)
        expected = {h.id for h in hunts}
        try:
            deadline = time.time() + self.args.timeout
            while time.time() < deadline and not expected <= self.answered():
                time.sleep(0.5)
        finally:
            stop_workers(workers, 120)
        print(f"  ({mode}: worker logs in {logs})", file=sys.stderr)
        run = self.figures(mode, hunts, start, deadletters, logs, notes)
        run.cpu.update({name: seconds - stack_cpu[name] for name, seconds in self.stack.cpu_seconds().items()})
        return run

    def enqueue_visible_at_a_boundary(self, queue: Any, hunts: list[Hunt]) -> float:
        """Sends every hunt invisible until one moment on a window boundary (the longest window up to a minute,
        at least 10 s away, so that the workers have started); returns that moment."""
        windows = [self.args.window_seconds, *(w for b in self.budgets.values() for _, w in b)]
        align = max([w for w in windows if w <= 60] or [self.args.window_seconds])
        start = math.ceil((time.time() + 10 + len(hunts) / 200) / align) * align

        def send(hunt: Hunt) -> None:
            body = json.dumps({"id": hunt.id, "tenant": hunt.tenant, "query": hunt.query})
            queue.send_message(body, visibility_timeout=max(1, math.ceil(start - time.time())))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, hunts))
        if time.time() > start:
            print("  (warning: enqueueing ended after the start; the first hunts were visible early)",
                  file=sys.stderr)
        return float(start)

    def answered(self) -> set[str]:
        return {json.loads(body).get("id") for _, _, body in list(self.receiver.arrivals)}

    def figures(self, mode: str, hunts: list[Hunt], start: float, deadletters: str | None, logs: Path,
                notes: list[str]) -> RunFigures:
        counters = requests.get(self.admin + "state", timeout=30).json()["counters"]
        envelopes: dict[str, list[tuple[float, str]]] = {}
        for arrived, _, body in list(self.receiver.arrivals):
            envelope = json.loads(body)
            envelopes.setdefault(envelope["id"], []).append((arrived, envelope.get("status", "")))
        recorded = set()
        if deadletters is not None:
            container = self.stack.blobs().get_container_client(deadletters)
            names = [blob.name for blob in container.list_blobs()] if container.exists() else []
            recorded = {h.id for h in hunts if any(h.id in name for name in names)}
        tenants = []
        for name, (tenant_id, _) in TENANTS.items():
            mine = [h for h in hunts if h.tenant == name]
            best, running = self.best_possible(hunts, name, start)
            figures = TenantFigures(name, len(mine), running, best)
            arrivals = [t for h in mine for t, _ in envelopes.get(h.id, [])]
            figures.makespan = (max(arrivals) if arrivals else time.time()) - start
            windows = Counter(int((t - start) // self.args.window_seconds) for t in arrivals)
            figures.per_window = [windows[index] for index in range(max(windows, default=-1) + 1)]
            key = f"graph {tenant_id}"
            figures.calls = counters["tenant_calls"].get(key, 0)
            figures.throttled = counters["tenant_throttled"].get(key, 0)
            figures.running_time_throttled = counters["tenant_running_time_throttled"].get(key, 0)
            figures.charged = counters["tenant_running_seconds"].get(key, 0.0)
            for hunt in mine:
                got = envelopes.get(hunt.id, [])
                statuses = Counter(status for _, status in got)
                figures.delivered += statuses["succeeded"] > 0
                figures.failed += not statuses["succeeded"] and (bool(got) or hunt.id in recorded)
                figures.lost += not got and hunt.id not in recorded
                figures.duplicates += max(0, len(got) - 1)
            tenants.append(figures)
        held, handled, gate, cpu = 0.0, 0, None, 0.0
        storage_calls: Counter[str] = Counter()
        all_runs: list[list[Any]] = []
        phases: dict[str, list[float]] = {}
        for path in sorted(logs.glob("worker-*.json")):
            stats = json.loads(path.read_text())
            for name, (calls, seconds) in stats.get("phases", {}).items():
                total = phases.setdefault(name, [0, 0.0])
                total[0] += calls
                total[1] += seconds
            held += stats["held_seconds"]
            cpu += stats.get("cpu_seconds", 0.0)
            storage_calls.update(stats.get("storage_calls", {}))
            all_runs.extend(stats.get("runs", []))
            handled += stats["handled"]
            if stats.get("gate") is not None:
                gate = dict(Counter(gate or {}) + Counter(stats["gate"]))
        missing = self.args.workers - len(list(logs.glob("worker-*.json")))
        if missing:
            notes.append(f"{missing} worker(s) wrote no figures (killed?): worker-seconds are short by theirs")
        return RunFigures(mode, tenants, held, handled, gate, logs, notes=notes, phases=phases,
                          cpu={"workers": cpu} if cpu else {}, storage_calls=storage_calls,
                          runs=all_runs)


# --- the report ------------------------------------------------------------------------------------------------

def target(text: str, ok: bool) -> str:
    return f"  target: {text}: {'met' if ok else 'MISSED'}"


def report_run(run: RunFigures, args: argparse.Namespace) -> None:
    print(f"{run.mode}: {sum(t.hunts for t in run.tenants)} hunts, makespan {run.makespan:.1f} s, "
          f"{run.handled} handler runs, worker-seconds held {run.held_seconds:.1f} s")
    for note in run.notes:
        print(f"  note: {note}")
    if run.cpu:
        print("  CPU seconds in the run: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in run.cpu.items()))
    for t in run.tenants:
        budget = ",".join(f"{b:g} s/{w:g} s" for b, w in (args.tight_budget if t.name == TIGHT else args.budget))
        print(f"  {t.name:<10} {t.hunts} hunts, running time {t.running_time:.1f} s (budget {budget}"
              f"{', tight' if t.name == TIGHT else ''}): makespan {t.makespan:.1f} s over best possible "
              f"{t.best:.1f} s = {t.ratio:.2f} x ({t.makespan - t.best:+.1f} s)")
        print(f"{'':13}deliveries in each {args.window_seconds:g} s window: {' '.join(map(str, t.per_window))}")
        metered = (run.gate or {}).get(f"metered graph-tenant-{t.name}")
        print(f"  {'':<10} calls {t.calls}, 429s {t.throttled} ({t.share_429:.1%}; running-time "
              f"{t.running_time_throttled}), charged {t.charged:.1f} s"
              + ("" if metered is None else f" (the relay metered {metered:.1f} s)")
              + f"; delivered {t.delivered}, failed {t.failed}, lost {t.lost}, duplicates {t.duplicates}")
    if run.mode != "relay":
        return
    for t in run.tenants:
        print(target(f"{t.name} makespan {t.ratio:.2f} x <= {TARGET_RATIO:.2f} x best possible",
                     t.ratio <= TARGET_RATIO))
    for t in run.tenants:
        print(target(f"{t.name} 429s {t.share_429:.1%} <= {TARGET_429_SHARE:.0%} of calls",
                     t.share_429 <= TARGET_429_SHARE))
    lost, duplicates = sum(t.lost for t in run.tenants), sum(t.duplicates for t in run.tenants)
    print(target(f"0 lost ({lost})", lost == 0))
    print(target(f"0 duplicates ({duplicates})", duplicates == 0))
    if run.gate is None:
        print("  gate: conflicts per admission n/a (the quota gate has no admit/_write to count around)")
    else:
        calls = run.gate["admit_calls"]
        print(f"  gate: {run.gate['conflicts']} conflicts over {calls} admission requests "
              f"({run.gate['admitted']} admitted): {run.gate['conflicts'] / max(1, calls):.3f} per admission")
    if run.storage_calls:
        total = sum(run.storage_calls.values())
        print(f"  storage requests: {total} ({total / max(1, run.handled):.1f} per handler run): "
              + ", ".join(f"{name} {n}" for name, n in run.storage_calls.most_common()))
    if run.runs:
        report_pickup(run)
    if run.phases:
        print("  where the held time goes (wall seconds summed over handler runs; parts may nest):")
        for name, (calls, seconds) in sorted(run.phases.items(), key=lambda item: -item[1][1]):
            print(f"    {name:<30} {int(calls):6d} calls {seconds:8.1f} s ({seconds / max(1, calls) * 1000:6.1f} ms "
                  f"each), {seconds / max(run.held_seconds, 1e-9):.0%} of held")


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return f"median {at(0.5):.2f} s, p90 {at(0.9):.2f} s, max {ordered[-1]:.2f} s ({len(ordered)})"


def report_pickup(run: RunFigures) -> None:
    """How late requeued copies were taken up (a run's start after the copy became visible: the previous run's
    end plus its delay), and how long the delivering runs took."""
    by_job: dict[str, list[list[Any]]] = {}
    for entry in sorted(run.runs, key=lambda entry: entry[0]):
        by_job.setdefault(entry[2], []).append(entry)
    lags, handled = [], []
    for entries in by_job.values():
        for before, after in itertools.pairwise(entries):
            if before[4] is not None:
                lags.append(after[0] - (before[1] + before[4]))
        handled += [ended - started for started, ended, _, status, _ in entries if status == "delivered"]
    print(f"  requeued copies taken up after they became visible: {_spread(lags)}")
    print(f"  delivering handler runs took: {_spread(handled)}")


def report_against_peer(relay: RunFigures, peer: RunFigures) -> None:
    print("relay against the peer (same backlog, quotas, workers and concurrency):")
    for run in (relay, peer):
        print(f"  {run.mode:<6} makespan {run.makespan:6.1f} s, lost or failed {run.lost_or_failed:4d}, "
              f"worker-seconds held {run.held_seconds:8.1f} s")
    print(target(f"0 lost where the peer loses hunts (relay {relay.lost_or_failed}, peer {peer.lost_or_failed}"
                 + (", so this run does not show it" if peer.lost_or_failed == 0 else "") + ")",
                 relay.lost_or_failed == 0 and peer.lost_or_failed > 0))
    share = relay.held_seconds / peer.held_seconds if peer.held_seconds else math.inf
    print(target(f"relay worker-seconds {share:.3f} of the peer's (1/{1 / share if share else math.inf:.1f}) "
                 f"<= 1/{1 / TARGET_HELD:.0f}", share <= TARGET_HELD))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hunts", type=int, default=1200)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4, help="hunts per worker process at once (host.json's "
                        "batchSize)")
    parser.add_argument("--calls-per-window", type=int, default=40)
    parser.add_argument("--window-seconds", type=float, default=10.0)
    parser.add_argument("--tight-budget", type=budgets_of, default=budgets_of("15s/30s"),
                        help="contoso's running-time budgets, e.g. 15s/30s or 15s/30s,45s/2m")
    parser.add_argument("--budget", type=budgets_of, default=budgets_of("600s/30s"),
                        help="the other tenants' running-time budgets")
    parser.add_argument("--latency-ratio", type=float, default=1.0,
                        help="the sandbox's answer takes this fraction of the running time it charges")
    parser.add_argument("--rows", type=int, default=2_000, help="DeviceProcessEvents rows per tenant's dataset")
    parser.add_argument("--mode", choices=("both", "relay", "peer"), default="both")
    parser.add_argument("--quick", action="store_true", help="240 hunts, 8 workers: for development")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on a run after this many seconds")
    args = parser.parse_args()
    if args.quick:
        args.hunts, args.workers = min(args.hunts, 240), min(args.workers, 8)
    print(f"{datetime.now():%Y-%m-%d %H:%M}: {args.hunts} hunts on Graph for {len(TENANTS)} tenants, "
          f"{args.workers} worker processes x {args.concurrency}; quota per tenant {args.calls_per_window} calls "
          f"per {args.window_seconds:g} s; running time {PER_CALL:g} s per call + {PER_1K_SCANNED:g} s per 1,000 rows "
          f"scanned (answers take {args.latency_ratio:g} x that)")
    runs: dict[str, RunFigures] = {}
    receiver = TimedReceiver().start()
    try:
        with LocalStack(rows=2_000) as stack:
            fleet = Fleet(stack, receiver, args)
            for mode in ("relay", "peer") if args.mode == "both" else (args.mode,):
                runs[mode] = fleet.run(mode)
                report_run(runs[mode], args)
    finally:
        receiver.stop()
    if len(runs) == 2:
        report_against_peer(runs["relay"], runs["peer"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
