"""The peer baseline of `bench/fleet.py`: one worker process of a relay that does what the peers do
(reference/defender-api.md, "What the peers do"): take a hunt from the queue, call the Graph hunting API inline,
and on a 429 sleep in the handler (Retry-After, or 60 s without one), up to 5 tries, then give up.

Each of `--concurrency` threads takes one message at a time (invisible for 15 minutes, longer than the worst
sleeps), signs in to the hunt's tenant with the app's secret (azure-identity, one credential per tenant and
process, its token cached), posts the query, and delivers to the tenant's webhook: the rows
({"id", "tenant", "status": "succeeded", "row_count"}) or, past the tries or on any other error, a failure
({"status": "failed", "error"}). Then it deletes the message. The handler's wall time, receive to delete, is what a
Functions plan bills, and is summed.

    python bench/peer_relay.py --concurrency 4 --stats /tmp/x/peer-1.json   (settings: PEER_* in the environment)

    PEER_STORAGE      the storage connection string      PEER_QUEUE     the hunts' queue
    PEER_API          the hunting API's base URL          PEER_WEBHOOK   the receiver's base URL (+ /hooks/<tenant>)
    PEER_AUTHORITY    the token authority                 PEER_TENANTS   JSON: tenant name -> directory id
    PEER_CLIENT_ID, PEER_SECRET                           the multi-tenant app and its secret
    REQUESTS_CA_BUNDLE                                    the sandbox's certificate (https authority)

On SIGTERM each thread finishes its hunt, then the process writes {"held_seconds", "handled", "tries", "gave_up"}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from azure.identity import ClientSecretCredential
from azure.storage.queue import QueueClient

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
TRIES = 5
DEFAULT_SLEEP = 60.0
VISIBILITY_SECONDS = 900


class Peer:
    def __init__(self, env: dict[str, str]) -> None:
        self.queue = QueueClient.from_connection_string(env["PEER_STORAGE"], env["PEER_QUEUE"])
        self.api, self.webhook = env["PEER_API"], env["PEER_WEBHOOK"]
        self.tenants: dict[str, str] = json.loads(env["PEER_TENANTS"])
        self.credentials = {name: ClientSecretCredential(tenant_id, env["PEER_CLIENT_ID"], env["PEER_SECRET"],
                                                         authority=env["PEER_AUTHORITY"],
                                                         disable_instance_discovery=True)
                            for name, tenant_id in self.tenants.items()}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.held = 0.0
        self.counts: Counter[str] = Counter()

    def run(self, concurrency: int) -> None:
        threads = [threading.Thread(target=self._loop, name=f"peer-{n}") for n in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _loop(self) -> None:
        session = requests.Session()
        idle = 0.1
        while not self.stop.is_set():
            try:
                messages = list(self.queue.receive_messages(max_messages=1, visibility_timeout=VISIBILITY_SECONDS))
            except Exception:   # storage hiccup: poll again shortly
                messages = []
            if not messages:
                self.stop.wait(idle)
                idle = min(idle * 2, 2.0)
                continue
            idle = 0.1
            started = time.perf_counter()
            self._hunt(session, json.loads(messages[0].content))
            self.queue.delete_message(messages[0])
            with self.lock:
                self.held += time.perf_counter() - started
                self.counts["handled"] += 1

    def _hunt(self, session: requests.Session, hunt: dict[str, Any]) -> None:
        tenant = hunt["tenant"]
        token = self.credentials[tenant].get_token(GRAPH_SCOPE).token
        error = ""
        for _ in range(TRIES):
            with self.lock:
                self.counts["tries"] += 1
            reply = session.post(self.api + "/v1.0/security/runHuntingQuery", json={"Query": hunt["query"]},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=300)
            if reply.status_code == 200:
                rows = reply.json()["results"]
                self._deliver(session, tenant, {"id": hunt["id"], "tenant": tenant, "status": "succeeded",
                                                "row_count": len(rows)})
                return
            if reply.status_code != 429:
                error = f"HTTP {reply.status_code}"
                break
            error = "HTTP 429"
            try:
                pause = float(reply.headers.get("Retry-After", DEFAULT_SLEEP))
            except ValueError:
                pause = DEFAULT_SLEEP
            time.sleep(pause)   # what the peers do: the worker is held (and billed) while it sleeps
        with self.lock:
            self.counts["gave_up"] += 1
        self._deliver(session, tenant, {"id": hunt["id"], "tenant": tenant, "status": "failed",
                                        "error": f"gave up after {TRIES} tries: {error}"})

    def _deliver(self, session: requests.Session, tenant: str, envelope: dict[str, Any]) -> None:
        session.post(f"{self.webhook}/hooks/{tenant}", json=envelope, timeout=30).raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args()
    peer = Peer(dict(os.environ))
    signal.signal(signal.SIGTERM, lambda *_: peer.stop.set())
    peer.run(args.concurrency)
    args.stats.write_text(json.dumps({"held_seconds": peer.held, "handled": peer.counts["handled"],
                                      "tries": peer.counts["tries"], "gave_up": peer.counts["gave_up"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
