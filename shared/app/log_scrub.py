"""Secrets never reach logs: every log record in the process is scrubbed when it is created.

The relay itself never logs tokens, secrets or result rows; this is the second line, for what libraries and
exception texts carry (urllib3 logs request lines with their query strings at DEBUG, and exception messages can
hold URLs with SAS signatures). Installed once per process as a log-record factory, so it covers every logger
and every handler, including the Functions host's.

Scrubbed: SAS signatures (sig=), bearer tokens and JWTs, whsec_ signing secrets, client_secret / AccountKey /
access_token / X-IDENTITY-HEADER values.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(\bsig=)[^&\s\"'<>]+"), r"\1***"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"), "***jwt***"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), "whsec_***"),
    (re.compile(r"(?i)((?:client_secret|client_assertion|accountkey|access_token|refresh_token|x-identity-header"
                r"|identity_header|sharedaccesssignature)[\"']?\s*[=:]\s*[\"']?)[^&;\s\"',}]+"), r"\1***"),
)

_installed = threading.Lock()
_done = False


def scrub(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def install() -> None:
    """Scrub every log record created from now on (idempotent)."""
    global _done
    with _installed:
        if _done:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                message = str(record.msg)
            record.msg, record.args = scrub(message), None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
            return record

        logging.setLogRecordFactory(factory)
        # azure-core's HTTP logging policy logs every request at INFO; keep it to warnings.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
        _done = True
