"""The portable worker: the Functions queue trigger's semantics, without the Functions host.

    receive up to N messages, each invisible for a lease (renewed while the hunt runs)
    dequeue count above max -> move to <queue>-poison (send, then delete) without running it
    run the same handler as the Function; completed -> delete the message
    the handler raised -> the message becomes visible again after `retry_visibility` (the host's
        visibilityTimeout) and is retried, up to max dequeues
    storage unreachable -> polls fail fast (no SDK retries: the SDK's own backoff waits 15-24 s between tries,
        which would hide the outage and delay the resume) and the worker backs off (0.5 s doubling to 10 s);
        never a crash loop

    a hunt it sent back to the queue (a requeued copy, visible after a delay) -> the worker polls again as that
        copy becomes visible, rather than when its idle backoff (up to `max_poll_interval`) next comes round:
        a backlog paced by the quota gate is taken up as each window opens

`--drain` returns when the queue holds no message at all, visible or delayed, and nothing is in flight.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from shared.core.outcome import Outcome, Status
from shared.core.retry_policy import visibility_seconds

logger = logging.getLogger(__name__)

Handler = Callable[[bytes, str, int], Outcome]

OUTAGE_BACKOFF_FIRST = 0.5   # seconds before the first poll after storage failed
OUTAGE_BACKOFF_MAX = 10.0    # and at most this long between polls while it stays away
RENEWAL_RETRY_SECONDS = 1.0  # a failed lease renewal is tried again this soon, not half a lease later
MAX_RECEIVE = 32             # messages one receive may ask for (the queue service's limit)
NO_SDK_RETRIES = 0          # per-call azure-core option (retry_total): the call fails at once, no SDK backoff
DUE_MARGIN_SECONDS = 0.05   # a requeued copy is polled for this long after it should have become visible


@dataclass
class WorkerStats:
    """Counts only, so that a worker that runs for months stays the same size (observers see each outcome)."""

    processed: int = 0
    failed_handler: int = 0
    poisoned: int = 0
    by_status: Counter[Status] = field(default_factory=Counter)


class _Lease:
    """Keeps one message invisible while it is processed; the pop receipt changes at every renewal."""

    def __init__(self, queue: QueueClient, message: QueueMessage, seconds: int) -> None:
        self.queue, self.message, self.seconds = queue, message, seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{message.id[:8]}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        interval = self.seconds / 2
        while not self._stop.wait(interval):
            with self._lock:
                try:
                    self.message = self.queue.update_message(self.message, visibility_timeout=self.seconds,
                                                             retry_total=NO_SDK_RETRIES)
                    interval = self.seconds / 2
                except AzureError as error:
                    interval = min(RENEWAL_RETRY_SECONDS, self.seconds / 4)
                    logger.warning("message %s: lease renewal failed (%s)", self.message.id, type(error).__name__)

    def finish(self, *, delete: bool, visible_in: int = 0) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            if delete:
                self.queue.delete_message(self.message)
            else:
                self.queue.update_message(self.message, visibility_timeout=visible_in)


class PortableWorker:
    def __init__(self, queue: QueueClient, poison_queue: QueueClient | None, handler: Handler, *, concurrency: int = 4,
                 lease_seconds: int = 60, max_dequeue_count: int = 5, retry_visibility: int = 30,
                 max_poll_interval: float = 2.0, on_poison: Callable[[QueueMessage], None] | None = None) -> None:
        self.queue, self.poison_queue, self.handler = queue, poison_queue, handler
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.max_dequeue_count = max_dequeue_count
        self.retry_visibility = retry_visibility
        self.max_poll_interval = max_poll_interval
        self.on_poison = on_poison
        self.stats = WorkerStats()
        self._stats_lock = threading.Lock()
        self._due: list[float] = []   # when copies this worker sent back become visible (time.monotonic), a heap
        self._due_lock = threading.Lock()

    def run(self, *, drain: bool = False, stop: threading.Event | None = None) -> WorkerStats:
        stop = stop or threading.Event()
        in_flight: set[Future[None]] = set()
        idle_sleep, outage_sleep = 0.1, 0.0
        # Like the host's newBatchThreshold: poll again once half the slots are free, so that one receive brings
        # several messages (each storage call costs the process 1-2 ms of CPU).
        batch_threshold = max(1, self.concurrency // 2)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="hunt") as pool:
            while not stop.is_set():
                in_flight = {f for f in in_flight if not f.done()}
                free = self.concurrency - len(in_flight)
                if free < batch_threshold:
                    wait(in_flight, timeout=0.5, return_when=FIRST_COMPLETED)
                    continue
                try:
                    messages = list(self.queue.receive_messages(
                        messages_per_page=min(free, MAX_RECEIVE), max_messages=min(free, MAX_RECEIVE),
                        visibility_timeout=self.lease_seconds, retry_total=NO_SDK_RETRIES))
                except AzureError as error:
                    outage_sleep = min(max(outage_sleep * 2, OUTAGE_BACKOFF_FIRST), OUTAGE_BACKOFF_MAX)
                    logger.warning("queue unreachable (%s); polling again in %.1f s", type(error).__name__,
                                   outage_sleep)
                    stop.wait(outage_sleep)
                    continue
                if outage_sleep:
                    logger.info("queue reachable again")
                    outage_sleep = 0.0
                for message in messages:
                    in_flight.add(pool.submit(self._process, message))
                if messages:
                    idle_sleep = 0.1
                    continue
                if drain and not in_flight and self._queue_is_empty():
                    break
                due_in = self._next_due_in()
                if due_in is not None and due_in <= idle_sleep:
                    stop.wait(due_in)   # a copy this worker requeued is about to become visible
                    idle_sleep = 0.1
                    continue
                stop.wait(idle_sleep)
                idle_sleep = min(idle_sleep * 2, self.max_poll_interval)
        return self.stats

    def _next_due_in(self) -> float | None:
        """Seconds until the next requeued copy becomes visible (those past are dropped); None: none is due."""
        now = time.monotonic()
        with self._due_lock:
            while self._due and self._due[0] <= now:
                heapq.heappop(self._due)
            return self._due[0] - now if self._due else None

    def _expect(self, outcome: Outcome, sent_at: float) -> None:
        if outcome.delay is not None:
            with self._due_lock:
                heapq.heappush(self._due, sent_at + visibility_seconds(outcome.delay) + DUE_MARGIN_SECONDS)

    def _queue_is_empty(self) -> bool:
        try:
            return self.queue.get_queue_properties(retry_total=NO_SDK_RETRIES).approximate_message_count == 0
        except AzureError:
            return False

    def _process(self, message: QueueMessage) -> None:
        if self.poison_queue is not None and (message.dequeue_count or 0) > self.max_dequeue_count:
            self._poison(message)
            return
        lease = _Lease(self.queue, message, self.lease_seconds)
        try:
            outcome = self.handler(_raw(message.content), message.id, message.dequeue_count or 1)
            self._expect(outcome, time.monotonic())
        except Exception:
            logger.exception("message %s: the handler failed; it will be retried", message.id)
            with self._stats_lock:
                self.stats.failed_handler += 1
            self._finish_quietly(lease, delete=False, visible_in=self.retry_visibility)
            return
        self._finish_quietly(lease, delete=True)
        with self._stats_lock:
            self.stats.processed += 1
            self.stats.by_status[outcome.status] += 1

    def _finish_quietly(self, lease: _Lease, *, delete: bool, visible_in: int = 0) -> None:
        try:
            lease.finish(delete=delete, visible_in=visible_in)
        except ResourceNotFoundError:
            logger.warning("message %s: its lease was lost; it will be redelivered", lease.message.id)
        except AzureError as error:
            logger.warning("message %s: could not complete (%s); it will be redelivered", lease.message.id,
                           type(error).__name__)

    def _poison(self, message: QueueMessage) -> None:
        assert self.poison_queue is not None
        logger.warning("message %s: dequeued %s times, moving it to %s", message.id, message.dequeue_count,
                       self.poison_queue.queue_name)
        self.poison_queue.send_message(message.content)
        self.queue.delete_message(message)
        with self._stats_lock:
            self.stats.poisoned += 1
        if self.on_poison is not None:
            self.on_poison(message)


def _raw(content: object) -> bytes:
    if isinstance(content, bytes):
        return content
    return str(content).encode("utf-8")

