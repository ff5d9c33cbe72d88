"""`python -m shared breaker`: the destinations' circuit breakers (shared.core.breaker).

    breaker                  every circuit the relay knows: state, failures, since, until, reason (JSON lines)
    breaker close KEY        close one (after a 410, only an operator does): its held deliveries go at their next
                             try. KEY as listed: `<tenant or home>.<destination>`
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from shared.app.config import load_settings


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("list", "close"), default="list")
    parser.add_argument("key", nargs="?", help="with close: the circuit's key, as `breaker` lists it")


def run(args: argparse.Namespace) -> int:
    from shared.app.relay import Relay

    relay = Relay(load_settings(os.environ))
    if relay.breakers is None:
        sys.stderr.write("error: the circuit breakers are off (HUNT_BREAKER=false)\n")
        return 2
    relay.breakers.ensure_table()
    if args.action == "close":
        if not args.key:
            sys.stderr.write("error: name the circuit to close: python -m shared breaker close KEY (keys: python -m "
                             "shared breaker)\n")
            return 2
        if not relay.breakers.close(args.key):
            sys.stderr.write(f"error: no circuit {args.key!r}; python -m shared breaker lists them\n")
            return 1
        sys.stdout.write(json.dumps({"key": args.key, "state": "closed"}) + "\n")
        return 0
    for view in relay.breakers.views():
        sys.stdout.write(json.dumps({"key": view.key, "state": view.state, "failures": view.failures,
                                     "opened_at": view.opened_at.isoformat() if view.opened_at else None,
                                     "open_until": view.open_until.isoformat() if view.open_until else None,
                                     "reason": view.reason}) + "\n")
    return 0
