"""Benchmark: how fast the sandbox answers, so that it never dominates the relay's own figures.

Starts `python -m sandbox` as a child process with 150,000 DeviceProcessEvents rows, gets a real token with
ClientSecretCredential, then measures
  - the median latency of a small query over 50 calls on one keep-alive session (target: under 50 ms), and
  - the time to serve a 100,000-row DeviceProcessEvents result, first byte and whole body (target: under 10 s).

Run: .venv/bin/python bench/sandbox_latency.py [--rows 150000] [--calls 50]
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
from azure.identity import ClientSecretCredential

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"api=(\S+) msi=\S+ authority=(\S+) ca=(\S+)")
SMALL_QUERY = 'DeviceProcessEvents | where InitiatingProcessFileName =~ "powershell.exe" | project Timestamp, ' \
              "FileName | limit 2"
LARGE_QUERY = "DeviceProcessEvents | take 100000"
SMALL_TARGET_MS, LARGE_TARGET_S = 50.0, 10.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()

    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", "--tls-port", "0", "--rows", str(args.rows),
         "--calls-per-window", "100000"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = READY.search(line)
        if match is None:
            print(f"the sandbox did not start: {line!r}")
            return 1
        api, authority, ca = match.groups()
        startup = time.perf_counter() - started
        credential = ClientSecretCredential("sandbox-tenant", "sandbox-client", "sandbox-secret",
                                            authority=authority, disable_instance_discovery=True,
                                            connection_verify=ca)
        token = credential.get_token("https://api.security.microsoft.com/.default").token
        url = api + "/api/advancedhunting/run"
        headers = {"Authorization": f"Bearer {token}"}

        with requests.Session() as session:
            session.post(url, json={"Query": SMALL_QUERY}, headers=headers, timeout=30).raise_for_status()  # warm
            latencies = []
            for _ in range(args.calls):
                begin = time.perf_counter()
                response = session.post(url, json={"Query": SMALL_QUERY}, headers=headers, timeout=30)
                response.raise_for_status()
                latencies.append((time.perf_counter() - begin) * 1000)

            begin = time.perf_counter()
            response = session.post(url, json={"Query": LARGE_QUERY}, headers=headers, timeout=120, stream=True)
            response.raise_for_status()
            first_byte = time.perf_counter() - begin
            size = sum(len(block) for block in response.iter_content(256 * 1024))
            whole = time.perf_counter() - begin
            rows = len(requests.post(url, json={"Query": LARGE_QUERY}, headers=headers, timeout=120)
                       .json()["Results"])
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)

    median = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"sandbox start with {args.rows:,} DeviceProcessEvents rows: {startup:.1f} s")
    print(f"small query, median of {args.calls} calls: {median:.1f} ms (p95 {p95:.1f} ms)  "
          f"target < {SMALL_TARGET_MS:.0f} ms: {'met' if median < SMALL_TARGET_MS else 'MISSED'}")
    print(f"{rows:,}-row result ({size / 1e6:.1f} MB): first byte {first_byte:.2f} s, whole body {whole:.2f} s  "
          f"target < {LARGE_TARGET_S:.0f} s: {'met' if whole < LARGE_TARGET_S else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
