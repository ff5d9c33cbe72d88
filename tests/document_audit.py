"""Every document the relay writes in the whole suite must be strict JSON: no NaN or Infinity, valid UTF-8 (issue:
hardening). Registered from tests/conftest.py, like the log audit.

Checked at the end of the session: every blob in Azurite (JSON and ndjson, gzip or not: results, links, kept
deliveries, dead letters, failure envelopes, the relay's state), every message left on a queue other than the
hunt queues tests send their own input to (JSON ones: a test's plain-text input is no document), and, as each
webhook receiver stops, every JSON body it was sent.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Callable
from typing import Any

from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

MAX_AUDITED_BYTES = 256 * 1024 * 1024


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a 64-bit float")
    return value


def is_strict(data: bytes | str) -> bool:
    """Whether a document parses as strict JSON (NaN, Infinity and overflowing numbers refused)."""
    return strict_problem(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data) is None


def strict_problem(data: bytes, *, ndjson: bool = False) -> str | None:
    """Why `data` is not a strict JSON document (or, with `ndjson`, one per line), or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8 at byte {error.start}"
    for line in text.splitlines() if ndjson else [text]:
        if not line.strip():
            continue
        try:
            json.loads(line, parse_constant=_refuse_constant, parse_float=_finite_float)
        except ValueError as error:
            return str(error)[:120]
    return None


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


class DocumentAudit:
    def __init__(self) -> None:
        self.checked = 0
        self.problems: list[str] = []

    def check(self, where: str, data: bytes, *, ndjson: bool = False) -> None:
        self.checked += 1
        problem = strict_problem(data, ndjson=ndjson)
        if problem is not None:
            self.problems.append(f"{where}: {problem}")

    def storage(self, connection_string: str, *, is_input_queue: Callable[[str], bool]) -> None:
        blobs = BlobServiceClient.from_connection_string(connection_string)
        for container in blobs.list_containers():
            client = blobs.get_container_client(container.name)
            for blob in client.list_blobs():
                settings = blob.content_settings
                kind = (settings.content_type or "") if settings else ""
                if "json" not in kind or blob.size > MAX_AUDITED_BYTES:
                    continue
                data = client.download_blob(blob.name).readall()
                if settings and settings.content_encoding == "gzip" and data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                if data:   # a delivered body's "sent" marker is empty on purpose
                    self.check(f"blob {container.name}/{blob.name}", data, ndjson="ndjson" in kind)
        queues = QueueServiceClient.from_connection_string(connection_string)
        for queue in queues.list_queues():
            if is_input_queue(queue.name):
                continue
            for message in queues.get_queue_client(queue.name).peek_messages(max_messages=32):
                data = str(message.content).encode("utf-8", "surrogatepass")
                if _is_json(data):   # a test's own plain-text input is no document; JSON with NaN in it is
                    self.check(f"queue {queue.name}", data)

    def webhook_bodies(self, requests: list[Any]) -> None:
        for request in requests:
            if "json" in (request.header("content-type") or "") and request.body:
                self.check(f"webhook {request.path}", request.body)
