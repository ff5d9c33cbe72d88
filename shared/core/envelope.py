"""The result envelope a destination receives (see the README's "Result envelope").

    id, status ("succeeded" | "failed"), [tenant: a customer tenant's hunt], api,
    [requested_api, warnings: when another API ran the hunt],
    query | template, context, attempts, submitted_at, completed_at,
    row_count, truncated, [parts: a split hunt's], schema [{name, type}], stats,
    then results (or results_url) | error {code, message, ...}

Pure: times are passed in. For a success the rows are streamed between `head` and `tail` (see result_formats).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shared.core.classify import NARROW_HINT, ErrorInfo
from shared.core.hunt_request import HuntRequest
from shared.core.rows import Column, PartSummary

ROW_CAP = 100_000  # the service's documented cap; a result of exactly this size may be truncated


def iso(moment: datetime) -> str:
    """An aware time as ISO 8601 in UTC with a Z: the one way the relay writes a time."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def head(request: HuntRequest, status: str) -> dict[str, Any]:
    envelope: dict[str, Any] = {"id": request.id, "status": status}
    if request.tenant is not None:
        envelope["tenant"] = request.tenant
    envelope["api"] = request.api
    if request.requested_api is not None:
        envelope["requested_api"] = request.requested_api
        envelope["warnings"] = list(request.warnings)
    if request.template is not None:
        envelope["template"] = request.template
        envelope["parameters"] = dict(request.parameters)
    else:
        envelope["query"] = request.query
    if request.timespan is not None:
        envelope["timespan"] = request.timespan
    if request.schedule is not None:
        envelope["schedule"] = request.schedule
        envelope["slot"] = request.slot
    envelope["context"] = dict(request.context)
    envelope["attempts"] = request.attempt
    if request.first_enqueued_at is not None:
        envelope["submitted_at"] = iso(request.first_enqueued_at)
    return envelope


def tail(*, row_count: int, columns: list[Column], stats: dict[str, Any] | None, completed_at: datetime,
         row_cap: int = ROW_CAP, parts: Sequence[PartSummary] | None = None) -> dict[str, Any]:
    """The envelope's closing fields. One API answer is truncated when it reached the cap; a split hunt's result
    when one of its parts did (a part of HUNT_SPLIT_MIN that still hit a cap, delivered as it came)."""
    truncated = row_count >= row_cap if parts is None else any(part.truncated for part in parts)
    result: dict[str, Any] = {"row_count": row_count, "truncated": truncated}
    if parts is not None:
        result["parts"] = [part.as_dict() for part in parts]
    result["schema"] = [{"name": c.name, "type": c.type} for c in columns]
    if truncated and parts is None:
        result["truncated_hint"] = f"the result reached the service's cap of {row_cap} rows; " + NARROW_HINT
    elif truncated:
        result["truncated_hint"] = ("a part of the shortest length the relay splits to (HUNT_SPLIT_MIN) still "
                                    "reached the service's row or size cap and holds only what the service "
                                    "returned (see parts); " + NARROW_HINT)
    if stats is not None:
        result["stats"] = stats
    result["completed_at"] = iso(completed_at)
    return result


def failure(request: HuntRequest | None, error: ErrorInfo, *, completed_at: datetime,
            job_id: str | None = None, context: dict[str, Any] | None = None,
            tenant: str | None = None) -> dict[str, Any]:
    """A failed envelope; `request` is None when the message never became a hunt request."""
    if request is not None:
        envelope = head(request, "failed")
    else:
        envelope = {"id": job_id, "status": "failed", **({"tenant": tenant} if tenant else {}),
                    "context": context or {}}
    envelope["completed_at"] = iso(completed_at)
    envelope["error"] = error.as_dict()
    return envelope
