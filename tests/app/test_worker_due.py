"""The portable worker polls again as a copy it requeued becomes visible (shared.app.worker), not when its idle
backoff next comes round."""

from __future__ import annotations

import threading
import time
from typing import Any

from shared.app.worker import DUE_MARGIN_SECONDS, PortableWorker
from shared.core.outcome import Cause, Outcome


class _Message:
    def __init__(self, content: str) -> None:
        self.id, self.content, self.dequeue_count, self.pop_receipt = "m-1", content, 1, "r"


class _Queue:
    """Hands out one message once, then nothing; counts the receives."""

    queue_name = "hunts"

    def __init__(self) -> None:
        self.receives = 0
        self._message: _Message | None = _Message("{}")

    def receive_messages(self, **_: Any) -> list[_Message]:
        self.receives += 1
        message, self._message = self._message, None
        return [message] if message is not None else []

    def update_message(self, message: _Message, **_: Any) -> _Message:
        return message

    def delete_message(self, message: _Message, **_: Any) -> None:
        return None


class _Stop(threading.Event):
    """Records each wait the worker's loop asks for, and stops it after the first wait past the copy's due time."""

    def __init__(self, due_after: float) -> None:
        super().__init__()
        self.waits: list[float] = []
        self._due = time.monotonic() + due_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if time.monotonic() > self._due:
            self.set()
        return super().wait(min(timeout or 0.0, 0.05))   # a short real wait: the test stays quick


def test_an_idle_worker_waits_for_the_copy_it_requeued_not_its_whole_backoff():
    requeued = Outcome("job-1", Cause.GATE_WAIT, "the shared call budget for this window is spent", "graph", delay=0.6)
    queue = _Queue()
    worker = PortableWorker(queue, None, lambda raw, message_id, count: requeued, concurrency=1,  # type: ignore[arg-type]
                            max_poll_interval=30.0)
    stop = _Stop(due_after=1.0 + DUE_MARGIN_SECONDS)
    worker.run(stop=stop)
    # The copy is due 1 s (the queue's whole seconds) after it was sent: the loop asked for waits that end there
    # instead of growing towards its 30 s backoff, and polled again.
    assert max(stop.waits) <= 1.0 + DUE_MARGIN_SECONDS
    assert queue.receives >= 2


def test_dues_past_are_dropped_and_none_is_none():
    worker = PortableWorker(_Queue(), None, lambda *_: None, concurrency=1)  # type: ignore[arg-type]
    assert worker._next_due_in() is None
    worker._expect(Outcome("job-1", Cause.GATE_WAIT, "x", "graph", delay=2.2), time.monotonic() - 10)
    worker._expect(Outcome("job-2", Cause.GATE_WAIT, "x", "graph", delay=2.2), time.monotonic())
    worker._expect(Outcome("job-3", Cause.DELIVERED, "x", "graph"), time.monotonic())   # nothing requeued
    due_in = worker._next_due_in()
    assert due_in is not None and 2.9 < due_in <= 3.0 + DUE_MARGIN_SECONDS
    assert len(worker._due) == 1
