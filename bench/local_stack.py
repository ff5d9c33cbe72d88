"""The local stack for the relay benchmarks: Azurite and the sandbox, each in a child process of its own, so that
neither's CPU time is counted as the relay's.

    with LocalStack(calls_per_window=20, window_seconds=10) as stack:
        env = stack.relay_env("managed_identity")   # the relay's settings (fresh queue and containers)
        queue = stack.queue(env["HUNT_QUEUE"])
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import certifi
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from sandbox.azurite import Azurite

ROOT = Path(__file__).resolve().parent.parent

READY = re.compile(r"api=(\S+) msi=(\S+) authority=(\S+) ca=(\S+)")


class LocalStack:
    def __init__(self, *, calls_per_window: int = 1_000_000, window_seconds: float = 60.0, rows: int = 2_000) -> None:
        self.calls_per_window, self.window_seconds, self.rows = calls_per_window, window_seconds, rows
        self.azurite = Azurite()
        self._sandbox: subprocess.Popen[str] | None = None
        self.api = self.msi = self.authority = self.ca = ""
        self.ca_bundle = ""

    def start(self) -> LocalStack:
        self.azurite.start()
        self._sandbox = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "--port", "0", "--tls-port", "0", "--rows", str(self.rows),
             "--calls-per-window", str(self.calls_per_window), "--window-seconds", str(self.window_seconds)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self._sandbox.stdout is not None
        line = self._sandbox.stdout.readline()
        match = READY.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        self.api, self.msi, self.authority, self.ca = match.groups()
        # As on a real host: the public CA bundle (what requests verifies against by default), plus the sandbox's
        # self-signed certificate. Loading a bundle is part of what a new https session costs.
        with tempfile.NamedTemporaryFile("w", prefix="bench-ca-", suffix=".pem", delete=False) as bundle:
            bundle.write(Path(certifi.where()).read_text() + "\n" + Path(self.ca).read_text())
        self.ca_bundle = bundle.name
        return self

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) each stack process has used so far: {"azurite", "sandbox"} (Linux /proc)."""
        pids = {"azurite": self.azurite.pid, "sandbox": None if self._sandbox is None else self._sandbox.pid}
        return {name: _cpu_of(pid) for name, pid in pids.items() if pid is not None}

    def stop(self) -> None:
        if self._sandbox is not None and self._sandbox.poll() is None:
            self._sandbox.send_signal(signal.SIGINT)
            try:
                self._sandbox.wait(30)
            except subprocess.TimeoutExpired:
                self._sandbox.kill()
                self._sandbox.wait(10)
        self._sandbox = None
        if self.ca_bundle:
            Path(self.ca_bundle).unlink(missing_ok=True)
        self.azurite.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_base(self, scheme: str) -> str:
        """The hunting API over "https" (as in Azure: the sandbox's certificate is in `ca_bundle`) or "http"."""
        return self.authority if scheme == "https" else self.api

    def relay_env(self, auth: str = "managed_identity", *, api_scheme: str = "http", **extra: str) -> dict[str, str]:
        """The relay's settings for this stack, with fresh queue/container/table names unless given."""
        suffix = uuid.uuid4().hex[:10]
        env = {
            "AzureWebJobsStorage": self.azurite.connection_string,
            "HUNT_QUEUE": "bench-" + suffix,
            "HUNT_RESULTS_CONTAINER": "results-" + suffix,
            "HUNT_DEADLETTER_CONTAINER": "deadletter-" + suffix,
            "HUNT_GATE_TABLE": "gate" + suffix,
            "HUNT_API_BASE_URL": self.api_base(api_scheme),
            "HUNT_ALLOW_LOOPBACK_HTTP": "true",
            "HUNT_LOG_LEVEL": "WARNING",
            "IDENTITY_ENDPOINT": self.msi,
            "IDENTITY_HEADER": "sandbox",
        }
        if auth == "client_secret":
            env.update(HUNT_AUTH="client_secret", AZURE_TENANT_ID="sandbox-tenant", AZURE_CLIENT_ID="sandbox-client",
                       AZURE_CLIENT_SECRET="sandbox-secret", AZURE_AUTHORITY_HOST=self.authority,
                       REQUESTS_CA_BUNDLE=self.ca_bundle)
        if api_scheme == "https":
            env["REQUESTS_CA_BUNDLE"] = self.ca_bundle
        env.update(extra)
        return env

    def queue(self, name: str) -> QueueClient:
        return QueueClient.from_connection_string(self.azurite.connection_string, name)

    def blobs(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.azurite.connection_string)

    def blob_names(self, container: str) -> list[str]:
        return [b.name for b in self.blobs().get_container_client(container).list_blobs()]


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime, stime


def apply_env(env: dict[str, str]) -> dict[str, Any]:
    """Sets `env` in this process (azure-identity and requests read some of it from os.environ); returns the old
    values for `restore_env`."""
    previous = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    return previous


def restore_env(previous: dict[str, Any]) -> None:
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def stop_workers(workers: list[subprocess.Popen[Any]], grace_seconds: float) -> None:
    """SIGTERM to every worker (each finishes the hunts it holds), then a kill for any still running after
    `grace_seconds`."""
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
