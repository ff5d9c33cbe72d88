"""Dead-letter records: every hunt that ends without results leaves one, with the raw message and the reason.

Records are JSON blobs in the dead-letter container, named `[tenants/<tenant>/]<yyyy>/<mm>/<dd>/<key>.json` (a
customer tenant's under its scope) where the key is the job
id when known, else the queue message id; written create-only, so a redelivered message does not duplicate its
record. A key that is not a safe blob name (a message id the relay did not make) is replaced by `msg-` and a hash
of it; the record still holds the message id itself. The raw message is kept as text when it is UTF-8, else as
base64.

Operators read them back (`names`, `load`) and redrive them (shared.app.redrive), which moves a record aside with
`put` and `remove`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.adapters.blob_writer import write_json_create_only
from shared.core.envelope import iso
from shared.core.strict_json import dumps
from shared.core.tenants import scope_of

logger = logging.getLogger(__name__)

_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}(\.[A-Za-z0-9_-]{1,64}){0,2}")


def safe_key(key: str) -> str:
    """The key as it may stand in a blob name: itself when safe, else a hash of it."""
    if _SAFE_KEY.fullmatch(key):
        return key
    return "msg-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class DeadLetters:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def record(self, *, key: str, raw: bytes, reason: str, error: dict[str, Any], queue: str, message_id: str,
               dequeue_count: int | None, now: datetime, first_enqueued_at: datetime | None = None,
               tenant: str | None = None) -> str:
        """Writes the record under the tenant's scope (`tenants/<name>/`, shared.core.tenants)."""
        try:
            raw_field: dict[str, str] = {"text": raw.decode("utf-8")}
        except UnicodeDecodeError:
            raw_field = {"base64": base64.b64encode(raw).decode("ascii")}
        record = {
            **({"tenant": tenant} if tenant is not None else {}),
            "key": key,
            "reason": reason,
            "error": error,
            "queue": queue,
            "message_id": message_id,
            "dequeue_count": dequeue_count,
            "first_enqueued_at": iso(first_enqueued_at) if first_enqueued_at else None,
            "dead_lettered_at": iso(now),
            "message": raw_field,
        }
        name = f"{scope_of(tenant)}{now:%Y/%m/%d}/{safe_key(key)}.json"
        if not write_json_create_only(self._container.get_blob_client(name), record):
            logger.info("dead letter %s existed already; kept the first record", name)
        return f"{self._container.container_name}/{name}"

    # --- reading back and moving aside (operators) ------------------------------------------------------------

    def location(self, name: str) -> str:
        return f"{self._container.container_name}/{name}"

    def names(self, prefix: str = "") -> Iterator[str]:
        """Every blob name under `prefix` (a tenant's scope, or the whole container), in name order; none when
        the container does not exist yet."""
        try:
            for blob in self._container.list_blobs(name_starts_with=prefix or None):
                yield str(blob.name)
        except ResourceNotFoundError:
            return

    def load(self, name: str) -> dict[str, Any] | None:
        """A record as stored; None when it is gone or is not a JSON object."""
        try:
            data = self._container.get_blob_client(name).download_blob().readall()
        except ResourceNotFoundError:
            return None
        try:
            record = json.loads(data)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def put(self, name: str, document: dict[str, Any] | bytes, *, create_only: bool = True) -> bool:
        """Writes a record (or, as bytes, a document kept beside it); False when `create_only` and it exists."""
        data = document if isinstance(document, bytes) else dumps(document)
        try:
            self._container.get_blob_client(name).upload_blob(
                data, overwrite=not create_only, content_settings=ContentSettings(content_type="application/json"))
        except ResourceExistsError:
            return False
        return True

    def exists(self, name: str) -> bool:
        return bool(self._container.get_blob_client(name).exists())

    def remove(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._container.get_blob_client(name).delete_blob()
