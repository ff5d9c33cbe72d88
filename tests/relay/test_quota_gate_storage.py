"""The quota gate over real table storage (Azurite): a shared budget and a shared pause, under concurrency, and a
process's concurrent requests decided together."""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
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


class SlowCountingTable:
    """The real table client, with each write slowed (so that a process's handlers queue behind it) and counted."""

    def __init__(self, table, delay: float = 0.05, fail: Exception | None = None) -> None:
        self._table, self._delay, self._fail = table, delay, fail
        self.writes = 0

    def __getattr__(self, name):
        return getattr(self._table, name)

    def _slow(self, write, *args, **kwargs):
        self.writes += 1
        time.sleep(self._delay)
        if self._fail is not None:
            raise self._fail
        return write(*args, **kwargs)

    def create_entity(self, *args, **kwargs):
        return self._slow(self._table.create_entity, *args, **kwargs)

    def update_entity(self, *args, **kwargs):
        return self._slow(self._table.update_entity, *args, **kwargs)


def test_the_handlers_of_one_process_are_decided_together_in_one_write(azurite):
    """Group commit: while one handler's write is out, the others queue, and the next write decides all of them;
    the budget is as exact as one at a time (25 admitted of 40, the rest booked into the next window)."""
    frozen = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    one, _ = gate(azurite, [Window(3600, 25)], clock=lambda: frozen)
    table = SlowCountingTable(one._table)
    one._table = table
    start = threading.Barrier(40)

    def ask(_: int):
        start.wait()
        return one.admit()

    with ThreadPoolExecutor(40) as pool:
        verdicts = list(pool.map(ask, range(40)))
    assert sum(isinstance(v, Admit) for v in verdicts) == 25
    waits = [v for v in verdicts if isinstance(v, Wait)]
    assert len(waits) == 15 and all(3595 <= v.seconds <= 3597 for v in waits)   # booked at the next window
    assert table.writes <= 4   # the first handler's write, then the 39 that queued behind it, together


def test_a_storage_failure_while_deciding_together_reaches_every_handler_of_the_batch(azurite):
    from azure.core.exceptions import ServiceRequestError

    one, _ = gate(azurite, [Window(60, 100)])
    one._table = SlowCountingTable(one._table, fail=ServiceRequestError("storage is away"))
    start = threading.Barrier(6)

    def ask(_: int):
        start.wait()
        try:
            return one.admit()
        except ServiceRequestError as error:
            return error

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, range(6)))
    assert all(isinstance(answer, ServiceRequestError) for answer in answers)


def test_running_time_too_small_to_settle_alone_is_settled_by_the_next_admissions_write(azurite):
    from shared.core.quota import RuntimeWindow, runtime_used_at

    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    runtime = [RuntimeWindow(seconds=3600, budget=100.0)]
    table = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(
        "gate" + uuid.uuid4().hex[:10])
    table.create_table()
    counting = SlowCountingTable(table, delay=0)
    one = QuotaGate(counting, key="graph-tenant", windows=[Window(60, 100)], clock=lambda: now, rand=random.random,
                    runtime=runtime)
    first = one.admit()
    assert isinstance(first, Admit) and first.reserved == 1.0   # the estimate before any call: 1 s
    one.spent(1.3, first.reserved)   # 0.3 s more than reserved: under half a second, no write of its own
    writes = counting.writes
    second = one.admit()             # 1.3 s learnt; this write also settles the 0.3 s
    assert isinstance(second, Admit) and counting.writes == writes + 1
    state = dict(table.get_entity("graph-tenant", "state"))
    assert runtime_used_at(state, runtime, now) == [pytest.approx(1.0 + 0.3 + 1.3)]


def test_a_settlement_refused_again_and_again_gives_up_quickly_and_is_carried_by_the_next_write(azurite):
    from azure.core.exceptions import ResourceModifiedError

    from shared.adapters import quota_table
    from shared.core.quota import RuntimeWindow, runtime_used_at

    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    runtime = [RuntimeWindow(seconds=3600, budget=100.0)]
    one, _ = gate(azurite, [Window(60, 100)], clock=lambda: now)
    one._runtime = tuple(runtime)
    admitted = one.admit()
    assert isinstance(admitted, Admit)
    real = one._table
    refused = SlowCountingTable(real, delay=0, fail=ResourceModifiedError("another instance wrote first"))
    one._table = refused
    one.spent(3.0, admitted.reserved)   # 2 s to settle: every write is refused
    assert refused.writes == quota_table.SETTLE_TRIES
    one._table = real
    assert isinstance(one.admit(), Admit)   # the next admission's write carries the 2 s
    state = dict(real.get_entity("mde-tenant", "state"))
    assert runtime_used_at(state, runtime, now) == [pytest.approx(1.0 + 2.0 + 3.0)]


class ReadCountingTable(SlowCountingTable):
    def __init__(self, table) -> None:
        super().__init__(table, delay=0)
        self.reads = 0

    def get_entity(self, *args, **kwargs):
        self.reads += 1
        return self._table.get_entity(*args, **kwargs)


def test_an_instance_alone_writes_on_its_copy_and_one_that_met_another_reads_an_old_copy_first(azurite):
    one, table_name = gate(azurite, [Window(60, 100)])
    table = ReadCountingTable(one._table)
    one._table = table
    for _ in range(2):   # alone: each admission one write on the copy it keeps, however old
        assert isinstance(one.admit(), Admit)
        time.sleep(0.15)
    assert (table.reads, table.writes) == (1, 2)   # the first admission's read (no copy yet)
    other, _ = gate(azurite, [Window(60, 100)], name=table_name)
    assert isinstance(other.admit(), Admit)
    assert isinstance(one.admit(), Admit)   # its copy is stale: refused, read, written
    assert (table.reads, table.writes) == (2, 4)
    assert isinstance(other.admit(), Admit)
    time.sleep(0.15)
    assert isinstance(one.admit(), Admit)   # contended now: an old copy is read before the write, never refused
    assert (table.reads, table.writes) == (3, 5)


def test_a_pause_write_refused_by_another_instance_pauses_before_it_tries_again(azurite):
    """Instances that met the same 429 all record the pause: one whose write is refused waits a random moment (as
    an admission does) before it reads and writes again, rather than racing the others at once."""
    from azure.core.exceptions import ResourceModifiedError

    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    draws: list[float] = []

    def rand() -> float:
        draws.append(random.random())
        return draws[-1]

    one, _ = gate(azurite, [Window(60, 100)], clock=lambda: now)
    one._rand = rand
    real = one._table

    class RefusedTwice(SlowCountingTable):
        def _slow(self, write, *args, **kwargs):
            self.writes += 1
            if self.writes <= 2:
                raise ResourceModifiedError("another instance wrote first")
            return write(*args, **kwargs)

    one._table = RefusedTwice(real, delay=0)
    one.pause_until(now + timedelta(seconds=30))
    assert one._table.writes == 3 and len(draws) == 2   # a pause after each refused write, none before the first
    verdict = gate(azurite, [Window(60, 100)], clock=lambda: now, name=real.table_name)[0].admit()
    assert isinstance(verdict, Wait) and verdict.reason == "paused by a 429"
