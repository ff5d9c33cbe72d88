"""Pending deliveries: the rendered body of a result, or of a failure envelope, whose destination answered "not
now" (a webhook's 5xx or 429, a queue that failed to take the message), kept so that the retry is a delivery
only: the query is not run again and spends no quota. Every message sink (shared.delivery.base) can do this:
it prepares the exact bytes once, then sends them (and sends them again).

    keep(request, body, rows)   before the delivery-only copy is enqueued (a crash may duplicate, never lose)
    load(request)               Kept(body, rows) | Sent() | Unusable(reason)
    describe(job_id, tenant)    what is kept, without the body (rows are customer data): for operators
    mark_sent(request)          after a 2xx: the body is replaced by an empty marker, so that the same copy
                                handled again (a worker that died before completing it) is a duplicate, not
                                a failure; the marker expires with the container's lifecycle rule

One blob per job in the results container (HUNT_RESULTS_CONTAINER), named by
`shared.core.hunt_request.pending_delivery_name`: `pending/<job id>.delivery.json`, the exact bytes that were POSTed
(or sent). A later render of the same request overwrites it: both are the same job's result. A different request
under the same job id (another query, destination or context: `HuntRequest.digest`) never does: while the first
waits, `keep` raises PendingConflict and the first job's body stays. The blob's metadata binds it to the hunt's
destination (a SHA-256 of the message's `destination`, never the value itself: an inline
URL may carry a signature), so a message naming the same job id with another destination cannot have the body
sent anywhere else; a body that is missing or bound elsewhere is Unusable, and the reason says no more than that.
A body left behind by a hunt that gave up stays for the operator (the dead-letter record names it).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import ContainerClient, ContentSettings

from shared.core.errors import PendingConflict
from shared.core.hunt_request import HuntRequest, pending_delivery_name

logger = logging.getLogger(__name__)

_DESTINATION_KEY = "destination_sha256"
_ROWS_KEY = "row_count"
_SENT_KEY = "sent_at"
_REQUEST_KEY = "request_sha256"


@dataclass(frozen=True)
class Kept:
    body: bytes
    rows: int | None


@dataclass(frozen=True)
class Sent:
    """The body was delivered on an earlier try (only its marker is left): this copy has nothing left to do."""

    at: str


@dataclass(frozen=True)
class Unusable:
    reason: str


def destination_digest(request: HuntRequest) -> str:
    """What binds a stored body to the destination the message names ('' for the default destination)."""
    return hashlib.sha256((request.destination or "").encode("utf-8", "surrogatepass")).hexdigest()


class PendingDeliveries:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def location(self, request: HuntRequest) -> str:
        return f"{self._container.container_name}/{pending_delivery_name(request.id, request.tenant)}"

    def keep(self, request: HuntRequest, body: bytes, rows: int | None, *, over_waiting: bool = True) -> str:
        """Stores the body: create-only, or over an earlier render of the same request (not with
        `over_waiting=False`: a failure envelope never replaces a result that waits), or over the marker of a
        delivery already made. PendingConflict when another body waits there and may not be replaced; storage
        errors propagate."""
        metadata = {_DESTINATION_KEY: destination_digest(request), _REQUEST_KEY: request.digest()}
        if rows is not None:
            metadata[_ROWS_KEY] = str(rows)
        blob = self._container.get_blob_client(pending_delivery_name(request.id, request.tenant))
        settings = ContentSettings(content_type="application/json")
        for _ in range(3):   # each round: create, or replace what was read unless it changed meanwhile
            try:
                blob.upload_blob(body, overwrite=False, metadata=metadata, content_settings=settings)
                break
            except ResourceExistsError:
                pass
            try:
                properties = blob.get_blob_properties()
            except ResourceNotFoundError:
                continue
            existing = properties.metadata or {}
            waiting = _SENT_KEY not in existing
            if waiting and (not over_waiting or existing.get(_REQUEST_KEY) != metadata[_REQUEST_KEY]):
                raise PendingConflict(f"job {request.id}: another body under this id waits for its delivery")
            try:
                blob.upload_blob(body, overwrite=True, metadata=metadata, content_settings=settings,
                                 etag=properties.etag, match_condition=MatchConditions.IfNotModified)
                break
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        else:
            raise PendingConflict(f"job {request.id}: its kept delivery kept changing while being written")
        logger.info("hunt %s: kept %s bytes for a delivery-only retry at %s", request.id, len(body),
                    self.location(request))
        return self.location(request)

    def load(self, request: HuntRequest) -> Kept | Sent | Unusable:
        """The stored body for this job and destination, or the marker of its delivery; Unusable when there is
        neither (storage errors propagate)."""
        unusable = Unusable(f"no stored delivery for job {request.id} and this destination at "
                            f"{self.location(request)}: it was deleted (or expired) before it could be sent")
        try:
            name = pending_delivery_name(request.id, request.tenant)
            download = self._container.get_blob_client(name).download_blob()
            body = download.readall()
        except ResourceNotFoundError:
            return unusable
        metadata = download.properties.metadata or {}
        if not hmac.compare_digest(metadata.get(_DESTINATION_KEY, ""), destination_digest(request)):
            logger.warning("hunt %s: the stored delivery is bound to another destination; not sent", request.id)
            return unusable
        if _SENT_KEY in metadata:
            return Sent(metadata[_SENT_KEY])
        rows = metadata.get(_ROWS_KEY, "")
        return Kept(body, int(rows) if rows.isdigit() else None)

    def mark_sent(self, request: HuntRequest, at: datetime) -> None:
        """Replaces a delivered body by an empty marker; a failure only leaves the body behind (logged): the
        delivery stands, and a copy handled again sends it once more under the same webhook-id."""
        metadata = {_DESTINATION_KEY: destination_digest(request), _SENT_KEY: at.isoformat()}
        try:
            self._container.get_blob_client(pending_delivery_name(request.id, request.tenant)).upload_blob(
                b"", overwrite=True, metadata=metadata)
        except AzureError as error:
            logger.warning("hunt %s: could not clear the delivered body at %s (%s)", request.id,
                           self.location(request), type(error).__name__)

    def describe(self, job_id: str, tenant: str | None = None) -> dict[str, object] | None:
        """The kept body's facts, never its content: location, bytes, rows, kept_at, sent_at (a delivered body is
        only its marker); None when nothing is kept for the job."""
        name = pending_delivery_name(job_id, tenant)
        try:
            properties = self._container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        metadata = properties.metadata or {}
        rows, waiting, modified = metadata.get(_ROWS_KEY, ""), _SENT_KEY not in metadata, properties.last_modified
        return {"location": f"{self._container.container_name}/{name}", "bytes": properties.size,
                "rows": int(rows) if rows.isdigit() else None,
                "kept_at": modified.isoformat().replace("+00:00", "Z") if modified and waiting else None,
                "sent_at": metadata.get(_SENT_KEY), "waiting": waiting}
