"""Blob results: deterministic names from the job id, written create-only from staged blocks.

    {"type": "blob", "container": C, "prefix": P, "gzip": false}

A result for job X in format F lands at C/P/X.F (X.F.gz with "gzip": true: Content-Type of the format,
Content-Encoding gzip); a failed hunt's envelope at C/P/X.failed.json. Rows are written while they arrive, create-
only (shared.adapters.blob_writer): a redelivered job is a no-op success, and a stream that breaks midway leaves
nothing under the final name. A stream sink (shared.delivery.base).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.adapters.blob_writer import StagedBlobWriter, write_json_create_only
from shared.core import envelope
from shared.core.hunt_request import HuntRequest
from shared.core.result_formats import CONTENT_TYPES, GzipWriter, blob_metadata, file_name, render
from shared.core.rows import RowStream
from shared.delivery.base import Delivered, DeliveryParts

logger = logging.getLogger(__name__)

_CONTAINER = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")   # with fullmatch: 3-63 lowercase, single hyphens


@dataclass(frozen=True)
class BlobDestination:
    name: str
    container: str
    prefix: str = ""
    gzip: bool = False
    type: str = "blob"
    queues: tuple[str, ...] = ()

    @property
    def containers(self) -> tuple[str, ...]:
        return (self.container,)

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any], setting: Callable[[str], str | None],
              problems: list[str]) -> BlobDestination:
        where = f"HUNT_DESTINATIONS[{name!r}]"
        container = str(spec.get("container", ""))
        if not _CONTAINER.fullmatch(container):
            problems.append(f"{where}: 'container' must be a valid blob container name, got {container!r}")
        prefix = str(spec.get("prefix", ""))
        if ".." in prefix or prefix.startswith("/"):
            problems.append(f"{where}: 'prefix' must be a relative path without '..'")
        gzip = spec.get("gzip", False)
        if not isinstance(gzip, bool):
            problems.append(f"{where}: 'gzip' must be true or false, got {gzip!r}")
        return cls(name, container, prefix, gzip is True)

    def build(self, parts: DeliveryParts, *, inline: bool, scope: str = "") -> BlobSink:
        return BlobSink(parts.container(self.container), scope + self.prefix, gzip=self.gzip)


class BlobSink:
    """A stream sink (shared.delivery.base)."""

    def __init__(self, container: ContainerClient, prefix: str, *, gzip: bool = False) -> None:
        self._container = container
        self._prefix = prefix
        self._gzip = gzip

    def result_name(self, request: HuntRequest) -> str:
        return self._prefix + file_name(request.id, request.format, gzip=self._gzip)

    def failure_name(self, job_id: str) -> str:
        return f"{self._prefix}{job_id}.failed.json"

    def location(self, name: str) -> str:
        return f"{self._container.container_name}/{name}"

    def already_delivered(self, request: HuntRequest) -> bool:
        """A result already stored for this job (a redelivered message). A failed job sent again runs again."""
        try:
            self._container.get_blob_client(self.result_name(request)).get_blob_properties()
        except ResourceNotFoundError:
            return False
        return True

    def deliver_result(self, request: HuntRequest, stream: RowStream, clock: Callable[[], datetime]) -> Delivered:
        name = self.result_name(request)
        head = envelope.head(request, "succeeded")
        writer = StagedBlobWriter(self._container.get_blob_client(name))
        if self._gzip:
            compressor = GzipWriter(writer)
            summary = render(compressor, request.format, head, stream, clock)
            compressor.finish()
        else:
            summary = render(writer, request.format, head, stream, clock)
        metadata = None if request.format == "json" else blob_metadata(head, summary)
        created = writer.commit(CONTENT_TYPES[request.format], metadata,
                                content_encoding="gzip" if self._gzip else None)
        if not created:
            logger.info("hunt %s: %s already existed; kept the first result", request.id, name)
        return Delivered(self.location(name), summary, writer.bytes_written)

    def deliver_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> Delivered:
        name = self.failure_name(job_id)
        if not write_json_create_only(self._container.get_blob_client(name), failed_envelope):
            logger.info("hunt %s: %s already existed; kept the first failure envelope", job_id, name)
        return Delivered(self.location(name))
