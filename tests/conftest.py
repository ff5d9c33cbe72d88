"""Session-wide local stack: Azurite (real storage) and the sandbox (Defender + Entra ID), on free loopback ports.

Both are started once per test session and stopped at its end; per-test fixtures reset the sandbox's knobs and
counters so that tests do not see each other's quotas or faults.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from sandbox.azurite import Azurite
from tests.log_audit import LogAudit

_audit = LogAudit()


def pytest_configure(config: pytest.Config) -> None:
    _audit.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = _audit.finish()
    size = _audit.path.stat().st_size
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"log audit: {size} bytes of DEBUG logs checked, {len(leaks)} leaks ({_audit.path})")
        for leak in leaks[:20]:
            reporter.write_line("  LEAK " + leak)
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

if TYPE_CHECKING:
    from sandbox.server import Sandbox
    from sandbox.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


@pytest.fixture
def unique_name() -> str:
    """A fresh queue/container name per test (lowercase, storage-safe)."""
    return "t" + uuid.uuid4().hex[:20]


# --- the sandbox (Defender + Entra ID) --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    """One in-process sandbox for the whole session (20,000 DeviceProcessEvents rows)."""
    from sandbox.server import Sandbox  # imported here: tests that never use the sandbox need not load its engine

    server = Sandbox(rows=20_000).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Sandbox:
    """The session's sandbox, reset before each test: default knobs, zero counters and quotas, default identities."""
    sandbox_server.reset()
    return sandbox_server


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    from sandbox.webhook_receiver import WebhookReceiver

    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
