"""Which destination a hunt goes to: a configured name, the default, or an inline webhook URL on the allowlist.

Settings in, a Target out, or Refused naming what is wrong and what is allowed. Inline URLs are checked here for
scheme and host only; the address checks happen at send time (shared.adapters.outbound). An inline URL is signed
with HUNT_INLINE_WEBHOOK_SECRETS when they are set.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.core.address_policy import host_is_allowed
from shared.core.settings import Settings
from shared.delivery.base import Destination, Refused
from shared.delivery.webhook import WebhookDestination


@dataclass(frozen=True)
class Target:
    destination: Destination
    inline: bool   # an inline URL from the message (allowlist applies), rather than a configured destination


def resolve_destination(name: str | None, settings: Settings) -> Target | Refused:
    if name is None:
        if not settings.default_destination:
            return Refused("the hunt names no destination and HUNT_DEFAULT_DESTINATION is not set")
        return _configured(settings, settings.default_destination)
    if name in settings.destinations:
        return _configured(settings, name)
    if name.lower().startswith(("https://", "http://")):
        try:
            host = (urlsplit(name).hostname or "").lower()
        except ValueError:   # e.g. "https://[not-an-address]/"
            return Refused("the inline webhook URL cannot be parsed")
        if not settings.webhook_allowed_hosts:
            return Refused("inline webhook URLs are not enabled: name a configured destination, or list the host in "
                           "HUNT_WEBHOOK_ALLOWED_HOSTS")
        if not host_is_allowed(host, settings.webhook_allowed_hosts):
            return Refused(f"inline webhook host {host!r} is not in HUNT_WEBHOOK_ALLOWED_HOSTS")
        return Target(WebhookDestination("inline", name, secrets=settings.inline_webhook_secrets), inline=True)
    known = ", ".join(sorted(settings.destinations)) or "none"
    return Refused(f"unknown destination {name[:64]!r}: configured destinations are {known}")


def _configured(settings: Settings, name: str) -> Target | Refused:
    destination = settings.destinations[name]
    if not isinstance(destination, Destination):   # parsed by a type that builds no sink: a registry bug
        return Refused(f"destination {name!r} of type {destination.type!r} cannot be built")
    return Target(destination, inline=False)
