"""Benchmark: the relay's own CPU per hunt, beside a naive relay (issue [pipeline], Measure).

500 small hunts (a few rows each) go through the portable worker against the sandbox; the CPU time of this
process (`time.process_time()`, all its threads) is measured around the drain, divided by the hunts. Azurite and
the sandbox run in child processes of their own, so their CPU is not counted; the sandbox's quota and the
relay's quota gate (on, as deployed, with a per-minute and a per-hour window) are raised out of the way.

The naive baseline runs in the same process and the same run, on the same worker (same queue work), against the
same sandbox and storage, but does what a simple relay does: for each hunt it builds a credential (and so fetches
a token) and a `requests` session, posts the query, parses the whole response and uploads the result blob.

Both credentials are measured: the managed identity (a plain-http token endpoint on the host, as in App Service)
and an app secret (https to the token authority). The hunting API is https, as Microsoft's are (`--api-scheme
http` for plain http on loopback): a naive session per hunt pays a TLS handshake per hunt, the relay's pooled one
does not. Certificates are verified against the public CA bundle plus the sandbox's certificate, as a real host
verifies against its bundle.

The relay runs in up to three configurations in each run, the naive run after the first: `full`, the job ledger
(a begin and an outcome write per hunt, issue [front-door]) and telemetry (issue [operations]: the SDK's tracer and
meter providers, a span per hunt with its child spans and the metrics, exported in batches to an exporter that
discards them, so that recording and batching are counted and no network is); `ledger`, the ledger without
telemetry; `bare`, neither (HUNT_JOB_LEDGER=false, no exporter).

Targets: at most 10 ms of relay CPU per hunt, and at least 5 times less than the naive baseline.

Run: .venv/bin/python bench/overhead.py [--hunts 500] [--auth managed_identity|client_secret|both]
                                        [--api-scheme https|http] [--concurrency 4] [--warmup 30]
                                        [--configs full,ledger,bare]
"""

from __future__ import annotations

import argparse
import json
import sys
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
    cpu_seconds: float
    wall_seconds: float
    delivered: int

    @property
    def cpu_ms_per_hunt(self) -> float:
        return self.cpu_seconds * 1000 / self.hunts


def enqueue(stack: LocalStack, queue_name: str, hunts: int) -> None:
    queue = stack.queue(queue_name)
    for n in range(hunts):
        queue.send_message(json.dumps({"id": f"ovh-{n:04d}-{uuid.uuid4().hex[:6]}", "query": QUERY, "api": "mde"}))


def drain(name: str, stack: LocalStack, relay: Relay, handler: Handler, hunts: int, concurrency: int,
          warmup: int) -> Run:
    """`warmup` hunts first, unmeasured (first connections, the token, lazy imports), then `hunts` measured."""
    def worker() -> PortableWorker:
        return PortableWorker(relay.hunt_queue, relay.poison_queue, handler, concurrency=concurrency,
                              max_dequeue_count=relay.settings.max_dequeue_count)

    enqueue(stack, relay.settings.queue, warmup)
    worker().run(drain=True)
    enqueue(stack, relay.settings.queue, hunts)
    measured = worker()
    cpu, wall = time.process_time(), time.perf_counter()
    stats = measured.run(drain=True)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    delivered = len(stack.blob_names(relay.settings.results_container)) - warmup
    if stats.processed != hunts or delivered != hunts:
        raise SystemExit(f"{name}: {stats.processed} processed, {delivered} delivered of {hunts}")
    return Run(name, hunts, cpu, wall, delivered)


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
            configs: tuple[str, ...]) -> tuple[list[Run], Run, float]:
    relay_runs: list[Run] = []
    startup_ms = 0.0
    naive_run: Run | None = None
    for index, config in enumerate(configs):
        ledger, telemetry = CONFIGS[config]
        env = stack.relay_env(auth, api_scheme=api_scheme, HUNT_QUOTA_WINDOWS=RAISED_QUOTA,
                              HUNT_JOB_LEDGER="true" if ledger else "false")
        previous = apply_env(env)  # azure-identity and requests read the identity endpoint and CA bundle from here
        try:
            started = time.process_time()
            settings = load_settings(env)
            relay = Relay(settings, telemetry=discarding_telemetry(settings.queue) if telemetry else None)
            relay.ensure_resources()
            startup_ms = (time.process_time() - started) * 1000
            relay_runs.append(drain(config, stack, relay, handler_of(relay), hunts, concurrency, warmup))
            if index == 0:   # the naive run between the relay's two, so that drift touches both alike
                naive_env = stack.relay_env(auth, api_scheme=api_scheme)
                naive_relay = Relay(load_settings({**naive_env, "HUNT_JOB_LEDGER": "false"}))
                naive_relay.ensure_resources()
                results = stack.blobs().get_container_client(naive_relay.settings.results_container)
                naive_run = drain("naive", stack, naive_relay, naive_handler(stack, auth, api_scheme, results),
                                  hunts, concurrency, warmup)
        finally:
            restore_env(previous)
    assert naive_run is not None
    return relay_runs, naive_run, startup_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hunts", type=int, default=500)
    parser.add_argument("--auth", choices=("managed_identity", "client_secret", "both"), default="both")
    parser.add_argument("--api-scheme", choices=("https", "http"), default="https")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=30, help="hunts run first and not measured")
    parser.add_argument("--configs", default="full,ledger,bare",
                        help="the relay's configurations, in order: full (ledger and telemetry), ledger, bare")
    args = parser.parse_args()
    modes = ("managed_identity", "client_secret") if args.auth == "both" else (args.auth,)
    configs = tuple(args.configs.split(","))
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}: use {', '.join(CONFIGS)}")
    with LocalStack() as stack:
        runs = {auth: measure(stack, args.hunts, auth, args.api_scheme, args.concurrency, args.warmup, configs)
                for auth in modes}
    print(f"{args.hunts} small hunts per run, worker concurrency {args.concurrency}, the API over "
          f"{args.api_scheme}; CPU of the relay's process")
    for auth, (relay_runs, naive_run, startup_ms) in runs.items():
        print(f"{auth} (relay start-up, once per process: {startup_ms:.0f} ms CPU)")
        for run in (*relay_runs, naive_run):
            print(f"  {run.name:<10} {run.cpu_ms_per_hunt:6.2f} ms CPU per hunt   ({run.cpu_seconds:.2f} s CPU, "
                  f"{run.wall_seconds:.1f} s wall, {run.hunts / run.wall_seconds:.0f} hunts/s)")
        for relay_run in relay_runs:
            ratio = naive_run.cpu_ms_per_hunt / relay_run.cpu_ms_per_hunt
            met_ms, met_ratio = relay_run.cpu_ms_per_hunt <= TARGET_MS, ratio >= TARGET_RATIO
            print(f"  {relay_run.name}: naive / relay {ratio:.1f}x;  targets: <= {TARGET_MS:.0f} ms per hunt "
                  f"{'met' if met_ms else 'MISSED'}, >= {TARGET_RATIO:.0f}x less than naive "
                  f"{'met' if met_ratio else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
