"""Session-wide local stack: Azurite (real storage) and the sandbox (Defender + Entra ID), on free loopback ports.

Both are started once per test session and stopped at its end; per-test fixtures reset the sandbox's knobs and
counters so that tests do not see each other's quotas or faults.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from sandbox.azurite import Azurite


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


@pytest.fixture
def unique_name() -> str:
    """A fresh queue/container name per test (lowercase, storage-safe)."""
    return "t" + uuid.uuid4().hex[:20]
