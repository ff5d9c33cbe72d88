"""Benchmark: the relay's own CPU per hunt, beside a naive relay (issue [pipeline], Measure; [fleet-perf]).

500 small hunts (a few rows each) go through the portable worker against the sandbox. Two figures per hunt: the
relay's CPU (the handler's thread while in it, `time.thread_time()`, plus the process's other long-lived threads
that are not the worker's: the telemetry's exporters), which is what a Functions Python worker spends (the host
makes the queue calls there); and the process's CPU (`time.process_time()`, every thread), which adds the portable
worker's receive, delete and lease calls. Azurite and the sandbox run in child processes of their own, so their
CPU is not counted; the sandbox's quota and the relay's quota gate (on, as deployed, with a per-minute and a
per-hour window) are raised out of the way.

The naive baseline runs in the same process and the same run, on the same worker (same queue work), against the
same sandbox and storage, but does what a simple relay does: for each hunt it builds a credential (and so fetches
a token) and a `requests` session, posts the query, parses the whole response and uploads the result blob.

Both credentials are measured: the managed identity (a plain-http token endpoint on the host, as in App Service)
and an app secret (https to the token authority). The hunting API is https, as Microsoft's are (`--api-scheme
http` for plain http on loopback): a naive session per hunt pays a TLS handshake per hunt, the relay's pooled one
does not. Certificates are verified against the public CA bundle plus the sandbox's certificate, as a real host
verifies against its bundle.

The relay runs in up to three configurations: `full`, the job ledger (a begin and an outcome write per hunt, issue
[front-door]) and telemetry (issue [operations]: the SDK's tracer and meter providers, a span per hunt with its
child spans and the metrics, exported in batches to an exporter that discards them, so that recording and
batching are counted and no network is); `ledger`, the ledger without telemetry; `bare`, neither
(HUNT_JOB_LEDGER=false, no exporter). Every configuration and the naive relay run `--rounds` times, the order
rotated from round to round; the median and the range are printed.

Targets: at most 10 ms of relay CPU per hunt, and at least 5 times less than the naive baseline.

Run: .venv/bin/python bench/overhead.py [--hunts 500] [--auth managed_identity|client_secret|both]
                                        [--api-scheme https|http] [--concurrency 4] [--warmup 30]
                                        [--rounds 3] [--configs full,ledger,bare]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from azure.core.credentials import TokenCredential
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.storage.blob import ContainerClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `python bench/...`

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.local_stack import LocalStack, apply_env, restore_env
from shared.adapters.telemetry import Telemetry
from shared.app.config import load_settings
from shared.app.relay import Relay
from shared.app.worker import PortableWorker
from shared.core.apis import APIS
from shared.core.outcome import Cause, Outcome

QUERY = "DeviceInfo | project DeviceId, DeviceName, OSPlatform | take 5"
TARGET_MS, TARGET_RATIO = 10.0, 5.0
# The gate stays on with the default's shape (a per-minute and a per-hour window), its limits out of the way.
RAISED_QUOTA = "1000000/60s,1000000/1h"
Handler = Callable[[bytes, str, int], Outcome]


@dataclass(frozen=True)
class Run:
    name: str
    hunts: int
    cpu_seconds: float       # the whole process: the relay, plus the portable worker's queue calls
    relay_seconds: float     # the handler's threads while in it, and the telemetry's export threads
    wall_seconds: float

    @property
    def cpu_ms_per_hunt(self) -> float:
        return self.cpu_seconds * 1000 / self.hunts

    @property
    def relay_ms_per_hunt(self) -> float:
        return self.relay_seconds * 1000 / self.hunts


class HandlerClock:
    """The CPU time of each handler call, on its own thread (time.thread_time), summed; and the CPU time of the
    process's other long-lived threads that are not the worker's (the telemetry's span and metric exporters),
    read from their per-thread clocks. Together: what the relay spends, whatever the queue client around it."""

    WORKER_THREADS = ("MainThread", "hunt", "lease-")

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._lock = threading.Lock()
        self.seconds = 0.0

    def __call__(self, raw: bytes, message_id: str, dequeue_count: int) -> Outcome:
        started = time.thread_time()
        try:
            return self._handler(raw, message_id, dequeue_count)
        finally:
            spent = time.thread_time() - started
            with self._lock:
                self.seconds += spent

    @classmethod
    def background(cls) -> dict[int, float]:
        clocks = {}
        for thread in threading.enumerate():
            if thread.ident is not None and not thread.name.startswith(cls.WORKER_THREADS):
                with contextlib.suppress(OSError):
                    clocks[thread.ident] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        return clocks


def enqueue(stack: LocalStack, queue_name: str, hunts: int) -> None:
    queue = stack.queue(queue_name)
    for n in range(hunts):
        queue.send_message(json.dumps({"id": f"ovh-{n:04d}-{uuid.uuid4().hex[:6]}", "query": QUERY, "api": "mde"}))


@dataclass
class Contender:
    """One configuration (or the naive relay) on its own queue and container, measured in every round."""

    name: str
    stack: LocalStack
    relay: Relay
    handler: Handler
    concurrency: int
    delivered: int = 0

    def drain(self, hunts: int) -> tuple[float, float, float]:
        enqueue(self.stack, self.relay.settings.queue, hunts)
        clock = HandlerClock(self.handler)
        worker = PortableWorker(self.relay.hunt_queue, self.relay.poison_queue, clock, concurrency=self.concurrency,
                                max_dequeue_count=self.relay.settings.max_dequeue_count)
        background = HandlerClock.background()
        cpu, wall = time.process_time(), time.perf_counter()
        stats = worker.run(drain=True)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        after = HandlerClock.background()
        spent_elsewhere = sum(after[ident] - before for ident, before in background.items() if ident in after)
        self.delivered += hunts
        delivered = len(self.stack.blob_names(self.relay.settings.results_container))
        if stats.processed != hunts or delivered != self.delivered:
            raise SystemExit(f"{self.name}: {stats.processed} processed, {delivered} delivered of {self.delivered}")
        return cpu, clock.seconds + spent_elsewhere, wall

    def measured(self, hunts: int) -> Run:
        cpu, relay_cpu, wall = self.drain(hunts)
        return Run(self.name, hunts, cpu, relay_cpu, wall)


def naive_handler(stack: LocalStack, auth: str, api_scheme: str, results: ContainerClient) -> Handler:
    api = APIS["mde"]
    url, scope = stack.api_base(api_scheme) + api.path, api.scope("public")

    def credential() -> TokenCredential:
        if auth == "client_secret":  # verifies the authority against REQUESTS_CA_BUNDLE, like the relay's
            return ClientSecretCredential("sandbox-tenant", "sandbox-client", "sandbox-secret",
                                          authority=stack.authority, disable_instance_discovery=True)
        return ManagedIdentityCredential()

    def handle(raw: bytes, message_id: str, dequeue_count: int) -> Outcome:
        hunt: dict[str, Any] = json.loads(raw)
        token = credential().get_token(scope).token
        with requests.Session() as session:
            response = session.post(url, json={"Query": hunt["query"]}, timeout=(10, 180),
                                    headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        answer = response.json()
        envelope = {"id": hunt["id"], "status": "succeeded", "api": "mde", "query": hunt["query"],
                    "row_count": len(answer["Results"]), "schema": answer["Schema"], "results": answer["Results"]}
        results.upload_blob(f"{hunt['id']}.json", json.dumps(envelope).encode(), overwrite=False)
        return Outcome(hunt["id"], Cause.DELIVERED)

    return handle


def handler_of(relay: Relay) -> Handler:
    def handle(raw: bytes, message_id: str, dequeue_count: int) -> Outcome:
        return relay.handle(raw, message_id=message_id, dequeue_count=dequeue_count)

    return handle


class _Discard(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _DiscardMetrics(MetricExporter):
    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def discarding_telemetry(queue: str) -> Telemetry:
    """The SDK's providers as Azure Monitor or OTLP would use them (batched spans, periodic metrics), exporting
    to nothing."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))
    meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(_DiscardMetrics(),
                                                                                 export_interval_millis=10_000)])
    return Telemetry(tracer_provider, meter_provider, queue=queue, exporter="discard")


CONFIGS = {"full": (True, True), "ledger": (True, False), "bare": (False, False)}   # (ledger, telemetry)


def measure(stack: LocalStack, hunts: int, auth: str, api_scheme: str, concurrency: int, warmup: int,
            configs: tuple[str, ...], rounds: int) -> tuple[dict[str, list[Run]], float]:
    """Every configuration and the naive relay, `rounds` times each, the order rotated from round to round so that
    drift on the shared cores touches all of them alike."""
    env = stack.relay_env(auth, api_scheme=api_scheme, HUNT_QUOTA_WINDOWS=RAISED_QUOTA)
    previous = apply_env(env)  # azure-identity and requests read the identity endpoint and CA bundle from here
    try:
        contenders: list[Contender] = []
        startup_ms = 0.0
        for config in configs:
            ledger, telemetry = CONFIGS[config]
            config_env = {**stack.relay_env(auth, api_scheme=api_scheme, HUNT_QUOTA_WINDOWS=RAISED_QUOTA),
                          "HUNT_JOB_LEDGER": "true" if ledger else "false"}
            started = time.process_time()
            settings = load_settings(config_env)
            relay = Relay(settings, telemetry=discarding_telemetry(settings.queue) if telemetry else None)
            relay.ensure_resources()
            startup_ms = (time.process_time() - started) * 1000
            contenders.append(Contender(config, stack, relay, handler_of(relay), concurrency))
        naive_relay = Relay(load_settings({**stack.relay_env(auth, api_scheme=api_scheme), "HUNT_JOB_LEDGER": "false"}))
        naive_relay.ensure_resources()
        results = stack.blobs().get_container_client(naive_relay.settings.results_container)
        contenders.append(Contender("naive", stack, naive_relay, naive_handler(stack, auth, api_scheme, results),
                                    concurrency))
        for contender in contenders:   # first connections, the token, lazy imports: not measured
            contender.drain(warmup)
        runs: dict[str, list[Run]] = {contender.name: [] for contender in contenders}
        for round_ in range(rounds):
            shift = round_ % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                runs[contender.name].append(contender.measured(hunts))
        return runs, startup_ms
    finally:
        restore_env(previous)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hunts", type=int, default=500)
    parser.add_argument("--auth", choices=("managed_identity", "client_secret", "both"), default="both")
    parser.add_argument("--api-scheme", choices=("https", "http"), default="https")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=30, help="hunts run first and not measured")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration, in rotated orders")
    parser.add_argument("--configs", default="full,ledger,bare",
                        help="the relay's configurations: full (ledger and telemetry), ledger, bare")
    args = parser.parse_args()
    modes = ("managed_identity", "client_secret") if args.auth == "both" else (args.auth,)
    configs = tuple(args.configs.split(","))
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}: use {', '.join(CONFIGS)}")
    with LocalStack() as stack:
        measured = {auth: measure(stack, args.hunts, auth, args.api_scheme, args.concurrency, args.warmup, configs,
                                  args.rounds) for auth in modes}
    print(f"{args.hunts} small hunts per run, {args.rounds} runs of each (orders rotated), worker concurrency "
          f"{args.concurrency}, the API over {args.api_scheme}. Median (min-max) CPU per hunt: 'relay' is the "
          f"handler's threads while in it plus the telemetry's export threads (what the Functions Python worker "
          f"spends: the host makes the queue calls); 'process' adds the portable worker's receive, delete and "
          f"lease calls")
    for auth, (runs, startup_ms) in measured.items():
        print(f"{auth} (relay start-up, once per process: {startup_ms:.0f} ms CPU)")
        for name, series in runs.items():
            relay_ms = [run.relay_ms_per_hunt for run in series]
            process_ms = [run.cpu_ms_per_hunt for run in series]
            rate = statistics.median(run.hunts / run.wall_seconds for run in series)
            print(f"  {name:<7} relay {_spread(relay_ms)} ms   process {_spread(process_ms)} ms   ({rate:.0f} hunts/s)")
        naive_relay = statistics.median(run.relay_ms_per_hunt for run in runs["naive"])
        naive_process = statistics.median(run.cpu_ms_per_hunt for run in runs["naive"])
        for config in configs:
            relay_ms = statistics.median(run.relay_ms_per_hunt for run in runs[config])
            process_ms = statistics.median(run.cpu_ms_per_hunt for run in runs[config])
            print(f"  {config}: relay {relay_ms:.2f} ms <= {TARGET_MS:.0f} ms per hunt "
                  f"{'met' if relay_ms <= TARGET_MS else 'MISSED'}; process {process_ms:.2f} ms <= {TARGET_MS:.0f} "
                  f"{'met' if process_ms <= TARGET_MS else 'MISSED'}; naive / relay {naive_relay / relay_ms:.1f}x "
                  f"(process {naive_process / process_ms:.1f}x) >= {TARGET_RATIO:.0f}x "
                  f"{'met' if naive_relay / relay_ms >= TARGET_RATIO else 'MISSED'}")
    return 0


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


if __name__ == "__main__":
    sys.exit(main())
