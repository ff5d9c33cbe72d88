"""What the ops page shows, read from storage at one moment: a snapshot of the relay as an operator steers it,
limited to the tenants the caller may see. Counts, codes, ids and names only: never a result row, a query or a
secret.

    queues      the hunt queue's and its poison queue's approximate depth
    states      the ledger's jobs updated in the last hour, by state
    gates       per tenant and API: each quota window's calls used and left, and a pause (shared.core.quota)
    failures    the last hour's failed and poisoned jobs, newest first, with their codes
    kept        results kept for a delivery-only retry that have not been delivered (shared.delivery.pending)
    breakers    every destination circuit that is not closed (shared.core.breaker)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.adapters.breaker_table import BreakerView
from shared.adapters.job_ledger import JobRecord
from shared.core.hunt_request import PENDING_PREFIX, PENDING_SUFFIX
from shared.core.quota import GateUsage
from shared.core.tenants import scope_of

if TYPE_CHECKING:
    from shared.app.relay import Relay

WINDOW = timedelta(hours=1)
MAX_FAILURES = 20
MAX_KEPT = 50


@dataclass(frozen=True)
class KeptDelivery:
    tenant: str | None
    job_id: str
    bytes: int
    kept_at: datetime | None


@dataclass(frozen=True)
class OpsSnapshot:
    taken_at: datetime
    tenants: tuple[str | None, ...]           # what the caller sees (None: the home tenant)
    queues: tuple[tuple[str, int | None], ...]
    states: dict[str, int]
    gates: tuple[GateUsage, ...]
    failures: tuple[JobRecord, ...]
    kept: tuple[KeptDelivery, ...]
    breakers: tuple[BreakerView, ...]
    telemetry: str


def snapshot(relay: Relay, visible: frozenset[str] | None) -> OpsSnapshot:
    """`visible` None: every tenant (and the home tenant); else those tenants only."""
    settings = relay.settings
    now = relay.clock()
    tenants: list[str | None] = [None, *sorted(settings.tenants)] if visible is None else [*sorted(visible)]
    queues = tuple((queue.queue_name, queue.get_queue_properties().approximate_message_count)
                   for queue in (relay.hunt_queue, relay.poison_queue))
    states: dict[str, int] = {}
    failures: list[JobRecord] = []
    if relay.jobs is not None:
        for record in relay.jobs.updated_since(tenants, now - WINDOW):
            states[record.status] = states.get(record.status, 0) + 1
            if record.status in ("failed", "poison"):
                failures.append(record)
    failures.sort(key=lambda record: record.updated_at, reverse=True)
    gates = tuple(usage for usage in (relay.gates.usage() if relay.gates is not None else [])
                  if usage.tenant in tenants)
    owners = {"home" if t is None else t for t in tenants}
    breakers = tuple(view for view in (relay.breakers.views() if relay.breakers is not None else [])
                     if view.is_open and view.key.split(".", 1)[0] in owners)
    return OpsSnapshot(now, tuple(tenants), queues, states, gates, tuple(failures[:MAX_FAILURES]),
                       tuple(_kept(relay, tenants)), breakers,
                       relay.telemetry.exporter if relay.telemetry is not None else "off")


def _kept(relay: Relay, tenants: list[str | None]) -> list[KeptDelivery]:
    """Kept bodies still waiting (a delivered one leaves an empty marker), newest first."""
    container = relay.container(relay.settings.results_container)
    found: list[KeptDelivery] = []
    for tenant in tenants:
        prefix = scope_of(tenant) + PENDING_PREFIX
        for blob in container.list_blobs(name_starts_with=prefix):
            name = str(blob.name)
            if blob.size and name.endswith(PENDING_SUFFIX):
                found.append(KeptDelivery(tenant, name[len(prefix):-len(PENDING_SUFFIX)], int(blob.size),
                                          blob.last_modified))
    found.sort(key=lambda kept: kept.kept_at or datetime.min.replace(tzinfo=relay.clock().tzinfo), reverse=True)
    return found[:MAX_KEPT]
