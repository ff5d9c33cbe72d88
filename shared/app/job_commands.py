"""`python -m shared status ID` and `python -m shared wait ID [--timeout 10m]`: a hunt's state from the job ledger
(shared.adapters.job_ledger), however it arrived.

Exit codes: 0 delivered; 1 failed, poison or cancelled; 2 not finished (`status`) or timed out (`wait`); 3 unknown id.
`wait` polls with the ledger's own Retry-After (a throttled hunt's next attempt, else a short poll).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime

from shared.adapters.http_session import pooled_session
from shared.adapters.job_ledger import JobLedger, JobRecord
from shared.adapters.storage import table_service
from shared.app.config import load_settings
from shared.core.job_states import retry_after
from shared.core.settings import Settings, parse_duration

EXIT_DELIVERED, EXIT_FAILED, EXIT_UNFINISHED, EXIT_UNKNOWN = 0, 1, 2, 3


def ledger_for(settings: Settings) -> JobLedger:
    return JobLedger(table_service(settings, pooled_session()).get_table_client(settings.jobs_table),
                     clock=lambda: datetime.now(UTC), retention_seconds=settings.job_retention_seconds)


def exit_code(record: JobRecord | None) -> int:
    if record is None:
        return EXIT_UNKNOWN
    if not record.finished:
        return EXIT_UNFINISHED
    return EXIT_DELIVERED if record.status == "delivered" else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    settings = load_settings(os.environ)
    tenant = args.tenant or settings.default_tenant
    ledger = ledger_for(settings)
    record = ledger.get(tenant, args.id)
    if args.command == "wait":
        deadline = time.monotonic() + parse_duration(args.timeout)
        while record is not None and not record.finished and time.monotonic() < deadline:
            wait = retry_after(record.status, record.next_attempt_at, datetime.now(UTC))
            time.sleep(max(0.2, min(wait, deadline - time.monotonic())))
            record = ledger.get(tenant, args.id)
    if record is None:
        sys.stderr.write(f"error: no hunt {args.id!r} in the job ledger" + (f" of tenant {tenant!r}" if tenant else "")
                         + "\n")
        return EXIT_UNKNOWN
    sys.stdout.write(json.dumps(record.as_dict()) + "\n")
    return exit_code(record)
