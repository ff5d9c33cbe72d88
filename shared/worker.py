"""The portable worker: the Functions queue trigger's semantics, without the Functions host.

    receive up to N messages, each invisible for a lease (renewed while the hunt runs)
    dequeue count above max -> move to <queue>-poison (send, then delete) without running it
    run the same handler as the Function; completed -> delete the message
    the handler raised -> the message becomes visible again after `retry_visibility` (the host's
        visibilityTimeout) and is retried, up to max dequeues
    storage unreachable -> back off on polling (capped), never a crash loop

`--drain` returns when the queue holds no message at all, visible or delayed, and nothing is in flight.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from shared.processor import Outcome

logger = logging.getLogger(__name__)

Handler = Callable[[bytes, str, int], Outcome]


@dataclass
class WorkerStats:
    processed: int = 0
    failed_handler: int = 0
    poisoned: int = 0
    outcomes: list[Outcome] = field(default_factory=list)


class _Lease:
    """Keeps one message invisible while it is processed; the pop receipt changes at every renewal."""

    def __init__(self, queue: QueueClient, message: QueueMessage, seconds: int) -> None:
        self.queue, self.message, self.seconds = queue, message, seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{message.id[:8]}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 2):
            with self._lock:
                try:
                    self.message = self.queue.update_message(self.message, visibility_timeout=self.seconds)
                except AzureError as error:
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

    def run(self, *, drain: bool = False, stop: threading.Event | None = None) -> WorkerStats:
        stop = stop or threading.Event()
        in_flight: set[Future[None]] = set()
        idle_sleep = 0.1
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="hunt") as pool:
            while not stop.is_set():
                in_flight = {f for f in in_flight if not f.done()}
                free = self.concurrency - len(in_flight)
                try:
                    messages = list(self.queue.receive_messages(
                        messages_per_page=max(1, free), max_messages=max(0, free),
                        visibility_timeout=self.lease_seconds)) if free > 0 else []
                except AzureError as error:
                    idle_sleep = min(max(idle_sleep * 2, 0.5), 30.0)
                    logger.warning("queue unreachable (%s); polling again in %.1f s", type(error).__name__, idle_sleep)
                    stop.wait(idle_sleep)
                    continue
                for message in messages:
                    in_flight.add(pool.submit(self._process, message))
                if messages:
                    idle_sleep = 0.1
                    continue
                if drain and not in_flight and self._queue_is_empty():
                    break
                stop.wait(idle_sleep if free > 0 else 0.05)
                idle_sleep = min(idle_sleep * 2, self.max_poll_interval)
        return self.stats

    def _queue_is_empty(self) -> bool:
        try:
            return self.queue.get_queue_properties().approximate_message_count == 0
        except AzureError:
            return False

    def _process(self, message: QueueMessage) -> None:
        if self.poison_queue is not None and (message.dequeue_count or 0) > self.max_dequeue_count:
            self._poison(message)
            return
        lease = _Lease(self.queue, message, self.lease_seconds)
        try:
            outcome = self.handler(_raw(message.content), message.id, message.dequeue_count or 1)
        except Exception:
            logger.exception("message %s: the handler failed; it will be retried", message.id)
            with self._stats_lock:
                self.stats.failed_handler += 1
            self._finish_quietly(lease, delete=False, visible_in=self.retry_visibility)
            return
        self._finish_quietly(lease, delete=True)
        with self._stats_lock:
            self.stats.processed += 1
            self.stats.outcomes.append(outcome)

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

