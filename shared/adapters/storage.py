"""Storage clients for the whole process, over its one pooled HTTP session, and creating what the relay needs.

In Azure, infra creates the queues, containers and table (and the relay's identity may not be allowed to create
them); on the local stack the relay creates them itself. `create_if_missing` is that one step for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import requests
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared.adapters.credentials import storage_credential
from shared.core.settings import Settings

logger = logging.getLogger(__name__)

# A table insert answers with the entity it stored unless asked not to; the relay never reads that copy (the ETag
# comes in the response's headers either way), so its inserts ask for none: less for storage to send and for the
# SDK to decode (about 0.2 ms of CPU per insert on the bench's cores).
NO_ENTITY_ECHO: Mapping[str, str] = {"response_preference": "return-no-content"}


def create_if_missing(create: Callable[[], object], what: str) -> None:
    """Runs `create`; an existing resource is fine, and so is a refusal (the deployment's roles may not allow
    creating: infra did), which is logged."""
    try:
        create()
    except ResourceExistsError:
        pass
    except HttpResponseError as error:
        logger.warning("could not create %s (%s)", what, error.status_code)


def storage_clients(settings: Settings, session: requests.Session) -> tuple[QueueServiceClient, BlobServiceClient]:
    """Both over the process's pooled session (the SDKs would otherwise open one session per client)."""
    storage = settings.storage
    shared: dict[str, Any] = {"session": session, "session_owner": False}
    if storage.connection_string:
        return (QueueServiceClient.from_connection_string(storage.connection_string, **shared),
                BlobServiceClient.from_connection_string(storage.connection_string, **shared))
    credential: Any = storage_credential(settings)
    assert storage.queue_url and storage.blob_url
    return (QueueServiceClient(storage.queue_url, credential=credential, **shared),
            BlobServiceClient(storage.blob_url, credential=credential, **shared))


def table_service(settings: Settings, session: requests.Session) -> TableServiceClient:
    storage = settings.storage
    if storage.connection_string:
        return TableServiceClient.from_connection_string(storage.connection_string, session=session,
                                                         session_owner=False)
    assert storage.table_url
    return TableServiceClient(storage.table_url, credential=storage_credential(settings), session=session,
                              session_owner=False)
