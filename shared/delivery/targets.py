"""Which destination a hunt goes to: a configured name, the default, or an inline webhook URL on the allowlist.

Settings in, a Target out, or Refused naming what is wrong and what is allowed. A customer tenant's hunt
(shared.core.tenants) may use only the destinations its tenant lists (the first is its default) and inline URLs on
its tenant's own `webhook_allowed_hosts`; its Target carries the tenant's scope, which prefixes every blob the sink
names. Inline URLs are checked here for
scheme and host only; the address checks happen at send time (shared.adapters.outbound). An inline URL is signed
with HUNT_INLINE_WEBHOOK_SECRETS when they are set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.core.address_policy import host_is_allowed
from shared.core.settings import Settings
from shared.core.tenants import TenantConfig
from shared.delivery.base import Destination, Refused
from shared.delivery.webhook import WebhookDestination


@dataclass(frozen=True)
class Target:
    destination: Destination
    inline: bool   # an inline URL from the message (allowlist applies), rather than a configured destination
    scope: str = ""   # the tenant's blob prefix (shared.core.tenants.scope_of)
    tenant: str | None = None   # the customer tenant it belongs to (None: the home tenant)

    @property
    def breaker_key(self) -> str:
        """The key of its circuit breaker (shared.adapters.breaker_table): per tenant and destination, an inline
        URL per endpoint (its host, and a hash of its scheme, host and path)."""
        owner = self.tenant or "home"
        if self.inline:   # per endpoint: one host (a Logic Apps region) serves many workflows
            parts = urlsplit(getattr(self.destination, "url", ""))
            host = (parts.hostname or "unknown").lower()
            endpoint = hashlib.sha256(f"{parts.scheme}://{host}{parts.path}".encode()).hexdigest()[:12]
            return f"{owner}.inline.{host}.{endpoint}"
        return f"{owner}.{self.destination.name}"


def resolve_destination(name: str | None, settings: Settings, tenant: TenantConfig | None = None) -> Target | Refused:
    if tenant is not None:
        return _for_tenant(name, settings, tenant)
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


def _for_tenant(name: str | None, settings: Settings, tenant: TenantConfig) -> Target | Refused:
    own = ", ".join(tenant.destinations)
    if name is None:
        name = tenant.destinations[0]
    if name in tenant.destinations:
        return _configured(settings, name, tenant)
    if name.lower().startswith(("https://", "http://")):
        try:
            host = (urlsplit(name).hostname or "").lower()
        except ValueError:
            return Refused("the inline webhook URL cannot be parsed")
        if not host_is_allowed(host, tenant.webhook_allowed_hosts):
            return Refused(f"inline webhook host {host!r} is not on tenant {tenant.name!r}'s webhook_allowed_hosts "
                           "(HUNT_TENANTS)")
        return Target(WebhookDestination("inline", name, secrets=settings.inline_webhook_secrets), inline=True,
                      scope=tenant.scope, tenant=tenant.name)
    # Another tenant's destination is refused like an unknown one: the message learns no other tenant's names.
    return Refused(f"destination {name[:64]!r} is not one of tenant {tenant.name!r}'s destinations: {own}")


def _configured(settings: Settings, name: str, tenant: TenantConfig | None = None) -> Target | Refused:
    destination = settings.destinations[name]
    if not isinstance(destination, Destination):   # parsed by a type that builds no sink: a registry bug
        return Refused(f"destination {name!r} of type {destination.type!r} cannot be built")
    if tenant is None:
        return Target(destination, inline=False)
    return Target(destination, inline=False, scope=tenant.scope, tenant=tenant.name)
