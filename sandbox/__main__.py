"""`python -m sandbox --port P --tls-port T [--rows N] [--seed S] [--calls-per-window N] [--window-seconds S]
[--max-result-mb M]`

Starts the sandbox (port 0 = a free port), prints exactly one line

    sandbox ready: api=http://127.0.0.1:P msi=http://127.0.0.1:P/msi/token authority=https://127.0.0.1:T ca=PATH

and serves until SIGINT or SIGTERM, then stops both servers and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from sandbox.server import Sandbox


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="Defender + Entra ID sandbox on loopback")
    parser.add_argument("--port", type=int, default=0, help="http port (hunting, msi, admin); 0 = free port")
    parser.add_argument("--tls-port", type=int, default=0, help="https port (token authority); 0 = free port")
    parser.add_argument("--rows", type=int, default=20_000, help="DeviceProcessEvents rows (other tables scale)")
    parser.add_argument("--max-result-mb", type=float, default=50.0,
                        help="the result-size cap: a bigger result is the service's 400 (default 50, as Graph's)")
    parser.add_argument("--seed", type=int, default=7, help="dataset and fault RNG seed")
    parser.add_argument("--calls-per-window", type=int, default=45, help="API calls per tenant per window")
    parser.add_argument("--window-seconds", type=float, default=60.0, help="quota window length in seconds")
    parser.add_argument("--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sandbox = Sandbox(rows=args.rows, seed=args.seed, calls_per_window=args.calls_per_window,
                      window_seconds=args.window_seconds, port=args.port, tls_port=args.tls_port,
                      max_result_mb=args.max_result_mb).start()
    try:
        print(f"sandbox ready: api={sandbox.api_url} msi={sandbox.msi_endpoint} "
              f"authority={sandbox.authority} ca={sandbox.ca_path}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
