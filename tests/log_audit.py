"""The whole test suite runs with DEBUG logging captured to a file; at the end no token, secret, identity header,
SAS signature or result row may appear in it (issue: secret hygiene). Registered from tests/conftest.py.

The sandbox's own loggers (Microsoft's side of the local stack) are not audited: only what the relay and the
libraries it drives write.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

from sandbox.dataset import KNOWN_DEVICE_ID
from shared.app import log_scrub

LEAKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a client secret", re.compile(r"sandbox-secret")),
    ("a JWT (access token)", re.compile(r"eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.")),
    ("a SAS signature", re.compile(r"(?i)\bsig=(?!\*\*\*)[^&\s\"']+")),
    ("a webhook signing secret", re.compile(r"whsec_(?!\*\*\*)[A-Za-z0-9+/=]{8,}")),
    ("the identity header", re.compile(r"(?i)x-identity-header[\"']?\s*[:=]\s*[\"']?(?!\*\*\*)[A-Za-z0-9]")),
    ("a bearer token", re.compile(r"(?i)bearer\s+(?!\*\*\*)[A-Za-z0-9\-._~+/]{8,}")),
    # Values that exist only inside result rows of the sandbox's dataset.
    ("a result row", re.compile(re.escape(KNOWN_DEVICE_ID) + r'|"(ProcessCommandLine|InitiatingProcessFileName)"\s*:')),
)


class _NotSandbox(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("sandbox")


class LogAudit:
    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="hunt-log-audit-")) / "debug.log"
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setLevel(logging.DEBUG)
        self.handler.addFilter(_NotSandbox())
        self.handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def start(self) -> None:
        log_scrub.install()  # as every relay process does when it builds its Relay
        root = logging.getLogger()
        root.addHandler(self.handler)
        root.setLevel(logging.DEBUG)

    def finish(self) -> list[str]:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
        return find_leaks(self.path.read_text(encoding="utf-8", errors="replace"))


def find_leaks(text: str) -> list[str]:
    found = []
    for line_number, line in enumerate(text.splitlines(), 1):
        for what, pattern in LEAKS:
            if pattern.search(line):
                found.append(f"line {line_number}: {what}: {line[:200]}")
    return found
