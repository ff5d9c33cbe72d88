"""The ops page, pure: an OpsSnapshot (shared.app.ops_view) rendered as one HTML document with inline CSS and
SVG bars: no script, no external asset (its Content-Security-Policy allows nothing else). Every value is escaped.
Each section and figure carries an id or a data- attribute, so that a test (or a scraper) can read it.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from shared.app.ops_view import OpsSnapshot
from shared.core.job_states import STATUS_ORDER
from shared.core.quota import GateUsage

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
BAR_WIDTH = 320

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;background:#f6f8fa}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin-bottom:12px}
table{border-collapse:collapse}td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:middle}
th{color:#57606a;font-weight:600}.none{color:#57606a}.paused{color:#cf222e;font-weight:600}
.num{font-variant-numeric:tabular-nums;text-align:right}.open{color:#cf222e;font-weight:600}
"""


def _time(moment: datetime | None) -> str:
    return "" if moment is None else escape(moment.strftime("%Y-%m-%d %H:%M:%SZ"))


def _owner(tenant: str | None) -> str:
    return escape(tenant or "home")


def _bar(used: int, limit: int, colour: str | None = None) -> str:
    """A quota bar turns amber at 80% and red when spent; a count's bar (`colour`) is one colour."""
    share = 0.0 if limit <= 0 else min(1.0, used / limit)
    filled = round(BAR_WIDTH * share)
    colour = colour or ("#cf222e" if share >= 1 else "#bf8700" if share >= 0.8 else "#2da44e")
    return (f'<svg width="{BAR_WIDTH}" height="14" role="img" aria-label="{used} of {limit} calls used">'
            f'<rect width="{BAR_WIDTH}" height="14" fill="#eaeef2" rx="3"/>'
            f'<rect width="{filled}" height="14" fill="{colour}" rx="3"/></svg>')


def _queues(snapshot: OpsSnapshot) -> str:
    rows = "".join(f'<tr><td>{escape(name)}</td><td class="num" data-queue="{escape(name)}">'
                   f'{"?" if depth is None else depth}</td></tr>' for name, depth in snapshot.queues)
    return f'<section id="queues"><h2>Queues</h2><table><tr><th>queue</th><th>messages</th></tr>{rows}</table>' \
           '</section>'


def _states(snapshot: OpsSnapshot) -> str:
    known = [s for s in STATUS_ORDER if s in snapshot.states] + sorted(set(snapshot.states) - set(STATUS_ORDER))
    if not known:
        return '<section id="states"><h2>Hunts in the last hour</h2><p class="none">none</p></section>'
    top = max(snapshot.states.values())
    rows = "".join(f'<tr><td>{escape(s)}</td><td class="num" data-state="{escape(s)}">{snapshot.states[s]}</td>'
                   f'<td>{_bar(snapshot.states[s], top, "#0969da")}</td></tr>' for s in known)
    return f'<section id="states"><h2>Hunts in the last hour</h2><table>{rows}</table></section>'


def _gate_rows(usage: GateUsage) -> str:
    rows = []
    for window in usage.windows:
        paused = f'<span class="paused" data-paused="{_owner(usage.tenant)}/{escape(usage.api)}">paused until ' \
                 f'{_time(usage.paused_until)}</span>' if usage.paused_until else ""
        rows.append(
            f'<tr data-gate="{_owner(usage.tenant)}/{escape(usage.api)}/{window.seconds}s" '
            f'data-used="{window.used}" data-left="{window.left}"><td>{_owner(usage.tenant)}</td>'
            f'<td>{escape(usage.api)}</td><td>{window.limit} / {window.seconds}s</td>'
            f'<td>{_bar(window.used, window.limit)}</td><td class="num">{window.used} used</td>'
            f'<td class="num">{window.left} left</td>'
            f'<td>resets {_time(window.resets_at)}</td><td>{paused}</td></tr>')
    return "".join(rows)


def _gates(snapshot: OpsSnapshot) -> str:
    if not snapshot.gates:
        return '<section id="quota"><h2>Quota</h2><p class="none">the quota gate is off</p></section>'
    rows = "".join(_gate_rows(usage) for usage in snapshot.gates)
    return ('<section id="quota"><h2>Quota: calls per window</h2><table><tr><th>tenant</th><th>API</th>'
            f'<th>window</th><th></th><th></th><th></th><th></th><th></th></tr>{rows}</table></section>')


def _failures(snapshot: OpsSnapshot) -> str:
    if not snapshot.failures:
        return '<section id="failures"><h2>Recent failures</h2><p class="none">none in the last hour</p></section>'
    rows = "".join(f'<tr data-failure="{escape(r.id)}"><td>{_time(r.updated_at)}</td><td>{_owner(r.tenant)}</td>'
                   f'<td>{escape(r.id)}</td><td>{escape(r.status)}</td><td data-code="{escape(r.id)}">'
                   f'{escape(r.error_code or "")}</td></tr>' for r in snapshot.failures)
    return ('<section id="failures"><h2>Recent failures</h2><table><tr><th>when</th><th>tenant</th><th>job</th>'
            f'<th>state</th><th>code</th></tr>{rows}</table></section>')


def _kept(snapshot: OpsSnapshot) -> str:
    if not snapshot.kept:
        return '<section id="kept"><h2>Kept deliveries</h2><p class="none">none waiting</p></section>'
    rows = "".join(f'<tr data-kept="{escape(k.job_id)}"><td>{_time(k.kept_at)}</td><td>{_owner(k.tenant)}</td>'
                   f'<td>{escape(k.job_id)}</td><td class="num">{k.bytes} bytes</td></tr>' for k in snapshot.kept)
    return ('<section id="kept"><h2>Kept deliveries</h2><p>Results waiting for their destination; '
            '<code>python -m shared redrive --kept</code> sends them again.</p><table><tr><th>kept</th>'
            f'<th>tenant</th><th>job</th><th>size</th></tr>{rows}</table></section>')


def _breakers(snapshot: OpsSnapshot) -> str:
    if not snapshot.breakers:
        return '<section id="breakers"><h2>Circuit breakers</h2><p class="none">every circuit is closed</p>' \
               '</section>'
    rows = "".join(f'<tr data-breaker="{escape(b.key)}"><td>{escape(b.key)}</td><td class="open">{escape(b.state)}'
                   f'</td><td>{_time(b.opened_at)}</td><td>{_time(b.open_until) or "until closed"}</td>'
                   f'<td>{escape(b.reason or "")}</td></tr>' for b in snapshot.breakers)
    return ('<section id="breakers"><h2>Circuit breakers</h2><table><tr><th>destination</th><th>state</th>'
            f'<th>since</th><th>until</th><th>why</th></tr>{rows}</table></section>')


def render(snapshot: OpsSnapshot) -> bytes:
    tenants = ", ".join(_owner(t) for t in snapshot.tenants)
    body = "".join((_queues(snapshot), _states(snapshot), _gates(snapshot), _failures(snapshot), _kept(snapshot),
                    _breakers(snapshot)))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Hunt Relay: operations</title>'
            f'<meta name="viewport" content="width=device-width"><style>{_STYLE}</style></head><body>'
            f'<h1>Hunt Relay</h1><p id="taken">as of {_time(snapshot.taken_at)} · tenants: {tenants} · telemetry: '
            f'{escape(snapshot.telemetry)}</p>{body}</body></html>').encode()
