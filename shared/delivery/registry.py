"""Every destination type, by the name HUNT_DESTINATIONS gives it in "type". Adding a type is its own module
(a dataclass with `parse` and `build`, and its sink: shared.delivery.base) and one line here."""

from __future__ import annotations

from collections.abc import Mapping

from shared.delivery.base import DestinationType
from shared.delivery.blob import BlobDestination
from shared.delivery.queue import QueueDestination
from shared.delivery.webhook import WebhookDestination

DESTINATION_TYPES: Mapping[str, DestinationType] = {
    "blob": BlobDestination,
    "queue": QueueDestination,
    "webhook": WebhookDestination,
}
