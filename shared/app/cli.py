"""The command line: `python -m shared worker | enqueue | grant-permission`.

    worker   [--drain] [--concurrency N]     run hunts from the queue (the portable worker)
    grant-permission --principal-id ID [--api mde|m365d|graph]   grant the hunting role via Microsoft Graph
    enqueue  --query KQL [--id] [--api] [--destination] [--timespan] [--format] [--context JSON] [--base64]
             puts one hunt on the queue (validated first) and prints its job id
    redrive  [--code C] [--tenant T] [--since D] [--until D] [--id J] [--all] [--kept] [--dry-run]
             dead-lettered (and poisoned) hunts enqueued again under their own ids; --kept: kept deliveries sent again
    quota    [--tenant T] [--json]   per tenant and API: each window's calls used and left, paused until
    inspect  ID [--tenant T]         everything stored about one job, as JSON (shared.app.operator_commands)
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError

from shared.app import breaker_commands, grant_permission, job_commands, operator_commands, tenant_commands
from shared.app.config import load_settings

if TYPE_CHECKING:
    from shared.app.relay import Relay
from shared.core.apis import API_NAMES
from shared.core.errors import HuntRelayError
from shared.core.hunt_request import FORMATS, decode_hunt_request
from shared.core.schedules import ScheduleError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared", description="Hunt Relay")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run hunts from the queue")
    worker.add_argument("--drain", action="store_true", help="return once the queue is empty (delayed included)")
    worker.add_argument("--concurrency", type=int, default=4, help="hunts run at once (default 4)")
    worker.add_argument("--lease-seconds", type=int, default=60,
                        help="how long a message stays invisible between lease renewals (default 60)")
    worker.add_argument("--serve", action="store_true", help="also serve the HTTP API (shared.app.http_server)")
    worker.add_argument("--schedules", action="store_true", help="also run the scheduler (schedules/, every minute)")
    scheduler = commands.add_parser("scheduler", help="run the scheduler alone: the due slots of schedules/, every "
                                    "minute")
    scheduler.add_argument("--once", action="store_true", help="one pass, then exit")
    listing = commands.add_parser("schedules", help="each schedule's last and next slot")
    listing.add_argument("--run", metavar="NAME", help="enqueue the schedule's latest slot that has ended, now")
    worker.add_argument("--port", type=int, default=8080, help="with --serve: the API's port (default 8080)")
    serve = commands.add_parser("serve", help="serve the HTTP API (no worker)")
    serve.add_argument("--port", type=int, default=8080, help="the port (default 8080; 0: a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    for name, text in (("status", "a hunt's state, from the job ledger"),
                       ("wait", "wait until a hunt is finished, reading the job ledger")):
        command = commands.add_parser(name, help=text)
        command.add_argument("id", help="the job id")
        command.add_argument("--tenant", help="the hunt's tenant (with HUNT_TENANTS)")
        if name == "wait":
            command.add_argument("--timeout", default="10m", help="give up after this long (default 10m)")
    grant = commands.add_parser("grant-permission",
                                help="grant a hunting API's application role to an identity through Microsoft Graph")
    grant_permission.configure_parser(grant)
    check = commands.add_parser("check-tenant", help="sign in as a customer tenant's app and report its roles")
    tenant_commands.configure_check_parser(check)
    breaker_commands.configure_parser(commands.add_parser(
        "breaker", help="the destinations' circuit breakers: list them, or close one"))
    operator_commands.configure_redrive_parser(commands.add_parser(
        "redrive", help="enqueue dead-lettered or poisoned hunts again under their own ids (or, with --kept, send "
        "kept deliveries again)", description="Chooses dead-letter records by the filters (all of them must "
        "match), and enqueues each chosen hunt again as a fresh first attempt under its own job id; the record "
        "then moves to redriven/, so it is redriven once. Prints one JSON line per record. Start with --dry-run."))
    operator_commands.configure_quota_parser(commands.add_parser(
        "quota", help="calls used and left per tenant and API, and pauses, from the quota gate"))
    operator_commands.configure_inspect_parser(commands.add_parser(
        "inspect", help="everything stored about one job (ledger, blobs, dead letters, kept body) as JSON"))
    enqueue = commands.add_parser("enqueue", help="put a hunt on the queue and print its job id")
    source = enqueue.add_mutually_exclusive_group(required=True)
    source.add_argument("--query", help="the KQL")
    source.add_argument("--template", help="a template name (see templates/)")
    enqueue.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="a template parameter (VALUE as JSON when it parses, else as text)")
    enqueue.add_argument("--id", help="the job id (default: a new UUID)")
    enqueue.add_argument("--api", choices=API_NAMES)
    enqueue.add_argument("--destination")
    enqueue.add_argument("--timespan", help="graph only: ISO 8601 duration or interval")
    enqueue.add_argument("--format", choices=FORMATS)
    enqueue.add_argument("--context", help="a JSON object echoed back with the result")
    enqueue.add_argument("--base64", action="store_true", help="send the message base64-encoded")
    return parser


def _enqueue(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from shared.app.relay import Relay

    body: dict[str, object] = {"id": args.id or str(uuid.uuid4())}
    if args.query is not None:
        body["query"] = args.query
    else:
        body["template"] = args.template
        body["parameters"] = dict(_param(p) for p in args.param)
    for name in ("api", "destination", "timespan", "format"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.context:
        body["context"] = json.loads(args.context)
    text = json.dumps(body, ensure_ascii=False)
    settings = load_settings(os.environ)
    request = decode_hunt_request(text, message_id="cli", default_api=settings.api, now=datetime.now(UTC))
    relay = Relay(settings)
    relay.ensure_resources()
    relay.hunt_queue.send_message(base64.b64encode(text.encode()).decode() if args.base64 else text)
    print(request.id)
    return 0


def _param(text: str) -> tuple[str, object]:
    name, _, value = text.partition("=")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def _worker(args: argparse.Namespace) -> int:
    from shared.app.relay import relay_from_environment
    from shared.app.worker import PortableWorker

    settings = load_settings(os.environ)
    logging.getLogger().setLevel(settings.log_level)
    relay = relay_from_environment(os.environ)
    relay.ensure_resources()
    server = None
    if args.serve:
        from shared.app.http_api import HuntApi
        from shared.app.http_server import ApiServer

        server = ApiServer(HuntApi(relay), port=args.port).start()
    hunts = PortableWorker(
        relay.hunt_queue, relay.poison_queue,
        lambda raw, message_id, count: relay.handle(raw, message_id=message_id, dequeue_count=count),
        concurrency=args.concurrency, max_dequeue_count=settings.max_dequeue_count, lease_seconds=args.lease_seconds,
    )
    # Like the Function's second trigger: poison messages are persisted as dead letters, not left to expire.
    poison = PortableWorker(
        relay.poison_queue, None,
        lambda raw, message_id, count: relay.handle_poison(raw, message_id=message_id, dequeue_count=count),
        concurrency=1, lease_seconds=args.lease_seconds,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.schedules:
        threading.Thread(target=_schedule_loop, args=(relay, stop), name="scheduler", daemon=True).start()
    if args.drain:
        stats = hunts.run(drain=True, stop=stop)
        poison.run(drain=True, stop=stop)
    else:
        poison_thread = threading.Thread(target=poison.run, kwargs={"stop": stop}, daemon=True)
        poison_thread.start()
        try:
            stats = hunts.run(stop=stop)
        except KeyboardInterrupt:
            stop.set()
            stats = hunts.stats
        poison_thread.join(10)
    if server is not None:
        server.stop()
    logging.getLogger(__name__).info("worker stopped: %s processed, %s poisoned, %s dead-lettered from poison",
                                     stats.processed, stats.poisoned, poison.stats.processed)
    return 0


def _schedule_loop(relay: Relay, stop: threading.Event) -> None:
    """The scheduler once at start, then at each minute's turn, until `stop`."""
    while not stop.is_set():
        try:
            relay.scheduler.run_once()
        except AzureError as error:   # storage went away: the next minute tries again
            logging.getLogger(__name__).warning("the scheduler could not run (%s)", type(error).__name__)
        stop.wait(60 - time.time() % 60)


def _scheduler(args: argparse.Namespace) -> int:
    from shared.app.relay import relay_from_environment

    settings = load_settings(os.environ)
    logging.getLogger().setLevel(settings.log_level)
    relay = relay_from_environment(os.environ)
    relay.ensure_resources()
    if args.once:
        for ran in relay.scheduler.run_once():
            print(json.dumps({"schedule": ran.schedule, "tenant": ran.tenant, "enqueued": ran.enqueued,
                              "skipped": ran.skipped}))
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        _schedule_loop(relay, stop)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _schedules(args: argparse.Namespace) -> int:
    from shared.app.relay import Relay

    relay = Relay(load_settings(os.environ))
    relay.ensure_resources()
    if args.run:
        for job in relay.scheduler.run_now(args.run):
            print(job)
        return 0
    for row in relay.scheduler.describe():
        print(json.dumps(row))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from shared.app.http_api import HuntApi
    from shared.app.http_server import ApiServer
    from shared.app.relay import relay_from_environment

    settings = load_settings(os.environ)
    logging.getLogger().setLevel(settings.log_level)
    relay = relay_from_environment(os.environ)
    relay.ensure_resources()
    server = ApiServer(HuntApi(relay), host=args.host, port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "worker":
            return _worker(args)
        if args.command == "enqueue":
            return _enqueue(args)
        if args.command == "grant-permission":
            return grant_permission.run(args)
        if args.command == "check-tenant":
            return tenant_commands.run_check(args)
        if args.command == "breaker":
            return breaker_commands.run(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "scheduler":
            return _scheduler(args)
        if args.command == "schedules":
            return _schedules(args)
        if args.command in ("status", "wait"):
            return job_commands.run(args)
        if args.command == "redrive":
            return operator_commands.run_redrive(args)
        if args.command == "quota":
            return operator_commands.run_quota(args)
        if args.command == "inspect":
            return operator_commands.run_inspect(args)
    except (HuntRelayError, ScheduleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except AzureError as error:   # storage did not answer: a message, not a traceback
        print(f"error: the relay's storage did not answer ({type(error).__name__}); check AzureWebJobsStorage and "
              "try again", file=sys.stderr)
        return 2
    return 1
