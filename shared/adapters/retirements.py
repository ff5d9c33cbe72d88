"""Which legacy APIs the fleet has seen answer as retired (shared.core.routing), kept in the relay's state container
so that one instance's discovery spares every other instance the call:

    <HUNT_STATE_CONTAINER>/retired-apis/<api>    an empty blob, created once, create-only

Each instance lists them at its first hunt and again at most every REFRESH_SECONDS; an instance that meets a
retired answer itself records it at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

logger = logging.getLogger(__name__)

PREFIX = "retired-apis/"
REFRESH_SECONDS = 60.0


class Retirements:
    def __init__(self, container: ContainerClient, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._container = container
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._known: frozenset[str] = frozenset()
        self._read_at: float | None = None

    def known(self) -> frozenset[str]:
        with self._lock:
            now = self._monotonic()
            if self._read_at is None or now - self._read_at >= REFRESH_SECONDS:
                self._known = frozenset(b.name.removeprefix(PREFIX)
                                        for b in self._container.list_blobs(name_starts_with=PREFIX))
                self._read_at = now
            return self._known

    def mark(self, api: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._container.get_blob_client(PREFIX + api).upload_blob(b"", overwrite=False)
            logger.warning("the %s API answered as retired; its hunts now run on Microsoft Graph, fleet-wide", api)
        with self._lock:
            self._known = self._known | {api}
