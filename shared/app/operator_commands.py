"""The operator's commands: see and steer a running relay from its storage.

    python -m shared redrive [--code CODE]... [--tenant NAME] [--since DATE] [--until DATE] [--id JOB]... [--all]
                             [--kept] [--dry-run]
        hunts that ended in a dead-letter record (poison included) enqueued again under their own ids as fresh
        first attempts; with --kept, the bodies kept for delivery-only retries of hunts that gave up are sent
        again instead (no query, no quota). One JSON line per chosen record: redriven, would-redrive (--dry-run,
        which changes nothing) or skipped with the reason. No filter at all is refused unless --all
        (shared.app.redrive has the steps and their crash-safe order)
    python -m shared quota [--tenant NAME] [--json]
        each quota gate (per tenant and API): per window, calls used and left and when it resets; paused until
    python -m shared inspect ID [--tenant NAME]
        everything stored about one job, as one JSON document (shared.app.inspection); exit 1 when nothing is

They read the relay's settings from the environment, as the worker does. None prints result rows, query text or
secrets. A mistake in the command line is exit 2 with a message naming it and the fix.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from datetime import UTC, datetime

from azure.core.exceptions import AzureError

from shared.adapters.http_session import pooled_session
from shared.adapters.quota_table import QuotaGates
from shared.adapters.storage import table_service
from shared.app.config import load_settings
from shared.core.hunt_request import ID_PATTERN
from shared.core.quota import GateUsage
from shared.core.redrive import Selection, parse_when
from shared.core.settings import Settings

EXIT_ERROR = 2


class UsageError(Exception):
    """The command line asks for something this relay cannot do; the message names it and the fix."""


def _tenant(settings: Settings, name: str | None, *, default: bool = False) -> str | None:
    if name is None:
        return settings.default_tenant if default else None
    if name not in settings.tenants:
        known = ", ".join(settings.tenants) or "none (HUNT_TENANTS is not set)"
        raise UsageError(f"--tenant {name!r} is not a tenant of this relay; its tenants: {known}")
    return name


def _failed(error: Exception) -> int:
    sys.stderr.write(f"error: {error}\n")
    return EXIT_ERROR


# --- redrive ----------------------------------------------------------------------------------------------------

def configure_redrive_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--code", action="append", default=[], metavar="CODE",
                        help="only records with this failure code (GaveUp, Poison, QueryError ...); repeatable")
    parser.add_argument("--tenant", metavar="NAME", help="only this tenant's records (with HUNT_TENANTS)")
    parser.add_argument("--since", metavar="DATE", help="only records dead-lettered at or after DATE "
                        "(2026-12-01, or an ISO 8601 time; UTC)")
    parser.add_argument("--until", metavar="DATE", help="only records dead-lettered at or before DATE (a date "
                        "includes its whole day)")
    parser.add_argument("--id", action="append", default=[], metavar="JOB", help="only this job id; repeatable")
    parser.add_argument("--all", action="store_true", help="every record: needed when no other filter is given")
    parser.add_argument("--kept", action="store_true", help="send the kept deliveries of hunts that gave up again "
                        "(no query is run, no quota spent) instead of running hunts again")
    parser.add_argument("--dry-run", action="store_true", help="print what would be redriven; change nothing")


def selection_of(args: argparse.Namespace, settings: Settings) -> Selection:
    try:
        since = parse_when(args.since) if args.since else None
        until = parse_when(args.until, end_of_day=True) if args.until else None
    except ValueError as error:
        raise UsageError(f"--since/--until: {error}") from None
    if since and until and since > until:
        raise UsageError("--since is after --until: nothing could match; swap them")
    bad = [job for job in args.id if not ID_PATTERN.fullmatch(job)]
    if bad:
        raise UsageError(f"--id {bad[0]!r} is not a job id (1-128 letters, digits, - and _)")
    selection = Selection(codes=frozenset(args.code), tenant=_tenant(settings, args.tenant), since=since,
                          until=until, ids=frozenset(args.id), everything=args.all)
    if not selection.filtered and not selection.everything:
        raise UsageError("redrive needs a choice of records: give --code, --tenant, --since, --until or --id, or "
                         "--all for every record (try it with --dry-run first)")
    return selection


def run_redrive(args: argparse.Namespace) -> int:
    from shared.app.redrive import Redriver
    from shared.app.relay import Relay

    settings = load_settings(os.environ)
    try:
        selection = selection_of(args, settings)
    except UsageError as error:
        return _failed(error)
    counts: dict[str, int] = {}
    last = None
    try:
        for line in Redriver(Relay(settings)).run(selection, kept_only=args.kept, dry_run=args.dry_run):
            sys.stdout.write(json.dumps(line) + "\n")
            counts[line["action"]] = counts.get(line["action"], 0) + 1
            last = line.get("record")
    except AzureError as error:
        where = f" after {last}" if last else ""
        return _failed(RuntimeError(
            f"storage failed{where} ({type(error).__name__}); run the same command again: a record is moved aside "
            "only once its hunt is enqueued, and one cut short is finished then"))
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "no record matched"
    sys.stderr.write(("dry run, nothing changed: " if args.dry_run else "") + summary + "\n")
    return 0


# --- quota ------------------------------------------------------------------------------------------------------

def configure_quota_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", metavar="NAME", help="only this tenant's gates (with HUNT_TENANTS)")
    parser.add_argument("--json", action="store_true", help="one JSON line per gate instead of a table")


def gates_for(settings: Settings) -> QuotaGates:
    table = table_service(settings, pooled_session()).get_table_client(settings.gate_table)
    return QuotaGates(table, settings, clock=lambda: datetime.now(UTC), rand=random.random)


def run_quota(args: argparse.Namespace) -> int:
    settings = load_settings(os.environ)
    try:
        tenant = _tenant(settings, args.tenant)
        if not settings.quota_gate:
            raise UsageError("the quota gate is off (HUNT_QUOTA_GATE=false): no instance counts its calls, so "
                             "there is nothing to show; turn it on to share the budget and the pauses")
    except UsageError as error:
        return _failed(error)
    gates = [g for g in gates_for(settings).usage() if tenant is None or g.tenant == tenant]
    if args.json:
        for gate in gates:
            sys.stdout.write(json.dumps(gate.as_dict()) + "\n")
    else:
        sys.stdout.write(quota_table(gates))
    return 0


def quota_table(gates: list[GateUsage]) -> str:
    """One row per gate and window, for people."""
    rows = [("TENANT", "API", "WINDOW", "USED", "LEFT", "RESETS AT", "PAUSED UNTIL")]
    for gate in gates:
        paused = _iso(gate.paused_until) if gate.paused_until else "-"
        name = (gate.tenant or "(home)") + ("" if gate.configured else " (not configured)")
        for window in gate.windows:
            rows.append((name, gate.api, f"{window.limit}/{_span(window.seconds)}", str(window.used),
                         str(window.left), _iso(window.resets_at), paused))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in rows)


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- inspect ----------------------------------------------------------------------------------------------------

def configure_inspect_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="the job id")
    parser.add_argument("--tenant", metavar="NAME", help="the job's tenant (default HUNT_DEFAULT_TENANT)")


def run_inspect(args: argparse.Namespace) -> int:
    from shared.app.inspection import anything_found, inspect_job
    from shared.app.relay import Relay

    settings = load_settings(os.environ)
    try:
        if not ID_PATTERN.fullmatch(args.id):
            raise UsageError(f"{args.id!r} is not a job id (1-128 letters, digits, - and _)")
        tenant = _tenant(settings, args.tenant, default=True)
        if tenant is None and settings.tenants:
            raise UsageError("this relay hunts for tenants and has no HUNT_DEFAULT_TENANT: name the job's tenant "
                             f"with --tenant ({', '.join(settings.tenants)})")
    except UsageError as error:
        return _failed(error)
    found = inspect_job(Relay(settings), args.id, tenant)
    sys.stdout.write(json.dumps(found, indent=2) + "\n")
    if not anything_found(found):
        sys.stderr.write(f"nothing is stored about job {args.id!r}" + (f" of tenant {tenant!r}" if tenant else "")
                         + "\n")
        return 1
    return 0
