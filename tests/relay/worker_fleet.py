"""Worker processes for the fleet tests: `python -m shared worker` subprocesses sharing one stack, started, killed
(SIGKILL, by pid) and restarted one at a time, each writing its log to a file so that a failure can show it.

    with WorkerFleet(env, tmp_path, concurrency=2, lease_seconds=3) as fleet:
        fleet.start(3)
        fleet.kill(fleet.workers[0]); fleet.start(1)
        fleet.stop()              # SIGTERM: each finishes what it holds
        fleet.drain()             # `worker --drain` until the queue is empty, delayed messages included
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class WorkerFleet:
    env: dict[str, str]
    log_dir: Path
    concurrency: int = 2
    lease_seconds: int = 3
    workers: list[WorkerProcess] = field(default_factory=list)
    kills: int = 0

    def __post_init__(self) -> None:
        # The stack's environment on top of this process's (PATH, and the identity variables set by monkeypatch).
        self.env = {**os.environ, "HUNT_LOG_LEVEL": "INFO", **self.env}
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def _spawn(self, *extra: str) -> WorkerProcess:
        log = self.log_dir / f"worker-{len(self.workers) + 1:02d}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "shared", "worker", "--concurrency", str(self.concurrency),
                 "--lease-seconds", str(self.lease_seconds), *extra],
                cwd=ROOT, env=self.env, stdout=sink, stderr=subprocess.STDOUT)
        worker = WorkerProcess(process, log)
        self.workers.append(worker)
        return worker

    def start(self, count: int = 1) -> list[WorkerProcess]:
        return [self._spawn() for _ in range(count)]

    @property
    def running(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive]

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL: no handler runs, nothing is completed or released; its leases lapse on their own."""
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(10)
        self.kills += 1

    def stop(self, timeout: float = 60.0) -> None:
        for worker in self.running:
            worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(10)

    def drain(self, timeout: float = 120.0) -> int:
        """One `worker --drain` to the end: the queue empty, leased and delayed messages included."""
        worker = self._spawn("--drain")
        try:
            return worker.process.wait(timeout)
        finally:
            if worker.alive:
                worker.process.kill()
                worker.process.wait(10)

    def count_in_logs(self, text: str) -> int:
        return sum(w.output().count(text) for w in self.workers)

    def logs(self) -> str:
        return "\n".join(f"--- {w.log.name} (exit {w.process.poll()})\n{w.output()[-4000:]}" for w in self.workers)

    def __enter__(self) -> WorkerFleet:
        return self

    def __exit__(self, *exc: Any) -> None:
        for worker in self.running:
            worker.process.kill()
            worker.process.wait(10)


def wait_until(condition: Any, timeout: float, interval: float = 0.05) -> bool:
    """Polls `condition()` until it is true or `timeout` seconds pass; returns its last value as a bool."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
