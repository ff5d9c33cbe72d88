"""The quota gate over real table storage (Azurite): a shared budget and a shared pause, under concurrency."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from azure.data.tables import TableServiceClient

from shared.adapters.quota_table import Admit, QuotaGate, Wait, Window


def gate(azurite, windows, clock=lambda: datetime.now(UTC), name=None):
    table = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(
        name or "gate" + uuid.uuid4().hex[:10])
    if name is None:
        table.create_table()
    return QuotaGate(table, key="mde-tenant", windows=windows, clock=clock, rand=random.random), table.table_name


def test_concurrent_callers_share_one_budget_exactly(azurite):
    frozen = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    first, table = gate(azurite, [Window(3600, 25)], clock=lambda: frozen)
    gates = [first] + [gate(azurite, [Window(3600, 25)], clock=lambda: frozen, name=table)[0] for _ in range(3)]
    with ThreadPoolExecutor(8) as pool:
        verdicts = list(pool.map(lambda i: gates[i % 4].admit(), range(60)))
    assert sum(isinstance(v, Admit) for v in verdicts) == 25
    assert all(isinstance(v, Wait) and v.seconds >= 3595 for v in verdicts if not isinstance(v, Admit))


def test_a_pause_stops_every_instance_until_it_ends_and_is_only_ever_extended(azurite):
    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    one, table = gate(azurite, [Window(60, 100)], clock=lambda: now)
    other, _ = gate(azurite, [Window(60, 100)], clock=lambda: now, name=table)
    one.pause_until(now + timedelta(seconds=30))
    other.pause_until(now + timedelta(seconds=10))  # an earlier end does not shorten the pause
    verdict = other.admit()
    assert isinstance(verdict, Wait) and 30 <= verdict.seconds < 31
    later, _ = gate(azurite, [Window(60, 100)], clock=lambda: now + timedelta(seconds=31), name=table)
    assert isinstance(later.admit(), Admit)


def test_an_instance_that_admitted_before_sees_a_pause_another_instance_recorded_since(azurite):
    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    one, table = gate(azurite, [Window(60, 100)], clock=lambda: now)
    other, _ = gate(azurite, [Window(60, 100)], clock=lambda: now, name=table)
    assert isinstance(one.admit(), Admit)        # `one` now keeps a copy of the state
    other.pause_until(now + timedelta(seconds=20))
    verdict = one.admit()                        # its copy is stale: the conditional write is refused, it reads
    assert isinstance(verdict, Wait) and verdict.reason == "paused by a 429"


def test_admissions_from_two_instances_in_turn_are_all_counted(azurite):
    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    one, table = gate(azurite, [Window(60, 6)], clock=lambda: now)
    other, _ = gate(azurite, [Window(60, 6)], clock=lambda: now, name=table)
    verdicts = [(one if n % 2 else other).admit() for n in range(8)]
    assert [isinstance(v, Admit) for v in verdicts] == [True] * 6 + [False] * 2
