"""`make demo`: Hunt Relay end to end on the local stack, in about a minute.

Starts Azurite, the sandbox (`python -m sandbox --rows 130000`) and a local webhook receiver; puts the seed
documents' example hunts and a few more on the queue (Graph first; a legacy mde hunt routed to Graph because the
sandbox plays mde as retired; a split hunt over 130,000 rows, more than the service returns for one query; one to
the webhook, one csv, one with a KQL syntax error, one the identity has no permission for); runs the portable
worker (`python -m shared worker --drain`) until the queue is empty; prints a table of what became of each hunt.
Then one hunt over the HTTP API (`worker --serve`), submitted and polled as a Logic App does. Then, as an
MSSP's relay: two customer tenants with data of their own, signed in keyless (the managed identity's
token as the multi-tenant app's assertion), a hunt for each landing in its own tenant's container, and one refused
because it asked for the other tenant's destination. Stops everything it started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from sandbox.azurite import Azurite
from sandbox.tokens import object_id_for
from sandbox.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
DEMO_IDENTITY = "demo-relay-identity"
DEMO_ROWS = 130_000   # DeviceProcessEvents rows in the sandbox's 30 days: the split hunt needs more than 100,000

HUNTS: list[dict[str, Any]] = [   # Graph first: the legacy mde and m365d APIs retire on 2027-02-01
    {"id": "seed-powershell", "api": "graph", "timespan": "P7D",
     "query": 'DeviceProcessEvents | where InitiatingProcessFileName =~ "powershell.exe" '
              "| project Timestamp, FileName, InitiatingProcessFileName | order by Timestamp desc | limit 2"},
    # The sandbox plays mde as retired: this legacy hunt runs on Graph, and its envelope says so.
    {"id": "legacy-mde-routed", "api": "mde",
     "query": "DeviceProcessEvents\n| where InitiatingProcessFileName =~ 'powershell.exe'\n"
              "| where ProcessCommandLine contains 'appdata'\n"
              "| project Timestamp, FileName, InitiatingProcessFileName, DeviceId\n| limit 2"},
    # More rows than one query returns (100,000): the relay splits the 30 days in halves and delivers them all.
    {"id": "split-all-processes", "api": "graph", "split": True,
     "query": "DeviceProcessEvents | project Timestamp, DeviceName, FileName, SHA256"},
    {"id": "xdr-alerts-by-severity", "api": "graph",
     "query": "AlertInfo | summarize Alerts = count() by Severity | order by Alerts desc"},
    {"id": "xdr-logons-csv", "api": "graph", "format": "csv",
     "query": "DeviceLogonEvents | where ActionType == 'LogonFailed' | project Timestamp, DeviceName, AccountName "
              "| take 20"},
    {"id": "network-to-webhook", "api": "graph", "destination": "soc-webhook",
     "context": {"incident": "INC-1042", "playbook_run": "demo"},
     "query": "DeviceNetworkEvents | where RemotePort == 443 | project Timestamp, DeviceName, RemoteUrl | take 5"},
    {"id": "bad-kql", "api": "graph", "query": "DeviceProcessEvents | wherex FileName == 'x'"},
    {"id": "m365d-no-permission", "api": "m365d", "query": "EmailEvents | take 3"},
]


# An MSSP's relay for two customer tenants, keyless: its managed identity signs in as the multi-tenant app.
MULTI_TENANT_APP = "a1b2c3d4-0000-4000-8000-00000000abcd"
CUSTOMERS = {"contoso": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", 101),
             "fabrikam": ("3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7002", 202)}
TENANT_HUNTS: list[dict[str, Any]] = [
    {"id": "contoso-powershell", "tenant": "contoso",
     "query": "DeviceProcessEvents | where FileName =~ 'powershell.exe' | project Timestamp, DeviceName | take 5"},
    {"id": "fabrikam-powershell", "tenant": "fabrikam",
     "query": "DeviceProcessEvents | where FileName =~ 'powershell.exe' | project Timestamp, DeviceName | take 5"},
    # Asks for the other tenant's destination: refused, recorded under contoso, nothing reaches fabrikam.
    {"id": "contoso-wrong-destination", "tenant": "contoso", "destination": "fabrikam-results",
     "query": "DeviceInfo | take 1"},
]


def start_sandbox() -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--tls-port", "0", "--rows",
                                str(DEMO_ROWS)],
                               cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("sandbox ready:"):
        process.kill()
        raise SystemExit(f"the sandbox did not start: {line!r}")
    fields = dict(part.split("=", 1) for part in line.removeprefix("sandbox ready:").split())
    return process, fields


def main() -> int:
    started = time.monotonic()
    receiver = WebhookReceiver().start()
    with Azurite() as azurite:
        sandbox, where = start_sandbox()
        try:
            print(f"local stack: Azurite queue on port {azurite.ports.queue}, sandbox at {where['api']}, "
                  f"webhook receiver at {receiver.url}")
            # The demo's managed identity holds Graph's role and mde's but not m365d's, to show that failure; and the
            # sandbox plays mde as retired (HTTP 410), so the mde hunt is routed to Graph.
            requests.post(where["api"] + "/_sandbox/identities", timeout=10,
                          json={"client_id": DEMO_IDENTITY,
                                "roles": ["ThreatHunting.Read.All", "AdvancedQuery.Read.All"]}).raise_for_status()
            requests.post(where["api"] + "/_sandbox/knobs", timeout=10,
                          json={"retired_apis": ["mde"], "retired_form": "gone"}).raise_for_status()
            env = {
                **os.environ,
                "AzureWebJobsStorage": azurite.connection_string,
                "HUNT_QUEUE": "hunts",
                "HUNT_API_BASE_URL": where["api"],
                "HUNT_ALLOW_LOOPBACK_HTTP": "true",
                "IDENTITY_ENDPOINT": where["msi"],
                "IDENTITY_HEADER": "sandbox",
                "AZURE_CLIENT_ID": DEMO_IDENTITY,
                "HUNT_DESTINATIONS": json.dumps({
                    "results": {"type": "blob", "container": "hunt-results", "prefix": "demo/"},
                    "soc-webhook": {"type": "webhook", "url": receiver.url},
                }),
                "HUNT_DEFAULT_DESTINATION": "results",
                "HUNT_LOG_LEVEL": "WARNING",
            }
            queue = QueueClient.from_connection_string(azurite.connection_string, "hunts")
            queue.create_queue()
            for hunt in HUNTS:
                queue.send_message(json.dumps(hunt))
            print(f"enqueued {len(HUNTS)} hunts; running the worker until the queue drains ...")
            subprocess.run([sys.executable, "-m", "shared", "worker", "--drain", "--concurrency", "4"],
                           cwd=ROOT, env=env, check=True)
            print_table(azurite, receiver)
            run_http(env)
            run_schedule(azurite, env)
            run_tenants(azurite, where, env)
        finally:
            sandbox.terminate()
            sandbox.wait(10)
            receiver.stop()
    print(f"demo finished in {time.monotonic() - started:.1f} s")
    return 0


def run_schedule(azurite: Azurite, home_env: dict[str, str]) -> None:
    """A schedule with a short `every` (PT5M) and a start 20 minutes ago: the scheduler's one pass enqueues the
    four slots that have ended (catching up, oldest first), and the worker runs them, each over its own slot."""
    folder = Path(tempfile.mkdtemp(prefix="demo-schedules-"))
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=20 + now.minute % 5)
    (folder / "demo-every-five.json").write_text(json.dumps({
        "every": "PT5M", "start": start.isoformat(), "destination": "results",
        "query": "DeviceProcessEvents | project Timestamp, DeviceName, FileName"}))
    env = {**home_env, "HUNT_QUEUE": "scheduled-hunts", "HUNT_SCHEDULES_DIR": str(folder)}
    subprocess.run([sys.executable, "-m", "shared", "scheduler", "--once"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "shared", "worker", "--drain", "--concurrency", "2"], cwd=ROOT, env=env,
                   check=True)
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("hunt-results")
    print(f"\na schedule every PT5M, started {start:%H:%M} UTC (a short every, so that the demo sees slots):")
    for blob in sorted(blobs.list_blobs(name_starts_with="demo/demo-every-five-"), key=lambda b: b.name):
        document = json.loads(blobs.download_blob(blob.name).readall())
        print(f"  {document['id']:<38} slot {document['slot']:<45} {document['row_count']:>3} rows")
    print()


def run_http(home_env: dict[str, str]) -> None:
    """One hunt submitted over HTTP and waited for as a Logic App's HTTP action does: POST, then poll Location,
    sleeping Retry-After, until a 200."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = "demo-api-key-" + os.urandom(8).hex()
    env = {**home_env, "HUNT_QUEUE": "http-hunts", "HUNT_API_KEYS": "DEMO_API_KEY", "DEMO_API_KEY": key}
    server = subprocess.Popen([sys.executable, "-m", "shared", "worker", "--serve", "--port", str(port)],
                              cwd=ROOT, env=env)
    base, headers = f"http://127.0.0.1:{port}", {"x-functions-key": key}
    try:
        for _ in range(100):   # until the API answers
            try:
                requests.get(base + "/api/hunts", headers=headers, timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        started = time.monotonic()
        reply = requests.post(base + "/api/hunts", headers=headers, timeout=10, json={
            "id": "over-http", "api": "graph", "context": {"ticket": "SOAR-77"},
            "query": "DeviceInfo | project DeviceName, OSPlatform | take 3"})
        print(f"\nover HTTP: POST /api/hunts -> {reply.status_code}, Location {reply.headers.get('Location')}")
        polls = 0
        while reply.status_code == 202 and time.monotonic() - started < 60:
            time.sleep(int(reply.headers.get("Retry-After", "1")))
            reply = requests.get(reply.headers["Location"], headers=headers, timeout=10)
            polls += 1
        document = reply.json()
        print(f"over HTTP: {polls} polls, then {reply.status_code}: {document.get('status')}, "
              f"{document.get('row_count')} rows, context {document.get('context')} "
              f"({time.monotonic() - started:.1f} s)")
    finally:
        server.terminate()
        server.wait(30)


def run_tenants(azurite: Azurite, where: dict[str, str], home_env: dict[str, str]) -> None:
    """Two customer tenants with data of their own, each hunt landing in its own tenant's container."""
    admin = where["api"] + "/_sandbox/"
    for tenant_id, seed in CUSTOMERS.values():
        requests.post(admin + "tenants", json={"tenant_id": tenant_id, "seed": seed}, timeout=60).raise_for_status()
        requests.post(admin + "apps", json={"tenant": tenant_id, "client_id": MULTI_TENANT_APP,
                                            "roles": ["ThreatHunting.Read.All"]}, timeout=10).raise_for_status()
    requests.post(admin + "federated", timeout=10, json={
        "client_id": MULTI_TENANT_APP, "issuer": "https://sts.windows.net/sandbox-tenant/",
        "subject": object_id_for(DEMO_IDENTITY)}).raise_for_status()
    env = {**home_env, "HUNT_QUEUE": "tenant-hunts", "AZURE_AUTHORITY_HOST": where["authority"],
           "REQUESTS_CA_BUNDLE": where["ca"],
           "HUNT_DESTINATIONS": json.dumps({f"{name}-results": {"type": "blob", "container": f"{name}-results"}
                                            for name in CUSTOMERS}),
           "HUNT_TENANTS": json.dumps({name: {"tenant_id": tenant_id, "auth": "federated",
                                              "client_id": MULTI_TENANT_APP, "destinations": [f"{name}-results"]}
                                       for name, (tenant_id, _) in CUSTOMERS.items()})}
    env.pop("HUNT_DEFAULT_DESTINATION", None)
    queue = QueueClient.from_connection_string(azurite.connection_string, "tenant-hunts")
    queue.create_queue()
    for hunt in TENANT_HUNTS:
        queue.send_message(json.dumps(hunt))
    print(f"two customer tenants (federated sign-in, no secret): enqueued {len(TENANT_HUNTS)} hunts ...")
    subprocess.run([sys.executable, "-m", "shared", "worker", "--drain", "--concurrency", "2"],
                   cwd=ROOT, env=env, check=True)
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    found: dict[str, tuple[dict[str, Any], str]] = {}
    for name in CUSTOMERS:
        container = service.get_container_client(f"{name}-results")
        for blob in container.list_blobs():
            document = json.loads(container.download_blob(blob.name).readall())
            found[str(document["id"])] = (document, f"blob {name}-results/{blob.name}")
    dead = service.get_container_client("hunt-deadletter")
    for blob in dead.list_blobs(name_starts_with="tenants/"):
        record = json.loads(dead.download_blob(blob.name).readall())
        if record["key"] not in found:
            found[record["key"]] = ({"tenant": record.get("tenant"), "status": "failed", "error": record["error"]},
                                    f"dead letter hunt-deadletter/{blob.name}")
    print()
    print(f"{'job id':<26} {'tenant':<9} {'status':<10} {'rows':>5}  destination / error")
    for hunt in TENANT_HUNTS:
        document, place = found.get(hunt["id"], ({}, "(not delivered)"))
        error = document.get("error", {})
        detail = f"{error.get('code')}: {error.get('message', '')[:70]} ({place})" if error else place
        print(f"{hunt['id']:<26} {document.get('tenant', hunt['tenant']):<9} {document.get('status', 'missing'):<10} "
              f"{document.get('row_count', ''):>5}  {detail}")
    print()


def print_table(azurite: Azurite, receiver: WebhookReceiver) -> None:
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("hunt-results")
    envelopes: dict[str, tuple[dict[str, Any], str]] = {}
    for blob in blobs.list_blobs(name_starts_with="demo/", include=["metadata"]):
        data = blobs.download_blob(blob.name).readall()
        if blob.name.endswith(".json"):
            document = json.loads(data)
        else:
            meta = blob.metadata or {}
            document = {"id": meta.get("hunt_id"), "status": meta.get("hunt_status"), "api": meta.get("hunt_api"),
                        "row_count": int(meta.get("hunt_row_count", 0))}
        envelopes[str(document["id"])] = (document, "blob hunt-results/" + blob.name)
    for request in receiver.requests:
        document = json.loads(request.body)
        envelopes[str(document["id"])] = (document, "webhook " + receiver.url)
    print()
    print(f"{'job id':<24} {'api':<12} {'status':<10} {'rows':>7}  {'time':>6}  destination / error")
    for hunt in HUNTS:
        document, where = envelopes.get(hunt["id"], ({}, "(not delivered)"))
        took = _seconds(document)
        error = document.get("error", {})
        detail = f"{error.get('code')}: {error.get('message', '')[:60]}" if error else where
        ran = str(document.get("api") or hunt["api"])
        api = f"{document['requested_api']}>{ran}" if document.get("requested_api") else ran
        if document.get("warnings"):
            detail += f" ({document['warnings'][0]})"
        if document.get("parts"):
            rows = ", ".join(f"{part['row_count']:,}" for part in document["parts"])
            detail += f" ({len(document['parts'])} parts by time: {rows} rows; truncated: {document['truncated']})"
        print(f"{hunt['id']:<24} {api:<12} {document.get('status', 'missing'):<10} "
              f"{document.get('row_count', ''):>7}  {took:>6}  {detail}")
    print()


def _seconds(document: dict[str, Any]) -> str:
    try:
        start = datetime.fromisoformat(document["submitted_at"])
        end = datetime.fromisoformat(document["completed_at"])
    except (KeyError, ValueError):
        return ""
    return f"{(end - start).total_seconds():.2f}s"


if __name__ == "__main__":
    sys.exit(main())
