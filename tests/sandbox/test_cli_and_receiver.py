"""`python -m sandbox` prints its ready line and stops cleanly; the webhook receiver records and replies."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests

from sandbox.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"^sandbox ready: api=(http://127\.0\.0\.1:\d+) msi=(http://127\.0\.0\.1:\d+/msi/token) "
                   r"authority=(https://127\.0\.0\.1:\d+) ca=(\S+)$")


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line, or "" if none came in time (so a hung start fails the test instead of hanging it)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline() if process.stdout else ""),
                              daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


def test_the_cli_prints_the_ready_line_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", "--tls-port", "0", "--rows", "2000",
         "--calls-per-window", "7", "--window-seconds", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line(process, timeout=60).rstrip("\n")
        match = READY.match(line)
        assert match is not None, line
        api, msi, authority, ca = match.groups()
        assert msi == api + "/msi/token"
        assert Path(ca).read_text().startswith("-----BEGIN CERTIFICATE-----")

        knobs = requests.get(api + "/_sandbox/state", timeout=10).json()["knobs"]
        assert (knobs["quota"]["calls_per_window"], knobs["quota"]["window_seconds"]) == (7, 30.0)
        discovery = requests.get(authority + "/sandbox-tenant/v2.0/.well-known/openid-configuration",
                                 verify=ca, timeout=10)
        assert discovery.json()["token_endpoint"] == authority + "/sandbox-tenant/oauth2/v2.0/token"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert not Path(ca).exists()


def test_the_webhook_receiver_records_requests_and_replies_from_its_queue(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.replies = [503]
    webhook_receiver.reply_headers = {"Retry-After": "3"}

    first = requests.post(webhook_receiver.url + "/hooks/a", data=b'{"n": 1}',
                          headers={"webhook-id": "msg_1"}, timeout=10)
    second = requests.post(webhook_receiver.url + "/hooks/a", data=b'{"n": 2}', timeout=10)

    assert (first.status_code, first.headers["Retry-After"], second.status_code) == (503, "3", 200)
    received = webhook_receiver.wait_for(2)
    assert [r.body for r in received] == [b'{"n": 1}', b'{"n": 2}']
    assert received[0].path == "/hooks/a"
    assert received[0].header("Webhook-Id") == "msg_1"


def test_a_request_whose_sender_dies_before_its_body_is_whole_is_not_recorded(
        webhook_receiver: WebhookReceiver) -> None:
    # A worker killed mid-send: the headers promise 100 bytes, 10 arrive, then the connection closes.
    with socket.create_connection(("127.0.0.1", webhook_receiver.port), timeout=10) as cut:
        cut.sendall(b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\n\r\n" + b'{"id": "x"')
        cut.shutdown(socket.SHUT_WR)
        assert cut.recv(1024) == b""      # the receiver has read the cut request and closed without answering
    whole = requests.post(webhook_receiver.url + "/hooks/a", data=b'{"n": 3}', timeout=10)

    assert whole.status_code == 200
    assert [r.body for r in webhook_receiver.wait_for(1)] == [b'{"n": 3}']
    assert len(webhook_receiver.requests) == 1
