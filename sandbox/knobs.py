"""The settings a test turns: quotas and the form of a 429, faults, token lifetime, row cap.

`Knobs` is one mutable object per sandbox (tests write `sb.knobs.quota.calls_per_window = 2`); the admin path
merges JSON into it with `merge_knobs`, refusing unknown names and wrong types so that a typo fails loudly.

Quota accounting (documented here because tests rely on it):
- per tenant (the token's `tid`), across all three APIs; fixed windows aligned on the Unix epoch, so a window of
  60 s resets on every whole minute and `Retry-After` is the whole seconds (rounded up) until that boundary;
- a call counts when it passes authentication and is not throttled, whatever its outcome (5xx faults and 400s
  count, 401/403/429 do not);
- each tenant's quota is `tenant_quotas[tid]` when one is set (a whole `QuotaKnobs` of its own: a tenant first
  named in an update starts from the defaults below, not from `quota`), else `quota`.

Running time (the service's "CPU" quota), charged per admitted call:

    charged = fixed + cpu_seconds_per_1k_rows_scanned * rows_scanned / 1000
                    + cpu_seconds_per_1k_rows_returned * rows_returned / 1000
    fixed   = cpu_seconds_per_call, or when that is None the engine's measured time (the query run to its rows
              counted, before any byte is sent)

- rows scanned: the rows of every table the query reads, as that tenant's dataset holds them, whatever the query's
  filters or the Graph Timespan (a cost model, not an engine profile: the same query always costs the same);
  rows returned: the rows of the result (after `row_cap`);
- `fixed` is charged when the call is admitted, so a call that then fails (an injected 5xx, a 400) costs it too;
  the row terms when the engine has run (a call the engine refuses costs `fixed` only);
- mde and m365d answer with `Stats.ExecutionTime` (seconds) equal to `charged` (and `resource_usage.cpu` the
  same time); Graph returns no statistics;
- `cpu_latency_ratio`: the answer waits `ratio * charged` seconds before its first byte (0: at once; 1: the call
  takes as long as it is charged, so a client that meters wall-clock time sees the running time);
- budgets: `cpu_budget_seconds` per `cpu_window_seconds`, and each `[budget seconds, window seconds]` of
  `cpu_extra_windows` besides (the defaults are mde's: 10 minutes per hour and 3 hours per day; m365d and Graph
  are tenant-sized in 15-minute cycles: `cpu_window_seconds=900`, `cpu_extra_windows=[]`). Each window is
  epoch-aligned and counts what the tenant was charged in it; once a tenant's charges in the current window
  reach that window's budget, its calls get the running-time 429 ("You have exceeded processing resources
  allocated to this tenant. You can run queries again in <duration>.", on Graph too, in Graph's error envelope)
  until that window resets; `Retry-After` and <duration> are the time to the latest reset among the exhausted
  windows. A call admitted under the budget runs to the end, so the last one may take the charges past it;
- every charge is also counted per API and tenant in the counters (`tenant_running_seconds`), and the 429s of the
  running-time form apart (`tenant_running_time_throttled`), both in `GET /_sandbox/state`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

ThrottleForm = Literal["header_and_body", "body_only", "header_only", "neither"]
ThrottleBody = Literal["calls", "calls_for_key", "graph"]
DurationFormat = Literal["hh:mm:ss", "seconds", "minutes", "iso8601"]
SizeError = Literal["result_size", "preempted"]
ApiName = Literal["mde", "m365d", "graph"]
# How a retired endpoint answers: 410 Gone; 404 on the hunting path; 400 with a code saying so; 403 with a message
# saying the API is deprecated (each a form the relay must recognise).
RetiredForm = Literal["gone", "not_found", "code", "message"]


@dataclass
class QuotaKnobs:
    calls_per_window: int = 45
    window_seconds: float = 60.0
    cpu_budget_seconds: float = 600.0            # mde: 10 minutes of running time per hour
    cpu_window_seconds: float = 3600.0
    # further budgets, each [budget seconds, window seconds]; mde: 3 hours per day
    cpu_extra_windows: list[list[float]] = field(default_factory=lambda: [[10_800.0, 86_400.0]])
    cpu_seconds_per_call: float | None = 0.01    # None: charge the engine's measured time
    cpu_seconds_per_1k_rows_scanned: float = 0.0
    cpu_seconds_per_1k_rows_returned: float = 0.0
    cpu_latency_ratio: float = 0.0               # the answer waits this fraction of the charged running time
    throttle_form: ThrottleForm = "header_and_body"
    # None: each API's own wording (mde and m365d "calls"; graph the generic TooManyRequests, and for the
    # running-time 429 its envelope with the running-time message); "graph": the generic one for both kinds
    throttle_body: ThrottleBody | None = None
    cpu_duration_format: DurationFormat = "hh:mm:ss"


@dataclass
class FaultKnobs:
    # None: the three hunting endpoints; or one of "mde", "m365d", "graph", "msi", "token"
    # (the identity endpoints honour only status and latency faults).
    endpoint: str | None = None
    latency_seconds: float = 0.0
    status: int = 503                   # 500, 502, 503 or 504
    status_next: int = 0                # the next N calls get `status`
    status_rate: float = 0.0            # or each call does with this probability (seeded)
    reset_next: int = 0                 # the next N responses are cut mid-body by a TCP reset
    stall_next: int = 0                 # the next N responses stop mid-body for stall_seconds
    stall_seconds: float = 5.0
    size_error: SizeError = "result_size"
    size_error_next: int = 0            # the next N queries get the service's 400 size/preemption error


@dataclass
class Knobs:
    row_cap: int = 100_000
    max_result_mb: float = 50.0   # a result whose rows' JSON is bigger is the service's 400 "allowed result size"
    token_lifetime_seconds: float = 3600.0
    retired_apis: list[ApiName] = field(default_factory=list)   # these endpoints answer as retired
    retired_form: RetiredForm = "gone"
    quota: QuotaKnobs = field(default_factory=QuotaKnobs)
    tenant_quotas: dict[str, QuotaKnobs] = field(default_factory=dict)   # tenant id -> its own quota
    faults: FaultKnobs = field(default_factory=FaultKnobs)

    def quota_for(self, tenant: str) -> QuotaKnobs:
        """The tenant's own quota when one is set, else the one every tenant has."""
        return self.tenant_quotas.get(tenant, self.quota)


_NON_NEGATIVE = {"cpu_budget_seconds", "cpu_seconds_per_call", "cpu_seconds_per_1k_rows_scanned",
                 "cpu_seconds_per_1k_rows_returned", "cpu_latency_ratio"}
_POSITIVE = {"window_seconds", "cpu_window_seconds"}


class KnobError(ValueError):
    """A knob update names an unknown knob or gives a value of the wrong type."""


def knobs_as_dict(knobs: Knobs) -> dict[str, Any]:
    return dataclasses.asdict(knobs)


def _accepts(annotation: Any, value: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return False


def _check_tenant_quotas(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        raise KnobError(f"knob {where} must be a JSON object of tenant id -> quota knobs")
    for tenant, quota in value.items():
        merge_knobs(QuotaKnobs(), quota, prefix=f"{where}.{tenant}.")   # checked on a scratch copy first


def merge_knobs(target: Any, update: dict[str, Any], prefix: str = "") -> None:
    """JSON merge of `update` into the dataclass `target`, in place; raises KnobError before changing anything
    at the level where a name or type is wrong."""
    if not isinstance(update, dict):
        raise KnobError(f"knobs{prefix or ''} must be a JSON object")
    hints = typing.get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    for name, value in update.items():
        if name not in names:
            raise KnobError(f"unknown knob {prefix}{name}; known: {', '.join(sorted(names))}")
        current = getattr(target, name)
        if name == "tenant_quotas":
            _check_tenant_quotas(value, prefix + name)
        elif dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise KnobError(f"knob {prefix}{name} must be a JSON object")
        elif not _accepts(hints[name], value):
            raise KnobError(f"knob {prefix}{name} cannot be {value!r} (expected {hints[name]})")
        elif name == "cpu_extra_windows" and not all(len(pair) == 2 and min(pair) > 0 for pair in value):
            raise KnobError(f"knob {prefix}{name} must be a list of [budget seconds, window seconds], both positive")
        elif name in _NON_NEGATIVE and value is not None and value < 0:
            raise KnobError(f"knob {prefix}{name} cannot be negative")
        elif name in _POSITIVE and value <= 0:
            raise KnobError(f"knob {prefix}{name} must be positive")
    for name, value in update.items():
        current = getattr(target, name)
        if name == "tenant_quotas":
            for tenant, quota in value.items():   # each merged into the tenant's quota, or a fresh default one
                merge_knobs(current.setdefault(tenant, QuotaKnobs()), quota, prefix=f"{prefix}{name}.{tenant}.")
        elif dataclasses.is_dataclass(current):
            merge_knobs(current, value, prefix=f"{prefix}{name}.")
        elif name == "cpu_extra_windows":
            setattr(target, name, [[float(budget), float(window)] for budget, window in value])
        else:
            setattr(target, name, float(value) if hints[name] is float else value)
