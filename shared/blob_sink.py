"""Blob results: deterministic names from the job id, written create-only from staged blocks.

A result for job X in format F sent to {"type": "blob", "container": C, "prefix": P} lands at C/P/X.F; a failed
hunt's envelope at C/P/X.failed.json. Rows are staged as blocks while they arrive and the blob appears only when
the block list is committed, with If-None-Match: * so that a redelivered job is a no-op success and a stream that
breaks midway leaves nothing under the final name (uncommitted blocks are discarded by the service).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient, ContentSettings

from shared import envelope
from shared.hunt_request import HuntRequest
from shared.hunting_client import ResultStream
from shared.result_formats import CONTENT_TYPES, EXTENSIONS, ResultSummary, blob_metadata, render

logger = logging.getLogger(__name__)

BLOCK_BYTES = 4 * 1024 * 1024


class StagedBlobWriter:
    """A write-only binary stream that stages a block every BLOCK_BYTES and commits create-only at the end."""

    def __init__(self, blob: BlobClient, block_bytes: int = BLOCK_BYTES) -> None:
        self._blob = blob
        self._block_bytes = block_bytes
        self._buffer = bytearray()
        self._blocks: list[BlobBlock] = []
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self.bytes_written += len(data)
        if len(self._buffer) >= self._block_bytes:
            self._stage()
        return len(data)

    def flush(self) -> None:
        """Nothing to flush before commit (the buffer is staged by size); present for file-like callers."""

    def writable(self) -> bool:
        return True

    def _stage(self) -> None:
        if self._buffer:
            block_id = base64.b64encode(f"{len(self._blocks):08d}".encode()).decode()
            self._blob.stage_block(block_id, bytes(self._buffer))
            self._blocks.append(BlobBlock(block_id))
            self._buffer.clear()

    def commit(self, content_type: str, metadata: dict[str, str] | None = None) -> bool:
        """True when this call created the blob; False when it already existed (a redelivered job)."""
        self._stage()
        try:
            self._blob.commit_block_list(self._blocks, content_settings=ContentSettings(content_type=content_type),
                                         metadata=metadata, if_none_match="*")
        except (ResourceExistsError, ResourceModifiedError):
            return False
        return True


def write_json_create_only(blob: BlobClient, document: dict[str, Any]) -> bool:
    data = json.dumps(document, ensure_ascii=False).encode("utf-8")
    try:
        blob.upload_blob(data, overwrite=False, content_settings=ContentSettings(content_type="application/json"))
    except ResourceExistsError:
        return False
    return True


@dataclass(frozen=True)
class BlobDelivery:
    location: str
    summary: ResultSummary | None
    created: bool


class BlobSink:
    def __init__(self, container: ContainerClient, prefix: str) -> None:
        self._container = container
        self._prefix = prefix

    def result_name(self, request: HuntRequest) -> str:
        return f"{self._prefix}{request.id}.{EXTENSIONS[request.format]}"

    def failure_name(self, job_id: str) -> str:
        return f"{self._prefix}{job_id}.failed.json"

    def location(self, name: str) -> str:
        return f"{self._container.container_name}/{name}"

    def already_delivered(self, request: HuntRequest) -> bool:
        for name in (self.result_name(request), self.failure_name(request.id)):
            try:
                self._container.get_blob_client(name).get_blob_properties()
                return True
            except ResourceNotFoundError:
                continue
        return False

    def deliver_result(self, request: HuntRequest, stream: ResultStream, clock: Callable[[], datetime]) -> BlobDelivery:
        name = self.result_name(request)
        head = envelope.head(request, "succeeded")
        writer = StagedBlobWriter(self._container.get_blob_client(name))
        summary = render(writer, request.format, head, stream, clock)
        metadata = None if request.format == "json" else blob_metadata(head, summary)
        created = writer.commit(CONTENT_TYPES[request.format], metadata)
        return BlobDelivery(self.location(name), summary, created)

    def deliver_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> BlobDelivery:
        name = self.failure_name(job_id)
        created = write_json_create_only(self._container.get_blob_client(name), failed_envelope)
        return BlobDelivery(self.location(name), None, created)
