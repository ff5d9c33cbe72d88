"""Benchmark: the HTTP API on one process (issue [front-door], Measure): submits and status reads per second.

Azurite and the sandbox run as child processes (bench.local_stack); the API runs in this process on the portable
server (waitress, 8 threads), as `python -m shared serve` does. Clients are threads of this process with a pooled
session each: first `--submits` POSTs of distinct hunts (each a ledger create-only write and a queue message),
then `--reads` GETs of their status (a ledger read each). No worker runs, so every status is `queued`. The baseline
in the same run is a GET of an unknown id (the key check and one ledger read that finds nothing), which bounds
what the server and Azurite cost without the API's own work.

Run: .venv/bin/python bench/http_api.py [--submits 1000] [--reads 2000] [--clients 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for `python bench/...`

from bench.local_stack import LocalStack, apply_env, restore_env
from shared.app.config import load_settings
from shared.app.http_api import HuntApi
from shared.app.http_server import ApiServer
from shared.app.relay import Relay

KEY = "bench-key-" + uuid.uuid4().hex


def timed(clients: int, count: int, call: Callable[[requests.Session, int], int]) -> tuple[float, dict[int, int]]:
    """Runs `count` calls over `clients` threads; the wall time and the answers by status."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    next_index = iter(range(count))

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            status = call(session, index)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submits", type=int, default=1000)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with LocalStack() as stack:
        env = stack.relay_env("managed_identity", HUNT_API_KEYS="BENCH_API_KEY", BENCH_API_KEY=KEY)
        previous = apply_env(env)
        try:
            relay = Relay(load_settings(env))
            relay.ensure_resources()
            server = ApiServer(HuntApi(relay), port=0, threads=8).start()
            url, headers = server.url + "/api/hunts", {"x-functions-key": KEY}
            ids = [f"bench-{n:06d}-{uuid.uuid4().hex[:6]}" for n in range(args.submits)]
            body = '{"id": "%s", "api": "mde", "query": "DeviceInfo | take 1"}'

            def submit(session: requests.Session, n: int) -> int:
                return session.post(url, data=body % ids[n], timeout=30,
                                    headers={**headers, "Content-Type": "application/json"}).status_code

            def read(session: requests.Session, n: int) -> int:
                return session.get(f"{url}/{ids[n % len(ids)]}", headers=headers, timeout=30).status_code

            def unknown(session: requests.Session, n: int) -> int:
                return session.get(f"{url}/no-such-{n}", headers=headers, timeout=30).status_code

            timed(args.clients, 50, unknown)   # warm-up: connections, first requests
            base_s, base_statuses = timed(args.clients, args.reads, unknown)
            submit_s, submit_statuses = timed(args.clients, args.submits, submit)
            read_s, read_statuses = timed(args.clients, args.reads, read)
            server.stop()
        finally:
            restore_env(previous)
    print(f"HTTP API on one process (waitress, 8 threads), {args.clients} client threads, {os.cpu_count()} cores")
    print(f"  baseline: GET of an unknown id  {args.reads / base_s:7.0f} /s  {base_statuses}")
    print(f"  POST /api/hunts (submit)         {args.submits / submit_s:7.0f} /s  {submit_statuses}")
    print(f"  GET /api/hunts/{{id}} (status)    {args.reads / read_s:7.0f} /s  {read_statuses}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
