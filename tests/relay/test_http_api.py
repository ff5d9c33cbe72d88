"""The HTTP front door over the local stack: the real handlers on the real portable server (waitress), real HTTP,
Azurite and the sandbox; the job ledger they read is written by the relay as hunts run."""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from shared.app.http_api import HuntApi
from shared.app.http_server import ApiServer
from shared.app.job_commands import run as job_command
from shared.app.worker import PortableWorker
from tests.relay.conftest import RelayStack, drain
from tests.relay.test_tenants import WOODGROVE_SECRET, Tenancy

KEY = "relay-key-0123456789abcdef"
QUERY = "DeviceInfo | project DeviceId, DeviceName | take 3"


class Front:
    def __init__(self, stack: RelayStack, **extra: str) -> None:
        stack.monkeypatch.setenv("API_KEY_MAIN", KEY)
        self.stack = stack
        self.relay = stack.make(HUNT_API_KEYS=extra.pop("HUNT_API_KEYS", "API_KEY_MAIN"), API_KEY_MAIN=KEY, **extra)
        self.server = ApiServer(HuntApi(self.relay), port=0).start()
        self.url = self.server.url

    def post(self, body: Any, key: str | None = KEY, **kwargs: Any) -> requests.Response:
        headers = {"x-functions-key": key} if key else {}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(self.url + "/api/hunts", data=data, timeout=30,
                             headers={"Content-Type": "application/json", **headers, **kwargs.pop("headers", {})},
                             **kwargs)

    def get(self, path: str, key: str | None = KEY, **params: str) -> requests.Response:
        return requests.get(self.url + path, params={**params, **({"code": key} if key else {})}, timeout=30)

    def delete(self, path: str, key: str | None = KEY) -> requests.Response:
        return requests.delete(self.url + path, headers={"x-functions-key": key} if key else {}, timeout=30)

    def queued(self) -> int:
        return self.relay.hunt_queue.get_queue_properties().approximate_message_count

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def front(relay_stack: RelayStack) -> Iterator[Front]:
    built = Front(relay_stack)
    yield built
    built.close()


def hunt(**extra: Any) -> dict[str, Any]:
    return {"id": "http-" + uuid.uuid4().hex[:10], "query": QUERY, "api": "mde", **extra}


def test_submit_poll_and_get_the_envelope(front: Front):
    body = hunt(context={"case": 7})
    submitted = front.post(body)

    assert submitted.status_code == 202
    assert submitted.headers["Location"] == f"{front.url}/api/hunts/{body['id']}"
    assert submitted.headers["Retry-After"] == "2"
    assert submitted.json() == {"id": body["id"], "status": "queued", "status_url": submitted.headers["Location"]}
    queued = front.get(f"/api/hunts/{body['id']}")
    assert (queued.status_code, queued.json()["status"]) == (202, "queued")

    drain(front.relay)

    done = front.get(f"/api/hunts/{body['id']}")
    assert done.status_code == 200
    envelope = done.json()
    assert (envelope["id"], envelope["status"], envelope["row_count"], envelope["context"]) == (
        body["id"], "succeeded", 3, {"case": 7})


def test_the_same_request_again_is_its_status_and_a_different_one_is_a_409_and_nothing_is_enqueued_twice(front):
    body = hunt()
    assert front.post(body).status_code == 202
    again = front.post(body)
    conflict = front.post({**body, "query": "DeviceInfo | take 1"})

    assert (again.status_code, again.json()["status"]) == (202, "queued")
    assert conflict.status_code == 409 and conflict.json()["error"]["field"] == "id"
    assert front.queued() == 1
    drain(front.relay)
    assert front.post(body).status_code == 200   # finished: the envelope, still no second enqueue
    assert front.queued() == 0


@pytest.mark.parametrize(("data", "headers", "status", "field"), [
    (b"{not json", {}, 400, ""),
    (json.dumps({"query": "x", "format": "xml"}).encode(), {}, 400, "format"),
    (json.dumps({"query": "x", "attempt": 3}).encode(), {}, 400, "attempt"),
    (json.dumps({"query": "x" * 70_000}).encode(), {}, 413, None),
    (b'{"query": "x"}', {"Content-Type": "text/plain"}, 415, None),
])
def test_bad_submissions_are_refused_and_nothing_is_enqueued(front: Front, data, headers, status, field):
    reply = front.post(data, headers=headers)

    assert reply.status_code == status, reply.text
    if field is not None:
        assert reply.json()["error"]["code"] == "InvalidHuntRequest" and reply.json()["error"]["field"] == field
    assert front.queued() == 0


def test_a_hunt_cancelled_before_it_ran_ends_without_an_api_call_and_one_that_ran_cannot_be(front: Front):
    cancelled, ran = hunt(), hunt()
    front.post(cancelled)
    front.post(ran)
    first = front.delete(f"/api/hunts/{cancelled['id']}")

    assert first.status_code == 200 and first.json() == {"id": cancelled["id"], "status": "cancelled"}
    outcomes = {o.job_id: o.status for o in drain(front.relay).outcomes}

    assert outcomes == {cancelled["id"]: "cancelled", ran["id"]: "delivered"}
    assert front.stack.sandbox.counters.calls_to("mde") == 1
    assert front.get(f"/api/hunts/{cancelled['id']}").json() == {"id": cancelled["id"], "status": "cancelled"}
    late = front.delete(f"/api/hunts/{ran['id']}")
    assert late.status_code == 409 and late.json()["error"]["status"] == "delivered"
    assert front.delete("/api/hunts/no-such-hunt").status_code == 404


def test_status_through_a_throttled_hunt_says_when_its_next_attempt_is(front: Front):
    front.stack.sandbox.knobs.quota.calls_per_window = 1
    front.stack.sandbox.knobs.quota.window_seconds = 30.0
    first, second = hunt(), hunt()
    front.post(first)
    front.post(second)
    outcomes = {}
    for message in front.relay.hunt_queue.receive_messages(messages_per_page=2, visibility_timeout=60):
        outcome = front.relay.handle(message.content.encode(), message_id=message.id, dequeue_count=1)
        outcomes[outcome.job_id] = outcome
        front.relay.hunt_queue.delete_message(message)
    throttled = next(o for o in outcomes.values() if o.status == "requeued")

    reply = front.get(f"/api/hunts/{throttled.job_id}")

    assert reply.status_code == 202 and reply.json()["status"] == "throttled"
    assert abs(int(reply.headers["Retry-After"]) - throttled.delay) <= 1.0
    assert "next_attempt_at" in reply.json()


def test_the_ledger_follows_a_hunt_that_came_by_queue(front: Front):
    front.stack.sandbox.knobs.faults.status_next = 1   # one 503 first: a retry on the way
    job = "by-queue-" + uuid.uuid4().hex[:8]
    front.relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, "api": "mde"}))
    seen = []
    front.relay.observers.append(lambda outcome, message: seen.append(front.relay.jobs.get(None, job).status))

    drain(front.relay)

    assert seen == ["retrying", "delivered"]
    record = front.relay.jobs.get(None, job)
    assert record.location == f"{front.stack.results_container}/{job}.json" and record.attempts == 2
    assert front.get(f"/api/hunts/{job}").json()["row_count"] == 3


def test_the_list_pages_and_filters(front: Front):
    jobs = [hunt() for _ in range(5)]
    for body in jobs:
        front.post(body)
    page = front.get("/api/hunts", page_size="2", status="queued").json()
    found = [j["id"] for j in page["value"]]
    while "next" in page:
        page = requests.get(front.url + page["next"], headers={"x-functions-key": KEY}, timeout=30).json()
        found += [j["id"] for j in page["value"]]

    assert sorted(found) == sorted(j["id"] for j in jobs)
    assert front.get("/api/hunts", status="delivered").json()["value"] == []
    assert front.get("/api/hunts", status="done").status_code == 400


class LogicAppsClient:
    """What the Logic Apps HTTP action does with the async pattern: POST, then GET the Location, sleeping for
    Retry-After between polls, until a 200."""

    def __init__(self, key: str) -> None:
        self.key, self.polls, self.waits = key, 0, []

    def run(self, url: str, body: dict[str, Any], timeout: float = 90.0) -> requests.Response:
        reply = requests.post(url, json=body, headers={"x-functions-key": self.key}, timeout=30)
        deadline = time.monotonic() + timeout
        while reply.status_code == 202 and time.monotonic() < deadline:
            wait = int(reply.headers.get("Retry-After", "5"))
            self.waits.append(wait)
            time.sleep(wait)
            reply = requests.get(reply.headers["Location"], headers={"x-functions-key": self.key}, timeout=30)
            self.polls += 1
        return reply


def test_a_logic_apps_style_client_gets_the_result_through_a_429_and_a_retry(front: Front):
    front.stack.sandbox.knobs.quota.calls_per_window = 1
    front.stack.sandbox.knobs.quota.window_seconds = 4.0
    front.stack.sandbox.knobs.faults.status_next = 1
    stop = threading.Event()
    worker = PortableWorker(front.relay.hunt_queue, None, lambda raw, mid, count: front.relay.handle(
        raw, message_id=mid, dequeue_count=count), concurrency=2, retry_visibility=1)
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        # The hunt's first call is a 503 (which the sandbox counts), so a retry within the window meets its 429.
        client = LogicAppsClient(KEY)
        result = client.run(front.url + "/api/hunts", hunt())
    finally:
        stop.set()
        thread.join(10)

    assert result.status_code == 200, result.text
    assert (result.json()["status"], result.json()["row_count"]) == ("succeeded", 3)
    assert front.stack.sandbox.counters.calls_to("mde", 503) == 1   # and a 429 when the retry met the same window
    assert front.stack.sandbox.counters.calls_to("mde") >= 2        # the hunt ran again after its 503
    # The client was answered 202 with a Retry-After and came back on the Location; how many polls that takes
    # depends on how soon the worker takes up the retried copy (it polls as the copy becomes visible).
    assert client.polls >= 1 and max(client.waits) >= 1


def test_status_and_wait_read_the_ledger_with_their_exit_codes(front: Front, monkeypatch, capsys):
    for name, value in front.stack.env(HUNT_API_KEYS="API_KEY_MAIN", API_KEY_MAIN=KEY).items():
        monkeypatch.setenv(name, value)
    body = hunt()
    front.post(body)

    assert job_command(argparse.Namespace(command="status", id=body["id"], tenant=None)) == 2
    assert job_command(argparse.Namespace(command="wait", id=body["id"], tenant=None, timeout="1s")) == 2
    drain(front.relay)
    assert job_command(argparse.Namespace(command="wait", id=body["id"], tenant=None, timeout="10s")) == 0
    assert job_command(argparse.Namespace(command="status", id="nobody", tenant=None)) == 3
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "delivered"


# --- keys and tenants ----------------------------------------------------------------------------------------------

@pytest.fixture
def tenant_front(relay_stack: RelayStack, webhook_receiver, monkeypatch) -> Iterator[tuple[Front, Tenancy]]:
    tenancy = Tenancy(relay_stack, webhook_receiver)
    keys = {"KEY_CONTOSO": "contoso-key-0123456789", "KEY_FABRIKAM": "fabrikam-key-0123456789"}
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    built = Front(relay_stack, HUNT_API_KEYS="KEY_CONTOSO:contoso KEY_FABRIKAM:fabrikam", HUNT_API="graph",
                  HUNT_DESTINATIONS=json.dumps(tenancy.destinations()), HUNT_TENANTS=json.dumps(tenancy.tenants()),
                  WOODGROVE_SECRET=WOODGROVE_SECRET, AZURE_AUTHORITY_HOST=relay_stack.sandbox.authority, **keys)
    yield built, tenancy
    built.close()


def test_every_route_by_no_key_a_wrong_key_its_tenant_s_key_and_another_tenant_s(tenant_front):
    front, _ = tenant_front
    own, other = "contoso-key-0123456789", "fabrikam-key-0123456789"
    body = {"id": "route-1", "tenant": "contoso", "query": QUERY, "destination": "contoso-blob"}
    routes = {
        "submit": lambda key: front.post(body, key=key),
        "status": lambda key: front.get("/api/hunts/route-1", key=key, tenant="contoso"),
        "list": lambda key: front.get("/api/hunts", key=key, tenant="contoso"),
        "cancel": lambda key: front.delete("/api/hunts/route-1?tenant=contoso", key=key),
    }
    expected = {   # no key, a wrong key, the tenant's own key, another tenant's key
        "submit": (401, 401, 202, 403),
        "status": (401, 401, 202, 404),
        "list": (401, 401, 200, 200),
        "cancel": (401, 401, 200, 404),
    }
    got = {}
    for name, call in routes.items():
        got[name] = tuple(call(key).status_code for key in (None, "wrong-key-0123456789", own, other))
    assert got == expected
    # another tenant's key sees nothing of contoso's in the list either
    assert front.get("/api/hunts", key=other, tenant="contoso").json()["value"] == []
    listed = front.get("/api/hunts", key=own).json()["value"]
    assert [(j["id"], j["tenant"]) for j in listed] == [("route-1", "contoso")]


def test_a_tenant_s_key_submits_for_its_tenant_by_default_and_the_result_is_its_own(tenant_front):
    front, tenancy = tenant_front
    submitted = front.post({"id": "mine-1", "query": QUERY}, key="contoso-key-0123456789")

    assert submitted.status_code == 202 and submitted.json()["tenant"] == "contoso"
    drain(front.relay)
    reply = requests.get(submitted.headers["Location"], headers={"x-functions-key": "contoso-key-0123456789"},
                         timeout=30)
    assert reply.status_code == 200
    assert (reply.json()["tenant"], reply.json()["row_count"]) == ("contoso", 3)
    assert tenancy.blobs("contoso")["tenants/contoso/mine-1.json"]["results"] == reply.json()["results"]
    assert requests.get(submitted.headers["Location"], headers={"x-functions-key": "fabrikam-key-0123456789"},
                        timeout=30).status_code == 404


# --- Entra ID bearer tokens ----------------------------------------------------------------------------------------

AUDIENCE = "api://hunt-relay"


@pytest.fixture
def bearer_front(relay_stack: RelayStack) -> Iterator[Front]:
    relay_stack.monkeypatch.setenv("REQUESTS_CA_BUNDLE", relay_stack.sandbox.ca_path)
    built = Front(relay_stack, HUNT_API_AUDIENCE=AUDIENCE, AZURE_TENANT_ID="sandbox-tenant",
                  AZURE_AUTHORITY_HOST=relay_stack.sandbox.authority, HUNT_API_CALLERS="soar-app")
    yield built
    built.close()


def bearer_post(front: Front, token: str) -> requests.Response:
    return requests.post(front.url + "/api/hunts", json=hunt(), headers={"Authorization": "Bearer " + token},
                         timeout=30)


def test_an_entra_token_for_the_api_s_audience_is_accepted_from_a_listed_app(bearer_front: Front):
    from azure.identity import ClientSecretCredential

    sandbox = bearer_front.stack.sandbox
    sandbox.add_app("sandbox-tenant", "soar-app", "soar-secret", [])
    credential = ClientSecretCredential("sandbox-tenant", "soar-app", "soar-secret", authority=sandbox.authority,
                                        disable_instance_discovery=True)
    token = credential.get_token(AUDIENCE + "/.default").token

    accepted = bearer_post(bearer_front, token)

    assert accepted.status_code == 202, accepted.text
    status = requests.get(accepted.headers["Location"], headers={"Authorization": "Bearer " + token}, timeout=30)
    assert status.status_code == 202


def test_bearer_tokens_are_checked_for_signature_issuer_audience_expiry_and_caller(bearer_front: Front):
    from sandbox.tokens import TokenIssuer

    issuer = bearer_front.stack.sandbox.issuer

    def minted(**changes: Any) -> str:
        fields = {"audience": AUDIENCE, "tenant": "sandbox-tenant", "client_id": "soar-app", "roles": [],
                  "lifetime_seconds": 300, **changes}
        signer = fields.pop("signer", issuer)
        return signer.mint(**fields)[0]

    cases = {
        "valid": (minted(), 202),
        "another audience": (minted(audience="https://graph.microsoft.com"), 401),
        "another tenant": (minted(tenant="other-tenant"), 401),
        "expired": (minted(now=time.time() - 3600), 401),
        "another signing key": (minted(signer=TokenIssuer()), 401),
        "not a JWT": ("not-a-token", 401),
        "an app not listed": (minted(client_id="stranger-app"), 403),
    }
    got = {name: bearer_post(bearer_front, token).status_code for name, (token, _) in cases.items()}
    assert got == {name: status for name, (_, status) in cases.items()}


def test_relay_only_fields_are_refused_and_a_cancel_binds_to_its_own_request(front: Front):
    refused = front.post(hunt(schedule="hourly", slot="2026-11-30T09:00:00Z/2026-11-30T10:00:00Z"))
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, "schedule")

    # A caller submits and cancels under an id another producer then uses for another hunt: that one runs.
    squatted = hunt()
    front.post(squatted)
    front.delete(f"/api/hunts/{squatted['id']}")
    front.relay.hunt_queue.clear_messages()
    front.relay.hunt_queue.send_message(json.dumps({**squatted, "query": "DeviceInfo | take 2"}))

    assert [o.status for o in drain(front.relay).outcomes] == ["delivered"]


def test_a_message_that_is_not_a_hunt_never_overwrites_a_job_s_ledger_entry(front: Front):
    body = hunt()
    front.post(body)
    drain(front.relay)
    front.relay.hunt_queue.send_message(json.dumps({"id": body["id"], "query": ""}))   # invalid, same id

    assert [o.status for o in drain(front.relay).outcomes] == ["rejected"]
    assert front.get(f"/api/hunts/{body['id']}").json()["status"] == "succeeded"


def test_function_keys_say_nothing_of_tenants_so_a_relay_with_tenants_needs_its_own_keys(relay_stack: RelayStack):
    from shared.app.http_api import HttpRequest

    relay = relay_stack.make(HUNT_TENANTS=json.dumps({"contoso": {
        "tenant_id": "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", "auth": "federated", "client_id": "app",
        "destinations": ["default"]}}))
    reply = HuntApi(relay, host_checked=True).handle(HttpRequest("GET", "/api/hunts"))
    assert reply.status == 403 and b"HUNT_API_KEYS" in reply.body


def test_bearer_tokens_need_the_callers_listed():
    from shared.app.config import load_settings
    from shared.core.errors import SettingsError
    from tests.core.test_settings import STORAGE

    with pytest.raises(SettingsError, match="HUNT_API_CALLERS is required"):
        load_settings({**STORAGE, "HUNT_API_AUDIENCE": "api://hunt-relay", "AZURE_TENANT_ID": "t"})
