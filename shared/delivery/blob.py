"""Blob results: deterministic names from the job id, written create-only from staged blocks.

A result for job X in format F sent to {"type": "blob", "container": C, "prefix": P} lands at C/P/X.F (X.F.gz
with "gzip": true: Content-Type of the format, Content-Encoding gzip); a failed hunt's envelope at
C/P/X.failed.json. Rows are staged as blocks while they arrive and the blob appears only when the block list is
committed, with If-None-Match: * so that a redelivered job is a no-op success and a stream that breaks midway
leaves nothing under the final name (uncommitted blocks are discarded by the service after a week). A result
smaller than one block is written by one create-only Put Blob instead.
"""

from __future__ import annotations

import base64
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient, ContentSettings

from shared.adapters.hunting_client import ResultStream
from shared.core import envelope
from shared.core.hunt_request import HuntRequest
from shared.core.result_formats import CONTENT_TYPES, GzipWriter, ResultSummary, blob_metadata, file_name, render
from shared.core.strict_json import dumps

logger = logging.getLogger(__name__)

BLOCK_BYTES = 4 * 1024 * 1024


class _BlockUpload(threading.Thread):
    """One block on its way to storage, while the caller parses and renders the next one."""

    def __init__(self, blob: BlobClient, block_id: str, data: bytes) -> None:
        super().__init__(name="stage-block", daemon=True)
        self._blob, self._block_id, self._data = blob, block_id, data
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._blob.stage_block(self._block_id, self._data)
        except BaseException as error:  # handed to the writer's thread, which raises it
            self.error = error
        finally:
            self._data = b""

    def finish(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


class StagedBlobWriter:
    """A write-only binary stream that stages a block every `block_bytes` and commits create-only at the end.

    One block is uploaded in the background while the next fills (at most one in flight: memory stays at about
    two blocks), so that storage latency overlaps parsing instead of adding to it. Block ids carry a per-writer
    random part: two workers racing on one job (a redelivery while the first still runs) stage distinct blocks,
    so neither can commit a list that holds the other's data.
    """

    def __init__(self, blob: BlobClient, block_bytes: int | None = None) -> None:
        self._blob = blob
        self._block_bytes = block_bytes or BLOCK_BYTES
        self._buffer = bytearray()
        self._blocks: list[BlobBlock] = []
        self._writer_id = uuid.uuid4().hex
        self._in_flight: _BlockUpload | None = None
        self.bytes_written = 0

    @property
    def name(self) -> str:
        return str(self._blob.blob_name)

    @property
    def blocks_staged(self) -> int:
        return len(self._blocks)

    def write(self, data: bytes, /) -> int:
        self._buffer += data
        self.bytes_written += len(data)
        if len(self._buffer) >= self._block_bytes:
            self._stage()
        return len(data)

    def _stage(self) -> None:
        self._wait_for_upload()
        if self._buffer:
            # Every id of one blob must have the same length: 32 hex digits and an 8-digit counter.
            block_id = base64.b64encode(f"{self._writer_id}{len(self._blocks):08d}".encode()).decode()
            data = bytes(self._buffer)
            self._buffer.clear()
            self._blocks.append(BlobBlock(block_id))
            self._in_flight = _BlockUpload(self._blob, block_id, data)

    def _wait_for_upload(self) -> None:
        upload, self._in_flight = self._in_flight, None
        if upload is not None:
            upload.finish()

    def commit(self, content_type: str, metadata: dict[str, str] | None = None, *,
               content_encoding: str | None = None) -> bool:
        """True when this call created the blob; False when it already existed (a redelivered job)."""
        settings = ContentSettings(content_type=content_type, content_encoding=content_encoding)
        if not self._blocks:   # all of it fits in one block: one create-only Put Blob instead of stage + commit
            try:
                self._blob.upload_blob(bytes(self._buffer), overwrite=False, content_settings=settings,
                                       metadata=metadata)
                return True
            except (ResourceExistsError, ResourceModifiedError):
                # Either the blob exists, or only uncommitted blocks of an earlier, broken attempt do (Azurite
                # refuses a Put Blob then): the block-list commit below tells the two apart.
                pass
        self._stage()
        self._wait_for_upload()
        try:
            self._blob.commit_block_list(self._blocks, content_settings=settings, metadata=metadata,
                                         if_none_match="*")
        except (ResourceExistsError, ResourceModifiedError):
            return False
        return True


def write_json_create_only(blob: BlobClient, document: dict[str, Any]) -> bool:
    data = dumps(document)
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

    def deliver_result(self, request: HuntRequest, stream: ResultStream, clock: Callable[[], datetime]) -> BlobDelivery:
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
        return BlobDelivery(self.location(name), summary, created)

    def deliver_failure(self, job_id: str, failed_envelope: dict[str, Any]) -> BlobDelivery:
        name = self.failure_name(job_id)
        created = write_json_create_only(self._container.get_blob_client(name), failed_envelope)
        return BlobDelivery(self.location(name), None, created)
