"""Benchmark: peak memory and throughput of a large result, streamed by the worker from the API to a blob, beside
the naive baseline (bench/naive_large_result.py: `response.json()`, `json.dumps`, `upload_blob`).

Starts Azurite and `python -m sandbox --rows 150000` (a child process, read from its ready line), then for
10,000, 50,000 and 100,000 DeviceProcessEvents rows (all columns) runs, each as its own process:
  - the worker, `python -m shared worker --drain`, on a queue holding that one hunt (json to a blob);
  - the naive baseline on the same query.
Idle figures come from the same two runs on `take 0`. Beside each size, in the same run: the raw transfer (the same
response read and discarded) and the copy (the same response piped into a blob as it arrives, unread, with the
relay's own block writer: what Azurite, one Node process on the same cores, lets any relay reach). The peak RSS
of each process is its own `ru_maxrss`, read with os.wait4 (the per-child figure, not RUSAGE_CHILDREN's maximum
over every child so far). Throughput is the API's response size (counted once per size on a direct request) over
the hunt's time in the worker's own log (from "attempt 1" to "delivered": start-up excluded).

Targets (issue 5): at 100,000 rows the worker's peak RSS at most 64 MB above its idle RSS and at most a quarter of
the naive baseline's; the worker's peak within 20% from 10,000 to 100,000 rows; at least 20 MB/s. These runs ask
for whole rows (about 2.9 KB each), so the sandbox runs them with its result-size cap lifted (--max-result-mb).

The split case (issue 13): a Graph hunt with "split": true over a sandbox holding 300,000 DeviceProcessEvents rows
in its 30 days (eight columns, about 340 bytes a row), under the service's real caps (100,000 rows, 50 MB): peak
RSS above the same idle run (target within idle + 64 MiB), throughput (the delivered blob over the hunt's time),
and the API calls it used against the least it could: ceil(rows / 100,000) parts plus the probes that came back
truncated (each probe is a call whose 100,000 rows are not kept: its halves ask again).

Run: .venv/bin/python bench/large_result.py [--rows 10000 50000 100000] [--skip-naive] [--split-rows 300000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import requests
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.azurite import Azurite  # noqa: E402  (the repository root is put on the path first)

READY = re.compile(r"api=(\S+) msi=(\S+) authority=\S+ ca=\S+")
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
RESOURCE = "https://api.securitycenter.microsoft.com"
MB = 1_000_000
TARGET_ABOVE_IDLE_MB, TARGET_NAIVE_SHARE, TARGET_GROWTH, TARGET_MB_PER_S = 64.0, 0.25, 0.20, 20.0


@dataclass(frozen=True)
class Run:
    peak_rss_mb: float
    wall_s: float
    hunt_s: float | None
    output: str


SPLIT_QUERY = ("DeviceProcessEvents | project Timestamp, DeviceName, ReportId, FileName, FolderPath, SHA256, "
               "ProcessCommandLine, AccountName")
SERVICE_ROW_CAP = 100_000


def query_for(rows: int) -> str:
    return f"DeviceProcessEvents | take {rows}"


def run_measured(command: list[str], env: dict[str, str]) -> Run:
    """Runs a child process to its end; its own peak RSS (os.wait4), wall time and combined output."""
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed with {process.returncode}:\n{text[-3000:]}")
    return Run(usage.ru_maxrss / 1024, wall, _hunt_seconds(text), text)   # Linux reports KiB


def _hunt_seconds(log: str) -> float | None:
    """From the worker's "attempt 1" line to its "delivered" line."""
    start = end = None
    for line in log.splitlines():
        match = LOG_TIME.match(line)
        if match and "attempt 1 on" in line:
            start = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        elif match and ": delivered " in line:
            end = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return (end - start).total_seconds() if start and end else None


def raw_transfer(api: str, msi: str, query: str) -> tuple[int, float]:
    """The same response read and discarded: its size, and the seconds from the request to its last byte (the
    raw transfer rate the relay's own throughput is set against)."""
    token = requests.get(msi, params={"api-version": "2019-08-01", "resource": RESOURCE},
                         headers={"X-IDENTITY-HEADER": "sandbox"}, timeout=30).json()["access_token"]
    started = time.perf_counter()
    with requests.post(api + "/api/advancedqueries/run", json={"Query": query}, stream=True, timeout=600,
                       headers={"Authorization": "Bearer " + token}) as response:
        response.raise_for_status()
        size = sum(len(chunk) for chunk in response.iter_content(1 << 20))
    return size, time.perf_counter() - started


def copy_transfer(api: str, msi: str, query: str, azurite: Azurite, container: str) -> float:
    """The same response piped as it arrives into a blob, with the writer the relay uses (StagedBlobWriter, blocks
    in flight while the next fills) and nothing read in between: the seconds of the copy, what the local stack's
    storage allows any relay (Azurite is one Node process on the same cores)."""
    from shared.adapters.blob_writer import StagedBlobWriter
    from shared.adapters.http_session import pooled_session

    token = requests.get(msi, params={"api-version": "2019-08-01", "resource": RESOURCE},
                         headers={"X-IDENTITY-HEADER": "sandbox"}, timeout=30).json()["access_token"]
    blob = BlobServiceClient.from_connection_string(azurite.connection_string, session=pooled_session(),
                                                    session_owner=False).get_blob_client(container, "copy.json")
    started = time.perf_counter()
    with requests.post(api + "/api/advancedqueries/run", json={"Query": query}, stream=True, timeout=600,
                       headers={"Authorization": "Bearer " + token}) as response:
        response.raise_for_status()
        writer = StagedBlobWriter(blob)
        for chunk in response.iter_content(1 << 20):
            writer.write(chunk)
        writer.commit("application/json")
    seconds = time.perf_counter() - started
    blob.delete_blob()
    return seconds


def start_sandbox(rows: int) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--tls-port", "0", "--rows",
                                str(rows), "--calls-per-window", "100000", "--max-result-mb", "100000"], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    match = READY.search(process.stdout.readline())
    if match is None:
        process.terminate()
        raise RuntimeError("the sandbox did not start")
    return process, match.group(1), match.group(2)


def relay_env(azurite: Azurite, api: str, msi: str, queue: str, container: str) -> dict[str, str]:
    """The environment the relay tests use (tests/relay/conftest.py RelayStack.env), for a child process."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "AzureWebJobsStorage": azurite.connection_string,
            "HUNT_QUEUE": queue, "HUNT_API_BASE_URL": api, "HUNT_ALLOW_LOOPBACK_HTTP": "true",
            "HUNT_RESULTS_CONTAINER": container, "HUNT_DEADLETTER_CONTAINER": container + "-dead",
            "HUNT_GATE_TABLE": "gate" + uuid.uuid4().hex[:12], "HUNT_QUOTA_WINDOWS": "1000/60s",
            "IDENTITY_ENDPOINT": msi, "IDENTITY_HEADER": "sandbox", "HUNT_LOG_LEVEL": "INFO"}


def worker_run(azurite: Azurite, env: dict[str, str], rows: int) -> Run:
    job = f"bench-{rows}-{uuid.uuid4().hex[:8]}"
    queue = QueueClient.from_connection_string(azurite.connection_string, env["HUNT_QUEUE"])
    queue.send_message(json.dumps({"id": job, "api": "mde", "query": query_for(rows)}))
    run = run_measured([sys.executable, "-m", "shared", "worker", "--drain", "--concurrency", "1"], env)
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        env["HUNT_RESULTS_CONTAINER"], f"{job}.json")
    tail = blob.download_blob(offset=max(0, blob.get_blob_properties().size - 200_000)).readall()
    delivered = re.search(rb'"row_count":(\d+)', tail)
    if delivered is None or int(delivered.group(1)) != rows:
        raise RuntimeError(f"the worker did not deliver {rows} rows:\n{run.output[-3000:]}")
    blob.delete_blob()   # Azurite keeps blobs in memory
    return run


@dataclass(frozen=True)
class SplitRun:
    run: Run
    rows: int
    result_mb: float
    calls: int
    parts: int
    probes: int


def graph_calls(api: str) -> int:
    state = requests.get(api + "/_sandbox/state", timeout=30).json()
    return sum(state["counters"]["calls"].get("graph", {}).values())


def split_run(azurite: Azurite, env: dict[str, str], api: str, rows: int) -> SplitRun:
    """One split hunt over every row of the sandbox, under the service's caps (50 MB as Graph's newest doc)."""
    requests.post(api + "/_sandbox/knobs", json={"max_result_mb": 50}, timeout=30).raise_for_status()
    job = f"bench-split-{rows}-{uuid.uuid4().hex[:8]}"
    queue = QueueClient.from_connection_string(azurite.connection_string, env["HUNT_QUEUE"])
    queue.send_message(json.dumps({"id": job, "api": "graph", "query": SPLIT_QUERY, "split": True}))
    calls_before = graph_calls(api)
    run = run_measured([sys.executable, "-m", "shared", "worker", "--drain", "--concurrency", "1"], env)
    calls = graph_calls(api) - calls_before
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        env["HUNT_RESULTS_CONTAINER"], f"{job}.json")
    size = blob.get_blob_properties().size
    tail = blob.download_blob(offset=max(0, size - 200_000)).readall()
    delivered = re.search(rb'"row_count":(\d+),"truncated":false', tail)
    if delivered is None or int(delivered.group(1)) != rows:
        raise RuntimeError(f"the split hunt did not deliver {rows} rows untruncated:\n{run.output[-3000:]}")
    blob.delete_blob()
    requests.post(api + "/_sandbox/knobs", json={"max_result_mb": 100000}, timeout=30).raise_for_status()
    return SplitRun(run, rows, size / MB, calls, run.output.count("of the split hunt done"),
                    run.output.count("split in two"))


def naive_run(azurite: Azurite, env: dict[str, str], api: str, msi: str, rows: int) -> Run:
    name = f"naive-{rows}-{uuid.uuid4().hex[:8]}.json"
    run = run_measured([sys.executable, str(ROOT / "bench" / "naive_large_result.py"), "--api", api, "--msi", msi,
                        "--query", query_for(rows), "--container", env["HUNT_RESULTS_CONTAINER"], "--blob", name], env)
    BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        env["HUNT_RESULTS_CONTAINER"], name).delete_blob()
    return run


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--skip-naive", action="store_true", help="only the worker (the baseline needs ~GBs)")
    parser.add_argument("--split-rows", type=int, default=300_000,
                        help="the sandbox's size for the split case, every row of it hunted (0: no split case)")
    args = parser.parse_args()
    sandbox, api, msi = start_sandbox(max(150_000, max(args.rows), args.split_rows))
    split: SplitRun | None = None
    raw_rates: dict[int, float] = {}
    copy_rates: dict[int, float] = {}
    try:
        with Azurite() as azurite:
            container = "bench-" + uuid.uuid4().hex[:12]
            env = relay_env(azurite, api, msi, "bench-" + uuid.uuid4().hex[:12], container)
            QueueClient.from_connection_string(azurite.connection_string, env["HUNT_QUEUE"]).create_queue()
            idle = worker_run(azurite, env, 0)
            naive_idle = None if args.skip_naive else naive_run(azurite, env, api, msi, 0)
            print(f"idle (take 0): worker {idle.peak_rss_mb:.1f} MiB" +
                  ("" if naive_idle is None else f", naive {naive_idle.peak_rss_mb:.1f} MiB"), flush=True)
            rows_out: list[tuple[int, float, Run, Run | None]] = []
            for rows in args.rows:
                size_bytes, raw_s = raw_transfer(api, msi, query_for(rows))
                size = size_bytes / MB
                raw_rates[rows] = size / raw_s
                copy_rates[rows] = size / copy_transfer(api, msi, query_for(rows), azurite, container)
                worker = worker_run(azurite, env, rows)
                naive = None if args.skip_naive else naive_run(azurite, env, api, msi, rows)
                rows_out.append((rows, size, worker, naive))
                print(f"{rows} rows done", flush=True)
            if args.split_rows:
                split = split_run(azurite, env, api, args.split_rows)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    report(idle, naive_idle, rows_out, raw_rates, copy_rates)
    if split is not None:
        report_split(idle, split)
    return 0


def report_split(idle: Run, split: SplitRun) -> None:
    above = split.run.peak_rss_mb - idle.peak_rss_mb
    hunt_s = split.run.hunt_s or float("nan")
    least = math.ceil(split.rows / SERVICE_ROW_CAP) + split.probes
    print()
    print(f"split hunt: {split.rows} rows ({split.result_mb:.1f} MB delivered as one json blob) in {split.parts} parts")
    print(f"  peak RSS          {split.run.peak_rss_mb:7.1f} MiB, {above:.1f} above idle (target <= "
          f"{TARGET_ABOVE_IDLE_MB:.0f} MiB) {'ok' if above <= TARGET_ABOVE_IDLE_MB else 'MISSED'}")
    print(f"  hunt time         {hunt_s:7.2f} s: {split.rows / hunt_s:,.0f} rows/s, "
          f"{split.result_mb / hunt_s:.1f} MB/s")
    print(f"  API calls         {split.calls} used; least possible {least} = ceil({split.rows} / "
          f"{SERVICE_ROW_CAP}) parts + {split.probes} truncated probes ({split.parts} parts were needed)")


def report(idle: Run, naive_idle: Run | None, runs: list[tuple[int, float, Run, Run | None]],
           raw_rates: dict[int, float], copy_rates: dict[int, float]) -> None:
    print()
    print(f"{'rows':>8} {'response MB':>12} {'worker peak MiB':>15} {'above idle MiB':>14} {'naive peak MiB':>14} "
          f"{'worker/naive':>13} {'hunt s':>7} {'MB/s':>6} {'raw MB/s':>9} {'copy MB/s':>10}")
    for rows, size, worker, naive in runs:
        mb_per_s = size / worker.hunt_s if worker.hunt_s else float("nan")
        naive_text = f"{naive.peak_rss_mb:14.1f} {worker.peak_rss_mb / naive.peak_rss_mb:13.2f}" if naive else \
            f"{'-':>14} {'-':>13}"
        print(f"{rows:>8} {size:12.1f} {worker.peak_rss_mb:15.1f} {worker.peak_rss_mb - idle.peak_rss_mb:14.1f} "
              f"{naive_text} {worker.hunt_s or float('nan'):7.2f} {mb_per_s:6.1f} {raw_rates[rows]:9.1f} "
              f"{copy_rates[rows]:10.1f}")
    print(f"{'idle':>8} {0:12.1f} {idle.peak_rss_mb:15.1f} {0:14.1f} "
          f"{naive_idle.peak_rss_mb if naive_idle else float('nan'):14.1f}")
    first, last = runs[0], runs[-1]
    growth = (last[2].peak_rss_mb - first[2].peak_rss_mb) / first[2].peak_rss_mb
    above = last[2].peak_rss_mb - idle.peak_rss_mb
    throughput = last[1] / last[2].hunt_s if last[2].hunt_s else 0.0
    print()
    print("targets at the largest size:")
    print(f"  peak above idle   {above:7.1f} MiB (target <= {TARGET_ABOVE_IDLE_MB:.0f} MiB) "
          f"{'ok' if above <= TARGET_ABOVE_IDLE_MB else 'MISSED'}")
    if last[3] is not None:
        share = last[2].peak_rss_mb / last[3].peak_rss_mb
        print(f"  worker / naive    {share:7.2f}     (target <= {TARGET_NAIVE_SHARE:.2f})     "
              f"{'ok' if share <= TARGET_NAIVE_SHARE else 'MISSED'}")
    print(f"  growth {first[0]}->{last[0]} rows {growth * 100:6.1f} %   (target <= {TARGET_GROWTH * 100:.0f} %)     "
          f"{'ok' if growth <= TARGET_GROWTH else 'MISSED'}")
    print(f"  throughput        {throughput:7.1f} MB/s (target >= {TARGET_MB_PER_S:.0f} MB/s) "
          f"{'ok' if throughput >= TARGET_MB_PER_S else 'MISSED'}")
    raw = raw_rates[last[0]]
    print(f"  against the raw transfer of the same response ({raw:.1f} MB/s, read and discarded): "
          f"{throughput / raw:.2f} (target >= 0.50) {'met' if throughput >= raw / 2 else 'MISSED'}")
    copy = copy_rates[last[0]]
    print(f"  against the same response copied into a blob unread ({copy:.1f} MB/s: the local stack's storage "
          f"ceiling): {throughput / copy:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
