"""The relay wired to the local stack: Azurite for storage, the sandbox for Defender and Entra ID.

`relay_stack.make(...)` builds a real `Relay` from real settings (as the Function App would read them), with the
chosen credential kind; the environment variables azure-identity reads are set with monkeypatch, so that the
unmodified SDK talks to the sandbox.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from sandbox.azurite import Azurite
from shared.app.config import load_settings
from shared.app.relay import Relay
from shared.app.worker import PortableWorker, WorkerStats
from shared.core.outcome import MessageInfo, Outcome

CREDENTIAL_KINDS = ("system_assigned", "user_assigned", "client_secret")


@dataclass
class RelayStack:
    azurite: Azurite
    sandbox: Any
    monkeypatch: pytest.MonkeyPatch
    queue: str = field(default_factory=lambda: "hunts-" + uuid.uuid4().hex[:12])
    results_container: str = field(default_factory=lambda: "results-" + uuid.uuid4().hex[:12])
    deadletter_container: str = field(default_factory=lambda: "deadletter-" + uuid.uuid4().hex[:12])
    gate_table: str = field(default_factory=lambda: "gate" + uuid.uuid4().hex[:12])
    state_container: str = field(default_factory=lambda: "state-" + uuid.uuid4().hex[:12])
    jobs_table: str = field(default_factory=lambda: "jobs" + uuid.uuid4().hex[:12])
    breaker_table: str = field(default_factory=lambda: "breakers" + uuid.uuid4().hex[:12])

    def env(self, credential: str = "system_assigned", **extra: str) -> dict[str, str]:
        env = {
            "AzureWebJobsStorage": self.azurite.connection_string,
            "HUNT_QUEUE": self.queue,
            "HUNT_API_BASE_URL": self.sandbox.api_url,
            "HUNT_ALLOW_LOOPBACK_HTTP": "true",
            "HUNT_RESULTS_CONTAINER": self.results_container,
            "HUNT_DEADLETTER_CONTAINER": self.deadletter_container,
            "HUNT_GATE_TABLE": self.gate_table,
            "HUNT_STATE_CONTAINER": self.state_container,
            "HUNT_JOBS_TABLE": self.jobs_table,
            "HUNT_BREAKER_TABLE": self.breaker_table,
            # Generous by default; quota tests set their own windows (and the sandbox's).
            "HUNT_QUOTA_WINDOWS": "1000/60s",
            # The pipeline's tests name their API; routing to Graph has its own (tests/relay/test_graph_first.py),
            # so these do not change on the day the legacy APIs retire.
            "HUNT_API": "mde",
            "HUNT_LEGACY_APIS": "legacy",
        }
        self.monkeypatch.setenv("IDENTITY_ENDPOINT", self.sandbox.msi_endpoint)
        self.monkeypatch.setenv("IDENTITY_HEADER", "sandbox")
        if credential == "user_assigned":
            env["AZURE_CLIENT_ID"] = "sandbox-user-identity"
        elif credential == "client_secret":
            env.update(HUNT_AUTH="client_secret", AZURE_TENANT_ID="sandbox-tenant", AZURE_CLIENT_ID="sandbox-client",
                       AZURE_CLIENT_SECRET="sandbox-secret", AZURE_AUTHORITY_HOST=self.sandbox.authority)
            self.monkeypatch.setenv("REQUESTS_CA_BUNDLE", self.sandbox.ca_path)
        env.update(extra)
        return env

    def make(self, credential: str = "system_assigned", **extra: str) -> Relay:
        relay = Relay(load_settings(self.env(credential, **extra)))
        relay.ensure_resources()
        return relay

    def with_webhook(self, url: str, **extra: str) -> dict[str, str]:
        return {"HUNT_DESTINATIONS": json.dumps({"hook": {"type": "webhook", "url": url}}),
                "HUNT_DEFAULT_DESTINATION": "hook", **extra}

    def blob_service(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.azurite.connection_string)

    def read_json(self, container: str, name: str) -> Any:
        return json.loads(self.blob_service().get_blob_client(container, name).download_blob().readall())

    def dead_letters(self) -> list[dict[str, Any]]:
        container = self.blob_service().get_container_client(self.deadletter_container)
        return [json.loads(container.download_blob(b.name).readall()) for b in container.list_blobs()]

    def results(self) -> list[str]:
        return sorted(b.name for b in self.blob_service().get_container_client(self.results_container).list_blobs())


@dataclass
class Drained:
    """What a drain did: the worker's counts, and every outcome the relay's observer saw, in order."""

    stats: WorkerStats
    outcomes: list[Outcome]

    @property
    def failed_handler(self) -> int:
        return self.stats.failed_handler

    @property
    def poisoned(self) -> int:
        return self.stats.poisoned


class RecordingObserver:
    """An observer (shared.core.outcome.Observer) that keeps what it saw: for tests only."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def __call__(self, outcome: Outcome, message: MessageInfo) -> None:
        with self._lock:
            self.outcomes.append(outcome)


def drain(relay: Relay, concurrency: int = 4) -> Drained:
    def handle(raw: bytes, message_id: str, count: int):
        return relay.handle(raw, message_id=message_id, dequeue_count=count)

    recorder = RecordingObserver()
    relay.observers.append(recorder)
    try:
        worker = PortableWorker(relay.hunt_queue, relay.poison_queue, handle, concurrency=concurrency,
                                max_dequeue_count=relay.settings.max_dequeue_count, retry_visibility=1)
        stats = worker.run(drain=True)
    finally:
        relay.observers.remove(recorder)
    return Drained(stats, recorder.outcomes)


@pytest.fixture
def relay_stack(azurite: Azurite, sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RelayStack]:
    sandbox.knobs.quota.calls_per_window = 1000
    yield RelayStack(azurite, sandbox, monkeypatch)
