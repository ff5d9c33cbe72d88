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

    def upsert_entity(self, *args, **kwargs):
        return self._slow(self._table.upsert_entity, *args, **kwargs)


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
    # The first handler's write, then the 39 that queued behind it, together: the admissions' write and the
    # bookings' (this process's booking row)
    assert table.writes <= 5


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

    def query_entities(self, *args, **kwargs):   # the gate reads its partition: the state and the bookings
        self.reads += 1
        return self._table.query_entities(*args, **kwargs)


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


class MethodCountingTable:
    """The real table client, with its calls counted by method."""

    def __init__(self, table) -> None:
        self._table = table
        self.calls: dict[str, int] = {}

    def __getattr__(self, name):
        method = getattr(self._table, name)
        if not callable(method):
            return method

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)
        return counted


def test_turning_hunts_away_writes_the_processs_own_booking_row_and_another_process_books_after_it(azurite):
    """A Wait never writes the state, so it never races the admissions: each process books in a row of its own
    (one unconditional write), and books after the places the others' rows hold."""
    from shared.core.quota import bookings_of

    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)   # 55 s before the next minute
    one, table_name = gate(azurite, [Window(60, 3)], clock=lambda: now)
    other, _ = gate(azurite, [Window(60, 3)], clock=lambda: now, name=table_name)
    assert all(isinstance(one.admit(), Admit) for _ in range(3))
    one_waits = [one.admit() for _ in range(2)]
    counted = MethodCountingTable(other._table)
    other._table = counted
    other_waits = [other.admit() for _ in range(2)]
    assert all(isinstance(v, Wait) for v in one_waits + other_waits)
    assert [55 <= v.seconds <= 57 for v in one_waits] == [True, True]      # the next minute: 2 of its 3 places
    assert 55 <= other_waits[0].seconds <= 57 and 115 <= other_waits[1].seconds <= 117   # its last, then after
    assert counted.calls.get("update_entity", 0) == counted.calls.get("create_entity", 0) == 0
    assert counted.calls["upsert_entity"] == 2   # one write per Wait (each decided alone here), never refused
    rows = {e["RowKey"]: dict(e) for e in one._table.query_entities("PartitionKey eq 'mde-tenant'")}
    assert rows["state"]["w60_calls"] == 3 and not any(k.startswith("q") for k in rows["state"])
    bookings = [bookings_of(row["q60"]) for key, row in rows.items() if key.startswith("booking-")]
    minute = int(now.timestamp()) // 60
    assert sorted(bookings, key=len) == [{minute + 1: 2.0}, {minute + 1: 1.0, minute + 2: 1.0}]


def test_a_booking_on_a_copy_read_a_while_ago_reads_the_others_bookings_first(azurite):
    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    one, table_name = gate(azurite, [Window(60, 2)], clock=lambda: now)
    other, _ = gate(azurite, [Window(60, 2)], clock=lambda: now, name=table_name)
    assert all(isinstance(one.admit(), Admit) for _ in range(2))
    assert 55 <= one.admit().seconds <= 57       # the next minute's first place
    assert 55 <= other.admit().seconds <= 57     # and its last
    time.sleep(0.15)   # older than KEPT_FRESH_SECONDS: one's copy does not hold other's booking
    later = one.admit()
    assert isinstance(later, Wait) and 115 <= later.seconds <= 117   # read again first: the minute after


def test_a_booking_row_with_nothing_to_come_is_deleted_once_idle_and_one_with_places_to_come_is_kept(azurite):
    from shared.adapters.quota_table import BOOKING_ROW_IDLE_SECONDS

    real_now = datetime.now(UTC)
    idle_later = real_now + timedelta(seconds=BOOKING_ROW_IDLE_SECONDS + 60)
    first, table_name = gate(azurite, [Window(60, 100)], clock=lambda: real_now)
    table = first._table
    ahead = int(idle_later.timestamp()) // 60 + 5
    table.upsert_entity({"PartitionKey": "mde-tenant", "RowKey": "booking-stopped", "q60": "1000:3"})
    table.upsert_entity({"PartitionKey": "mde-tenant", "RowKey": "booking-live", "q60": f"{ahead}:2"})

    def rows():
        return sorted(e["RowKey"] for e in table.query_entities("PartitionKey eq 'mde-tenant'"))

    assert isinstance(first.admit(), Admit)   # read: written just now, so kept even with nothing to come
    assert rows() == ["booking-live", "booking-stopped", "state"]
    later, _ = gate(azurite, [Window(60, 100)], clock=lambda: idle_later, name=table_name)
    assert isinstance(later.admit(), Admit)
    assert rows() == ["booking-live", "state"]
    assert later._others == {"q60": {ahead: 2.0}}   # the live row's places are counted


def test_hunts_the_running_time_budget_turned_away_come_back_spread_over_the_call_windows_they_fit(azurite):
    """Each takes running time in a later running-time window and a call place in it, so that the copies come back
    as the call windows admit them, rather than all at the running-time window's start."""
    from shared.core.quota import RuntimeWindow

    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)   # 55 s before the next minute
    one, _ = gate(azurite, [Window(10, 3)], clock=lambda: now)
    one._runtime = (RuntimeWindow(seconds=60, budget=0.5),)   # booked up to 1 s a minute (RUNTIME_OVERBOOKING)
    first = one.admit()
    assert isinstance(first, Admit)
    one.spent(0.25, first.reserved)   # one call's running time: 0.25 s
    assert isinstance(one.admit(), Admit)   # 0.5 s of 0.5 spent this minute; 2 calls of the 10 s window's 3
    waits = [one.admit() for _ in range(8)]
    assert all(isinstance(w, Wait) and w.reason.startswith("the running-time budget") for w in waits)
    starts = [int(w.seconds) // 10 * 10 + 5 for w in waits]   # the call window each comes back in, from now
    # Four 0.25 s hunts a minute: three in the minute's first 10 s window (its call limit), the fourth in the next
    assert sorted(starts) == [55, 55, 55, 65, 115, 115, 115, 125]


def test_a_booking_row_storage_refuses_still_turns_the_hunts_away_and_the_next_write_carries_its_places(azurite):
    """A booking only spreads hunts out: when its write fails, the Waits (and an admission decided in the same
    batch) stand, and the places are written with the next booking."""
    from azure.core.exceptions import ServiceRequestError

    from shared.core.quota import bookings_of

    now = datetime(2026, 11, 23, 12, 0, 5, tzinfo=UTC)
    one, _ = gate(azurite, [Window(60, 1)], clock=lambda: now)
    assert isinstance(one.admit(), Admit)
    real = one._table

    class BookingRefused(SlowCountingTable):
        def upsert_entity(self, *args, **kwargs):
            self.writes += 1
            raise ServiceRequestError("storage is away")

    one._table = BookingRefused(real, delay=0)
    refused = one.admit()
    assert isinstance(refused, Wait) and 55 <= refused.seconds <= 57 and one._table.writes == 1
    one._table = real
    assert isinstance(one.admit(), Wait)
    minute = int(now.timestamp()) // 60
    [row] = [e for e in real.query_entities("PartitionKey eq 'mde-tenant'") if e["RowKey"].startswith("booking-")]
    assert bookings_of(row["q60"]) == {minute + 1: 1.0, minute + 2: 1.0}   # the refused booking's place too
