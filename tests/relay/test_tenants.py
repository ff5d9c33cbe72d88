"""One relay, three customer tenants, over Azurite and the sandbox, with the real azure-identity.

Contoso and Fabrikam sign in keyless (workload identity federation: the relay's managed identity's token for
api://AzureADTokenExchange is the multi-tenant app's client assertion); Woodgrove with a client secret from its
`secret_setting`. Each tenant has data of its own in the sandbox (another seed) and its own blob, queue and webhook
destinations. The tests prove the isolation: a hunt runs with its tenant's token only (the sandbox records the
`tid` of every call), lands only in its tenant's destinations and scope, and another tenant's destination ends it
with DestinationRefused recorded under its own tenant; quotas and 429 pauses are per tenant; a revoked consent
fails that tenant and no other.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest

from sandbox.identity import SYSTEM_IDENTITY_CLIENT_ID
from sandbox.tokens import object_id_for
from sandbox.webhook_receiver import WebhookReceiver
from tests.relay.conftest import RelayStack, drain

APP = "a1b2c3d4-0000-4000-8000-00000000abcd"   # the MSSP's multi-tenant app
TENANTS = {   # name -> (directory id, the sandbox's seed for its data)
    "contoso": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", 101),
    "fabrikam": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7002", 202),
    "woodgrove": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7003", 303),
}
KINDS = ("blob", "queue", "hook")
QUERY = "DeviceProcessEvents | project ReportId, DeviceName, SHA256 | order by ReportId asc | take 5"
WOODGROVE_SECRET = "woodgrove-app-secret"


class Tenancy:
    def __init__(self, stack: RelayStack, receiver: WebhookReceiver) -> None:
        self.stack, self.receiver = stack, receiver
        suffix = uuid.uuid4().hex[:8]
        self.containers = {name: f"res-{name}-{suffix}" for name in TENANTS}
        self.queues = {name: f"out-{name}-{suffix}" for name in TENANTS}
        sandbox = stack.sandbox
        for name, (tenant_id, seed) in TENANTS.items():
            sandbox.add_tenant(tenant_id, seed=seed)
            sandbox.add_app(tenant_id, APP, WOODGROVE_SECRET if name == "woodgrove" else None,
                            ["ThreatHunting.Read.All"])
        sandbox.directory.add_federated_credential(APP, "https://sts.windows.net/sandbox-tenant/",
                                                   object_id_for(SYSTEM_IDENTITY_CLIENT_ID))
        stack.monkeypatch.setenv("REQUESTS_CA_BUNDLE", sandbox.ca_path)

    def destinations(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in TENANTS:
            found[f"{name}-blob"] = {"type": "blob", "container": self.containers[name]}
            found[f"{name}-queue"] = {"type": "queue", "queue": self.queues[name]}
            found[f"{name}-hook"] = {"type": "webhook", "url": f"{self.receiver.url}/hooks/{name}"}
        return found

    def tenants(self, **quota: str) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        for name, (tenant_id, _) in TENANTS.items():
            spec[name] = {"tenant_id": tenant_id, "client_id": APP, "api": "graph",
                          "destinations": [f"{name}-{kind}" for kind in KINDS],
                          "webhook_allowed_hosts": [f"soc.{name}.example"],
                          **({"quota": quota[name]} if name in quota else {})}
            spec[name].update({"auth": "client_secret", "secret_setting": "WOODGROVE_SECRET"}
                              if name == "woodgrove" else {"auth": "federated"})
        return spec

    def relay(self, **quota: str) -> Any:
        return self.stack.make(
            HUNT_API="graph", HUNT_DESTINATIONS=json.dumps(self.destinations()),
            HUNT_TENANTS=json.dumps(self.tenants(**quota)), WOODGROVE_SECRET=WOODGROVE_SECRET,
            AZURE_AUTHORITY_HOST=self.stack.sandbox.authority)

    def rows_of(self, name: str) -> list[dict[str, Any]]:
        engine = self.stack.sandbox.engine_for(TENANTS[name][0])
        return [json.loads(row) for row in engine.run(QUERY, "graph").rows]

    def blobs(self, name: str) -> dict[str, Any]:
        container = self.stack.blob_service().get_container_client(self.containers[name])
        return {b.name: json.loads(container.download_blob(b.name).readall()) for b in container.list_blobs()}

    def queued(self, name: str) -> list[dict[str, Any]]:
        from azure.storage.queue import QueueClient

        queue = QueueClient.from_connection_string(self.stack.azurite.connection_string, self.queues[name])
        return [json.loads(m.content) for m in queue.receive_messages(max_messages=32)]

    def hooked(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.receiver.requests if r.path == f"/hooks/{name}"]

    def dead_letter_names(self) -> list[str]:
        container = self.stack.blob_service().get_container_client(self.stack.deadletter_container)
        return [b.name for b in container.list_blobs()]


@pytest.fixture
def tenancy(relay_stack: RelayStack, webhook_receiver: WebhookReceiver) -> Tenancy:
    return Tenancy(relay_stack, webhook_receiver)


def enqueue(relay: Any, tenant: str, **body: Any) -> str:
    job = f"{tenant}-{uuid.uuid4().hex[:10]}"
    relay.hunt_queue.send_message(json.dumps({"id": job, "tenant": tenant, "query": QUERY, **body}))
    return job


def test_every_tenant_by_every_destination_kind_own_and_foreign(tenancy: Tenancy):
    relay = tenancy.relay()
    names = list(TENANTS)
    own, foreign = {}, {}
    for index, name in enumerate(names):
        other = names[(index + 1) % len(names)]
        for kind in KINDS:
            own[(name, kind)] = enqueue(relay, name, destination=f"{name}-{kind}")
            foreign[(name, kind)] = enqueue(relay, name, destination=f"{other}-{kind}")
        foreign[(name, "inline")] = enqueue(relay, name, destination=f"https://soc.{other}.example/hook")

    outcomes = {o.job_id: o for o in drain(relay).outcomes}

    assert {k: outcomes[j].status for k, j in own.items()} == dict.fromkeys(own, "delivered")
    assert {k: outcomes[j].error_code for k, j in foreign.items()} == dict.fromkeys(foreign, "DestinationRefused")
    for name in names:
        expected = tenancy.rows_of(name)
        delivered = {
            "blob": tenancy.blobs(name)[f"tenants/{name}/{own[(name, 'blob')]}.json"],
            "queue": next(e for e in tenancy.queued(name) if e["id"] == own[(name, "queue")]),
            "hook": next(e for e in tenancy.hooked(name) if e["id"] == own[(name, "hook")]),
        }
        for kind, document in delivered.items():
            assert (document["tenant"], document["status"], document["results"]) == (name, "succeeded", expected), \
                (name, kind)
        # nothing else at this tenant's destinations: no other tenant's hunt, no failure envelope of a foreign hunt
        assert {b.split("/")[1] for b in tenancy.blobs(name)} == {name}
        assert {e["tenant"] for e in tenancy.queued(name) + tenancy.hooked(name)} <= {name}
        assert all(e["id"].startswith(name) for e in tenancy.queued(name) + tenancy.hooked(name))
    assert len({json.dumps(tenancy.rows_of(name)) for name in names}) == 3   # three tenants, three datasets
    # every call carried the token of the hunt's own tenant: three own hunts each, none for a foreign one
    assert tenancy.stack.sandbox.counters.calls_by_tenant("graph") == {TENANTS[n][0]: 3 for n in names}
    # each refusal is recorded under the tenant that sent it
    records = Counter(name.split("/")[1] for name in tenancy.dead_letter_names())
    assert records == {name: 4 for name in names}


def test_a_hunt_without_a_tenant_or_with_an_unknown_one_is_refused_and_tells_no_tenant_s_destination(tenancy):
    relay = tenancy.relay()
    relay.hunt_queue.send_message(json.dumps({"id": "no-tenant", "query": QUERY, "destination": "contoso-hook"}))
    relay.hunt_queue.send_message(json.dumps({"id": "who", "tenant": "northwind", "query": QUERY,
                                              "destination": "contoso-hook"}))

    outcomes = {o.job_id: o for o in drain(relay).outcomes}

    assert {job: o.status for job, o in outcomes.items()} == {"no-tenant": "rejected", "who": "rejected"}
    assert tenancy.receiver.requests == []
    assert tenancy.stack.sandbox.counters.calls_by_tenant() == {}


def test_a_throttled_tenant_does_not_slow_the_others(tenancy: Tenancy):
    """Contoso has one call per 4 s (its quota, on both sides); Fabrikam and Woodgrove drain at their full rate."""
    tenancy.stack.sandbox.knobs.tenant_quotas[TENANTS["contoso"][0]] = type(tenancy.stack.sandbox.knobs.quota)(
        calls_per_window=1, window_seconds=4.0)
    relay = tenancy.relay(contoso="1/4s")
    jobs = {name: [enqueue(relay, name, destination=f"{name}-blob") for _ in range(count)]
            for name, count in (("contoso", 3), ("fabrikam", 8), ("woodgrove", 8))}

    outcomes = drain(relay).outcomes

    finished = {o.job_id: index for index, o in enumerate(outcomes) if o.status == "delivered"}
    assert set(finished) == {job for group in jobs.values() for job in group}
    last_other = max(finished[job] for name in ("fabrikam", "woodgrove") for job in jobs[name])
    assert last_other < max(finished[job] for job in jobs["contoso"])
    waits = Counter(o.job_id.split("-")[0] for o in outcomes if o.status == "requeued")
    assert waits["contoso"] >= 2 and waits["fabrikam"] == waits["woodgrove"] == 0
    assert tenancy.stack.sandbox.counters.throttled == 0   # the relay's per-tenant gate kept Contoso under its quota


def test_a_429_pauses_only_its_own_tenant(tenancy: Tenancy):
    tenancy.stack.sandbox.knobs.tenant_quotas[TENANTS["fabrikam"][0]] = type(tenancy.stack.sandbox.knobs.quota)(
        calls_per_window=1, window_seconds=3.0)
    relay = tenancy.relay()   # the relay's gate is generous: the sandbox's 429 is what Fabrikam meets
    fabrikam = [enqueue(relay, "fabrikam", destination="fabrikam-blob") for _ in range(3)]
    contoso = [enqueue(relay, "contoso", destination="contoso-blob") for _ in range(6)]

    outcomes = drain(relay, concurrency=2).outcomes

    by_job: dict[str, list[str]] = {}
    for outcome in outcomes:
        by_job.setdefault(outcome.job_id, []).append(outcome.cause)
    assert all(causes[-1] == "delivered" for causes in by_job.values()) and set(by_job) == {*fabrikam, *contoso}
    assert any("throttled" in by_job[job] for job in fabrikam)
    assert all(by_job[job] == ["delivered"] for job in contoso)


def test_a_revoked_consent_fails_that_tenant_s_hunts_naming_the_fix_and_no_other_s(tenancy: Tenancy):
    tenancy.stack.sandbox.directory.revoke_app(TENANTS["fabrikam"][0], APP)
    relay = tenancy.relay()
    revoked = enqueue(relay, "fabrikam", destination="fabrikam-blob")
    fine = [enqueue(relay, name, destination=f"{name}-blob") for name in ("contoso", "woodgrove")]

    outcomes = {o.job_id: o for o in drain(relay).outcomes}

    assert (outcomes[revoked].status, outcomes[revoked].error_code) == ("failed", "SignInFailed")
    failed = tenancy.blobs("fabrikam")[f"tenants/fabrikam/{revoked}.failed.json"]
    assert "fabrikam" in failed["error"]["message"] and "AADSTS700016" in failed["error"]["message"]
    assert "grant-permission --tenant fabrikam" in failed["error"]["hint"]
    assert [outcomes[job].status for job in fine] == ["delivered", "delivered"]


def test_the_home_tenant_works_unchanged_without_hunt_tenants(relay_stack: RelayStack):
    relay = relay_stack.make()
    relay.hunt_queue.send_message(json.dumps({"id": "home-1", "query": QUERY, "api": "mde"}))
    relay.hunt_queue.send_message(json.dumps({"id": "home-2", "tenant": "contoso", "query": QUERY, "api": "mde"}))

    outcomes = {o.job_id: o for o in drain(relay).outcomes}

    assert (outcomes["home-1"].status, outcomes["home-2"].status) == ("delivered", "rejected")
    assert "tenant" not in relay_stack.read_json(relay_stack.results_container, "home-1.json")


def test_a_tenant_s_result_links_and_kept_deliveries_live_under_its_scope(tenancy: Tenancy):
    tenancy.receiver.replies = [503]   # the first delivery is kept for a delivery-only retry
    relay = tenancy.stack.make(
        HUNT_API="graph", HUNT_DESTINATIONS=json.dumps(tenancy.destinations()),
        HUNT_TENANTS=json.dumps(tenancy.tenants()), WOODGROVE_SECRET=WOODGROVE_SECRET,
        AZURE_AUTHORITY_HOST=tenancy.stack.sandbox.authority, HUNT_WEBHOOK_MAX_BYTES="1000")
    job = enqueue(relay, "contoso", destination="contoso-hook",
                  query="DeviceProcessEvents | project ReportId, ProcessCommandLine | take 200")

    causes = [o.cause for o in drain(relay).outcomes]

    assert causes == ["delivery_retry", "delivered"]
    [envelope] = [e for e in tenancy.hooked("contoso") if e["id"] == job][-1:]
    assert envelope["tenant"] == "contoso"
    assert f"/{tenancy.stack.results_container}/tenants/contoso/links/{job}.json?" in envelope["results_url"]
    kept = [b for b in tenancy.stack.results() if "pending" in b]
    assert kept == [f"tenants/contoso/pending/{job}.delivery.json"]
    assert all(name.startswith("tenants/contoso/") for name in tenancy.stack.results())
