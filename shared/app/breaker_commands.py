"""`python -m shared breaker`: the destinations' circuit breakers (shared.core.breaker).

    breaker                  every circuit the relay knows: state, failures, since, until, reason (JSON lines)
    breaker close KEY        close one (after a 410, only an operator does): its held deliveries go at their next
                             try. KEY as listed: `<tenant or home>.<destination>`
"""

from __future__ import annotations

import argparse
import json
import os

from shared.app.config import load_settings


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("list", "close"), default="list")
    parser.add_argument("key", nargs="?", help="with close: the circuit's key, as `breaker` lists it")


def run(args: argparse.Namespace) -> int:
    from shared.app.relay import Relay

    relay = Relay(load_settings(os.environ))
    if relay.breakers is None:
        print("error: the circuit breakers are off (HUNT_BREAKER=false)")
        return 2
    relay.breakers.ensure_table()
    if args.action == "close":
        if not args.key:
            print("error: name the circuit to close: python -m shared breaker close KEY (keys: python -m shared "
                  "breaker)")
            return 2
        if not relay.breakers.close(args.key):
            print(f"error: no circuit {args.key!r}; python -m shared breaker lists them")
            return 1
        print(json.dumps({"key": args.key, "state": "closed"}))
        return 0
    for view in relay.breakers.views():
        print(json.dumps({"key": view.key, "state": view.state, "failures": view.failures,
                          "opened_at": view.opened_at.isoformat() if view.opened_at else None,
                          "open_until": view.open_until.isoformat() if view.open_until else None,
                          "reason": view.reason}))
    return 0
