"""Links instead of giant payloads: rows that do not fit a destination go to a blob, and the destination gets the
envelope with `results_url`, a short-lived read-only SAS URL to that blob, instead of `results`.

    render_or_link(request, stream, clock, limit=..., links=...) -> Rendered(summary, inline | link)
        json           the envelope is buffered up to `limit` bytes; past it, what was buffered goes to the blob
                       and the rest of the rows follow it there (memory stays bounded by `limit`)
        ndjson, csv    always to the blob: a webhook or a queue message carries JSON envelopes only
    link blobs         <HUNT_RESULTS_CONTAINER>/links/<job id>.<format>, committed create-only from staged blocks:
                       a broken stream leaves nothing there, a redelivered job links the first result
    signing            an account key (a connection string with AccountKey: Azurite) or a user delegation key
                       (identity-based storage; fetched once and reused until near its expiry); read permission on
                       that one blob, valid for HUNT_LINK_LIFETIME

A SAS URL is a bearer credential: it is never logged (the blob name is).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    UserDelegationKey,
    generate_blob_sas,
)

from shared.adapters.blob_writer import StagedBlobWriter
from shared.core import envelope
from shared.core.errors import DeliveryRefused
from shared.core.hunt_request import HuntRequest
from shared.core.result_formats import CONTENT_TYPES, ResultSummary, blob_metadata, file_name, render
from shared.core.rows import RowStream
from shared.core.settings import StorageConfig
from shared.core.strict_json import dumps
from shared.core.tenants import TENANT_NAME, scope_of

logger = logging.getLogger(__name__)

LINK_PREFIX = "links/"
KEY_CLOCK_SKEW = timedelta(minutes=15)     # a delegation key valid from a little before "now"
KEY_MIN_LIFETIME = timedelta(hours=6)       # fetch a key for at least this long, so it is reused across hunts
KEY_MAX_LIFETIME = timedelta(days=7)        # the service's limit for a user delegation key
# Dropped, in this order, from an envelope that must fit a hard limit (a queue message); all are in the link.
OPTIONAL_FIELDS = ("query", "parameters", "context", "stats", "parts", "schema", "truncated_hint")


def link_name(job_id: str, fmt: str, tenant: str | None = None) -> str:
    """A link blob's name in the results container, under the tenant's scope (shared.core.tenants)."""
    return scope_of(tenant) + LINK_PREFIX + file_name(job_id, fmt)


class LinkSigner(Protocol):
    def sas(self, container: str, blob: str, expires_at: datetime) -> str: ...


class AccountKeySigner:
    """A service SAS signed with the account key (a connection string's AccountKey)."""

    def __init__(self, account_name: str, account_key: str) -> None:
        self._account_name = account_name
        self._account_key = account_key

    def sas(self, container: str, blob: str, expires_at: datetime) -> str:
        return generate_blob_sas(self._account_name, container, blob, account_key=self._account_key,
                                 permission=BlobSasPermissions(read=True), expiry=expires_at)


class DelegationKeySigner:
    """A user delegation SAS: signed with a key the service issues to the relay's identity (no account key)."""

    def __init__(self, account_name: str, fetch_key: Callable[[datetime, datetime], UserDelegationKey],
                 clock: Callable[[], datetime]) -> None:
        self._account_name = account_name
        self._fetch_key = fetch_key
        self._clock = clock
        self._lock = threading.Lock()
        self._key: UserDelegationKey | None = None
        self._key_expiry: datetime | None = None

    def _key_until(self, expires_at: datetime) -> UserDelegationKey:
        with self._lock:
            if self._key is None or self._key_expiry is None or self._key_expiry < expires_at:
                now = self._clock()
                expiry = min(max(expires_at, now + KEY_MIN_LIFETIME), now + KEY_MAX_LIFETIME)
                self._key = self._fetch_key(now - KEY_CLOCK_SKEW, expiry)
                self._key_expiry = expiry
            return self._key

    def sas(self, container: str, blob: str, expires_at: datetime) -> str:
        return generate_blob_sas(self._account_name, container, blob, user_delegation_key=self._key_until(expires_at),
                                 permission=BlobSasPermissions(read=True), expiry=expires_at)


def connection_string_parts(connection_string: str) -> dict[str, str]:
    parts = (item.split("=", 1) for item in connection_string.split(";") if "=" in item)
    return {key.strip().lower(): value.strip() for key, value in parts}


def signer_for(storage: StorageConfig, service: BlobServiceClient,
               clock: Callable[[], datetime]) -> LinkSigner | None:
    """The signer this storage connection allows; None when it has neither an account key nor an identity."""
    if storage.connection_string:
        parts = connection_string_parts(storage.connection_string)
        if parts.get("accountname") and parts.get("accountkey"):
            return AccountKeySigner(parts["accountname"], parts["accountkey"])
        return None
    return DelegationKeySigner(str(service.account_name), service.get_user_delegation_key, clock)


@dataclass(frozen=True)
class Link:
    name: str
    format: str
    expires_at: datetime
    url: str = field(repr=False)    # carries the SAS signature


class ResultLinks:
    """Link blobs in one container, and read-only SAS URLs to them."""

    def __init__(self, container: ContainerClient, signer: LinkSigner | None, lifetime_seconds: float,
                 clock: Callable[[], datetime]) -> None:
        self._container = container
        self._signer = signer
        self._lifetime = timedelta(seconds=lifetime_seconds)
        self._clock = clock

    def writer(self, job_id: str, fmt: str, tenant: str | None = None) -> StagedBlobWriter:
        if self._signer is None:
            raise DeliveryRefused("the result is too large for its destination and no link to it can be signed: "
                                  "use identity-based storage or a connection string with an account key")
        return StagedBlobWriter(self._container.get_blob_client(link_name(job_id, fmt, tenant)))

    def publish(self, writer: StagedBlobWriter, fmt: str, head: dict[str, Any], summary: ResultSummary) -> Link:
        metadata = None if fmt == "json" else blob_metadata(head, summary)
        if not writer.commit(CONTENT_TYPES[fmt], metadata):
            logger.info("hunt %s: %s already existed; linking the first result", head["id"], writer.name)
        return self._link(str(head["id"]), writer.name, fmt)

    def link_to(self, container: ContainerClient, name: str) -> tuple[str, str] | None:
        """A read-only link to any blob of the relay's (a stored result the HTTP API hands out), and when it
        expires; None when no link can be signed."""
        if self._signer is None:
            return None
        expires_at = self._clock() + self._lifetime
        sas = self._signer.sas(container.container_name, name, expires_at)
        return container.get_blob_client(name).url + "?" + sas, envelope.iso(expires_at)

    def renewed(self, body: bytes) -> bytes:
        """A kept envelope that carries `results_url`, with a fresh link: a delivery-only retry may come after the
        first link expired (HUNT_LINK_LIFETIME is shorter than HUNT_MAX_AGE by default). Any other body, as is."""
        if self._signer is None or b'"results_url"' not in body:
            return body
        document = json.loads(body)
        if not isinstance(document, dict) or "results_url" not in document:
            return body
        job_id, fmt, tenant = str(document["id"]), str(document["results_format"]), document.get("tenant")
        if tenant is not None and not (isinstance(tenant, str) and TENANT_NAME.fullmatch(tenant)):
            return body   # not an envelope the relay wrote
        link = self._link(job_id, link_name(job_id, fmt, tenant), fmt)
        document["results_url"], document["results_expires_at"] = link.url, envelope.iso(link.expires_at)
        return dumps(document)

    def _link(self, job_id: str, name: str, fmt: str) -> Link:
        assert self._signer is not None
        expires_at = self._clock() + self._lifetime
        sas = self._signer.sas(self._container.container_name, name, expires_at)
        url = self._container.get_blob_client(name).url + "?" + sas
        logger.info("hunt %s: linked %s/%s (valid until %s)", job_id, self._container.container_name, name,
                    envelope.iso(expires_at))
        return Link(name, fmt, expires_at, url)


class SpillingWriter:
    """Buffers up to `limit` bytes; past it, writes the buffer to a blob opened then and sends the rest there."""

    def __init__(self, limit: int, open_blob: Callable[[], StagedBlobWriter]) -> None:
        self._limit = limit
        self._open_blob = open_blob
        self._buffer = bytearray()
        self.blob: StagedBlobWriter | None = None

    def write(self, data: bytes, /) -> int:
        if self.blob is not None:
            return self.blob.write(data)
        self._buffer += data
        if len(self._buffer) > self._limit:
            self.blob = self._open_blob()
            self.blob.write(bytes(self._buffer))
            self._buffer = bytearray()
        return len(data)

    def inline(self) -> bytes:
        return bytes(self._buffer)


@dataclass(frozen=True)
class Rendered:
    head: dict[str, Any]
    summary: ResultSummary
    inline: bytes | None        # the whole JSON envelope, when it fits
    link: Link | None           # else where the result is


def render_or_link(request: HuntRequest, stream: RowStream, clock: Callable[[], datetime], *, limit: int,
                   links: ResultLinks) -> Rendered:
    head = envelope.head(request, "succeeded")
    if request.format == "json":
        spill = SpillingWriter(limit, lambda: links.writer(request.id, "json", request.tenant))
        summary = render(spill, "json", head, stream, clock)
        if spill.blob is None:
            return Rendered(head, summary, spill.inline(), None)
        writer = spill.blob
    else:
        writer = links.writer(request.id, request.format, request.tenant)
        summary = render(writer, request.format, head, stream, clock)
    return Rendered(head, summary, None, links.publish(writer, request.format, head, summary))


def link_envelope(rendered: Rendered) -> dict[str, Any]:
    """The envelope with `results_url` (and its format and expiry) where `results` would be."""
    assert rendered.link is not None
    link = rendered.link
    return {**rendered.head, "results_url": link.url, "results_format": link.format,
            "results_expires_at": envelope.iso(link.expires_at), **rendered.summary.tail}


def fit_envelope(document: dict[str, Any], limit: int) -> bytes:
    """The envelope as JSON within `limit` bytes if dropping OPTIONAL_FIELDS can make it so (listed in
    `omitted`); what cannot be dropped (id, status, error, results_url, counts) is always kept."""
    body = dumps(document)
    omitted: list[str] = []
    for name in OPTIONAL_FIELDS:
        if len(body) <= limit:
            break
        if name in document:
            document = {key: value for key, value in document.items() if key != name}
            omitted.append(name)
            body = dumps({**document, "omitted": omitted})
    return body
