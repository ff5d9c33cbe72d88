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
from tests.document_audit import DocumentAudit
from tests.log_audit import LogAudit

_audit = LogAudit()
_documents = DocumentAudit()


def pytest_configure(config: pytest.Config) -> None:
    _audit.start()
    from sandbox.webhook_receiver import WebhookReceiver

    stop = WebhookReceiver.stop

    def audited_stop(receiver: WebhookReceiver) -> None:   # every receiver, fixture or not, is audited as it stops
        _documents.webhook_bodies(list(receiver.requests))
        stop(receiver)

    WebhookReceiver.stop = audited_stop  # type: ignore[method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = _audit.finish()
    size = _audit.path.stat().st_size
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"log audit: {size} bytes of DEBUG logs checked, {len(leaks)} leaks ({_audit.path})")
        for leak in leaks[:20]:
            reporter.write_line("  LEAK " + leak)
    if reporter is not None:
        reporter.write_line(f"document audit: {_documents.checked} documents checked for strict JSON, "
                            f"{len(_documents.problems)} not strict")
        for problem in _documents.problems[:20]:
            reporter.write_line("  NOT STRICT " + problem)
    if leaks or _documents.problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

if TYPE_CHECKING:
    from sandbox.server import Sandbox
    from sandbox.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator
        # Hunt queues hold what tests sent (hostile input on purpose); everything else the relay wrote.
        _documents.storage(emulator.connection_string, is_input_queue=lambda name: name.startswith("hunts"))


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
