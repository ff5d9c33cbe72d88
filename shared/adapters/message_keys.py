"""Where the relay's message keys come from (shared.core.relay_mark): HUNT_MESSAGE_KEYS when set, else one key the
relay keeps in its own storage.

    <HUNT_STATE_CONTAINER>/message-keys.json    {"keys": ["<base64>", ...]}, the signing key first

The first instance to start creates the blob with a fresh random key, create-only, so that every instance of the
deployment signs and verifies with the same key (the one that loses the race reads the winner's). Only the relay's
identity needs access to the container; producers, which can send to the queue, must not be able to read it. The
keys are read once, at the first hunt, and never logged.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from shared.core.relay_mark import RelayMark

logger = logging.getLogger(__name__)

KEYS_BLOB = "message-keys.json"
NEW_KEY_BYTES = 32


def stored_keys(container: ContainerClient) -> list[bytes]:
    """The keys in the relay's state container, created there (with the container) at the first call."""
    blob = container.get_blob_client(KEYS_BLOB)
    document = {"keys": [base64.b64encode(os.urandom(NEW_KEY_BYTES)).decode("ascii")]}
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    try:
        blob.upload_blob(json.dumps(document).encode("ascii"), overwrite=False)
        logger.info("created a message key at %s/%s", container.container_name, KEYS_BLOB)
    except ResourceExistsError:
        document = json.loads(blob.download_blob().readall())
    return [base64.b64decode(key) for key in document["keys"]]


class LazyRelayMark:
    """A RelayMark whose keys are loaded at first use (storage is not touched before the first hunt)."""

    def __init__(self, keys: tuple[bytes, ...], container: ContainerClient) -> None:
        self._keys = keys
        self._container = container
        self._lock = threading.Lock()
        self._mark: RelayMark | None = None

    def _loaded(self) -> RelayMark:
        with self._lock:
            if self._mark is None:
                self._mark = RelayMark(self._keys or stored_keys(self._container))
            return self._mark

    def sign(self, body: Mapping[str, Any]) -> str:
        return self._loaded().sign(body)

    def verify(self, body: Mapping[str, Any]) -> bool:
        return self._loaded().verify(body)
