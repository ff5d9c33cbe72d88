"""Which destination a hunt goes to: a configured name, the default, or an inline webhook URL on the allowlist.

Pure: settings in, a Target out, or DeliveryRefused naming what is wrong and what is allowed. Inline URLs are
checked here for scheme and host only; the address checks happen at send time (shared.adapters.outbound).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.core.address_policy import host_is_allowed
from shared.core.errors import DeliveryRefused
from shared.core.settings import Destination, Settings


@dataclass(frozen=True)
class Target:
    destination: Destination
    inline: bool   # an inline URL from the message (allowlist applies), rather than a configured destination


def resolve_destination(name: str | None, settings: Settings) -> Target:
    if name is None:
        if not settings.default_destination:
            raise DeliveryRefused("the hunt names no destination and HUNT_DEFAULT_DESTINATION is not set")
        return Target(settings.destinations[settings.default_destination], inline=False)
    if name in settings.destinations:
        return Target(settings.destinations[name], inline=False)
    if name.lower().startswith(("https://", "http://")):
        try:
            host = (urlsplit(name).hostname or "").lower()
        except ValueError:   # e.g. "https://[not-an-address]/"
            raise DeliveryRefused("the inline webhook URL cannot be parsed") from None
        if not settings.webhook_allowed_hosts:
            raise DeliveryRefused("inline webhook URLs are not enabled: name a configured destination, or list the "
                                  "host in HUNT_WEBHOOK_ALLOWED_HOSTS")
        if not host_is_allowed(host, settings.webhook_allowed_hosts):
            raise DeliveryRefused(f"inline webhook host {host!r} is not in HUNT_WEBHOOK_ALLOWED_HOSTS")
        return Target(Destination("inline", "webhook", url=name, secrets=settings.inline_webhook_secrets), inline=True)
    known = ", ".join(sorted(settings.destinations)) or "none"
    raise DeliveryRefused(f"unknown destination {name[:64]!r}: configured destinations are {known}")
