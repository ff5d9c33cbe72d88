"""What the sandbox saw, for tests to read: calls per endpoint and status, tokens issued per client id, 429s
sent, the exact request bodies received, TCP connections accepted on the http port; per API and tenant, calls,
429s (those of the running-time form apart) and the running time charged (the cost model: sandbox.knobs)."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RecordedBody:
    endpoint: str
    raw: bytes

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", errors="replace")


@dataclass
class Counters:
    calls: Counter[tuple[str, int]] = field(default_factory=Counter)     # (endpoint, status) -> calls
    tokens_issued: Counter[str] = field(default_factory=Counter)          # client id -> tokens
    throttled: int = 0                                                    # 429s sent
    request_bodies: list[RecordedBody] = field(default_factory=list)      # hunting and directory calls
    connections_accepted: int = 0                                         # on the http port
    tenant_calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (api, the token's tid) -> calls
    tenant_throttled: Counter[tuple[str, str]] = field(default_factory=Counter)  # (api, tid) -> 429s
    # (api, tid) -> the running-time 429s among them
    tenant_running_time_throttled: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (api, tid) -> running time charged, in seconds
    tenant_running_seconds: defaultdict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_call(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.calls[(endpoint, status)] += 1
            if status == 429:
                self.throttled += 1

    def count_tenant_call(self, endpoint: str, tenant: str) -> None:
        """An authorized hunting call, by the tenant its token carried (`tid`)."""
        with self._lock:
            self.tenant_calls[(endpoint, tenant)] += 1

    def count_tenant_throttle(self, endpoint: str, tenant: str, *, running_time: bool = False) -> None:
        with self._lock:
            self.tenant_throttled[(endpoint, tenant)] += 1
            if running_time:
                self.tenant_running_time_throttled[(endpoint, tenant)] += 1

    def count_running_time(self, endpoint: str, tenant: str, seconds: float) -> None:
        with self._lock:
            self.tenant_running_seconds[(endpoint, tenant)] += seconds

    def running_seconds_by_tenant(self, endpoint: str | None = None) -> dict[str, float]:
        with self._lock:
            totals: defaultdict[str, float] = defaultdict(float)
            for (name, tenant), seconds in self.tenant_running_seconds.items():
                if endpoint is None or name == endpoint:
                    totals[tenant] += seconds
            return dict(totals)

    def calls_by_tenant(self, endpoint: str | None = None) -> dict[str, int]:
        with self._lock:
            totals: Counter[str] = Counter()
            for (name, tenant), n in self.tenant_calls.items():
                if endpoint is None or name == endpoint:
                    totals[tenant] += n
            return dict(totals)

    def count_token(self, client_id: str) -> None:
        with self._lock:
            self.tokens_issued[client_id] += 1

    def record_body(self, endpoint: str, raw: bytes) -> None:
        with self._lock:
            self.request_bodies.append(RecordedBody(endpoint, raw))

    def count_connection(self) -> None:
        with self._lock:
            self.connections_accepted += 1

    def calls_to(self, endpoint: str, status: int | None = None) -> int:
        """Calls to one endpoint, with one status or all."""
        with self._lock:
            return sum(n for (name, code), n in self.calls.items()
                       if name == endpoint and (status is None or code == status))

    def bodies_for(self, endpoint: str) -> list[str]:
        with self._lock:
            return [body.text for body in self.request_bodies if body.endpoint == endpoint]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
            self.tokens_issued.clear()
            self.tenant_calls.clear()
            self.tenant_throttled.clear()
            self.tenant_running_time_throttled.clear()
            self.tenant_running_seconds.clear()
            self.throttled = 0
            self.request_bodies.clear()
            self.connections_accepted = 0

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            calls: dict[str, dict[str, int]] = {}
            for (name, code), n in sorted(self.calls.items()):
                calls.setdefault(name, {})[str(code)] = n
            return {
                "calls": calls,
                "tokens_issued": dict(self.tokens_issued),
                "throttled": self.throttled,
                "request_bodies": [{"endpoint": b.endpoint, "body": b.text} for b in self.request_bodies],
                "connections_accepted": self.connections_accepted,
                "tenant_calls": {f"{api} {tenant}": n for (api, tenant), n in sorted(self.tenant_calls.items())},
                "tenant_throttled": {f"{api} {tenant}": n
                                     for (api, tenant), n in sorted(self.tenant_throttled.items())},
                "tenant_running_time_throttled": {f"{api} {tenant}": n for (api, tenant), n
                                                  in sorted(self.tenant_running_time_throttled.items())},
                "tenant_running_seconds": {f"{api} {tenant}": round(seconds, 6) for (api, tenant), seconds
                                           in sorted(self.tenant_running_seconds.items())},
            }
