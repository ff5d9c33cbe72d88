"""The quota gate's decisions, pure: may a call go now, and what the shared state becomes when it does.

The state (one table entity per API and tenant, shared.adapters.quota_table) holds, per call window:

    paused_until        no call before this time (set from a 429's delay; only ever extended)
    w<seconds>_start    the start of the window the counts below belong to (epoch-aligned, like the service's)
    w<seconds>_calls    calls admitted in that window
    w<seconds>_next     calls admitted in that window's last moments, counted in the next window as well: such a
                        call may reach the API only after the boundary, so it takes a slot on both sides

and per running-time window (HUNT_RUNTIME_BUDGET: the service's second budget, query running time per window):

    r<seconds>_start    the start of the window the running time below belongs to (epoch-aligned)
    r<seconds>_used     seconds of running time charged in it: each admitted call reserves its estimate, and is
                        settled by what it spent once it answered (Stats.ExecutionTime where the API gives it, the
                        call's own wall clock otherwise; Graph gives no statistics)
    r_estimate          the running time of one call as the last settling process estimated it: where a process
                        that has not called yet starts from

A hunt turned away takes a place in a later window (`booked`, `booked_running_time`), so that a backlog comes
back spread over the windows it needs. Those places are not in the state: each process keeps its own in a booking
row beside it (one writer per row, so that turning hunts away never races the admissions), and a process books
against every row it read:

    q<seconds>          places booked in each later call window, as `index:places;...` (index: start / seconds)
    r<seconds>          running time booked in each later running-time window, as `index:seconds;...`

`decide` says Admit or Wait; `counts_at` reads the counts that hold now; `admitted` is the state with one more
call; `charged` the state with running time added (or an estimate settled); `gate_usage` is what an operator is
shown (`python -m shared quota`, the ops page): per window, calls used and left and when it resets, and the
pause. The clock and the randomness are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.core.envelope import iso

RUNTIME_OVERBOOKING = 2.0   # running time booked per window, as a multiple of its budget (booked_running_time)
MAX_EDGE_SECONDS = 1.0   # how close to a window's end a call also counts in the next window
BOOKED_SPREAD_SECONDS = 2.0   # booked hunts come back spread over a window's first moments (at most a fifth of it)


@dataclass(frozen=True)
class _Aligned:
    """A window of `seconds`, aligned on the Unix epoch as the service aligns its own."""

    seconds: int

    def start(self, now: datetime) -> int:
        epoch = int(now.timestamp())
        return epoch - epoch % self.seconds

    def seconds_left(self, now: datetime) -> float:
        return self.start(now) + self.seconds - now.timestamp()


@dataclass(frozen=True)
class Window(_Aligned):
    """A call budget: `limit` calls per window."""

    limit: int

    def at_edge(self, now: datetime) -> bool:
        """In the window's last moments: a call admitted now may reach the API in the next window."""
        return self.seconds_left(now) <= min(MAX_EDGE_SECONDS, self.seconds / 20)


@dataclass(frozen=True)
class RuntimeWindow(_Aligned):
    """A running-time budget: `budget` seconds of query running time per window."""

    budget: float


@dataclass(frozen=True)
class Admit:
    reserved: float = 0.0   # the running time this call was admitted with (its estimate), to settle afterwards


@dataclass(frozen=True)
class Wait:
    seconds: float
    reason: str
    window: Window | None = None   # the call window whose budget is spent (the gate books a place in a later one)
    runtime_window: RuntimeWindow | None = None   # or the running-time window whose budget is (likewise)


def decide(*, now: datetime, paused_until: datetime | None, counts: Sequence[int], windows: Sequence[Window],
           rand: Callable[[], float], runtime: Sequence[RuntimeWindow] = (), runtime_used: Sequence[float] = (),
           estimate: float = 0.0) -> Admit | Wait:
    """Admit when not paused, every call window has room, and the call's estimated running time fits every
    running-time window; else wait until the pause or the fullest window ends. A window with nothing spent yet
    always admits one call (an estimate above a whole budget must not stop every call). A small jitter (up to
    1 s) spreads the hunts that wait for the same moment."""
    if paused_until is not None and paused_until > now:
        return Wait((paused_until - now).total_seconds() + rand(), "paused by a 429")
    full = [w for w, n in zip(windows, counts, strict=True) if n >= w.limit]
    if full:
        binding = max(full, key=lambda w: w.seconds_left(now))
        return Wait(binding.seconds_left(now) + rand(), "the shared call budget for this window is spent", binding)
    spent = [w for w, used in zip(runtime, runtime_used, strict=True) if used > 0 and used + estimate > w.budget]
    if spent:
        binding_runtime = max(spent, key=lambda w: w.seconds_left(now))
        return Wait(binding_runtime.seconds_left(now) + rand(), "the running-time budget for this window is spent",
                    runtime_window=binding_runtime)
    return Admit(estimate)


def booked(window: Window, now: datetime, taken: Mapping[int, float], rand: Callable[[], float], *,
           not_before: int = 0) -> tuple[int, float]:
    """A hunt the call budget turned away takes a place in the first later window with places left (at most the
    window's limit per window), so that a backlog comes back spread over the windows it needs, not all at every
    boundary. `taken`: the places booked fleet-wide in each later window, by index (start / seconds);
    `not_before`: the earliest start (epoch seconds) of the window taken. The window's index, and the delay until
    it opens (spread over its first moments)."""
    return _book(window, now, rand, taken, fits=lambda places: places < max(window.limit, 1),
                 first=-(-not_before // window.seconds))


def booked_running_time(window: RuntimeWindow, now: datetime, taken: Mapping[int, float], estimate: float,
                        rand: Callable[[], float]) -> tuple[int, float]:
    """A hunt the running-time budget turned away takes its estimated running time in the first later window
    with that much of its booking allowance left (RUNTIME_OVERBOOKING times its budget; a window with nothing
    booked always takes one), so that the backlog comes back spread over the windows its running time needs, not
    all at every boundary. `taken`: the seconds booked fleet-wide in each later window, by index. The window's
    index, and the delay until it opens (spread over its first moments).

    The allowance is above the budget because the estimate runs long: on Graph it is the call's wall clock, which
    includes waiting for a core. When the window comes, each booked hunt is admitted against what was really
    spent; one that no longer fits is booked again (a run more), where a window booked short would stay unspent."""
    return _book(window, now, rand, taken,
                 fits=lambda seconds: seconds == 0 or seconds + estimate <= window.budget * RUNTIME_OVERBOOKING)


def _book(window: _Aligned, now: datetime, rand: Callable[[], float], taken: Mapping[int, float],
          fits: Callable[[float], bool], first: int = 0) -> tuple[int, float]:
    """The first window after the current one (and from index `first` on) whose bookings so far `fits` one more
    (a window with none always does), and the delay until it opens, spread over its first moments."""
    index = max(window.start(now) // window.seconds + 1, first)
    while not fits(taken.get(index, 0)):
        index += 1
    return index, index * window.seconds - now.timestamp() + rand() * min(BOOKED_SPREAD_SECONDS, window.seconds / 5)


def bookings_text(places: Mapping[int, float]) -> str:
    """One process's bookings of one kind, as its booking row holds them: `index:amount` by window, `;` apart."""
    return ";".join(f"{index}:{round(amount, 3):g}" for index, amount in sorted(places.items()))


def bookings_of(text: object) -> dict[int, float]:
    """`bookings_text` read back; a part that does not read as `index:amount`, with a positive finite amount, is
    left out (a booking row only spreads hunts out: it never admits one)."""
    places: dict[int, float] = {}
    for part in text.split(";") if isinstance(text, str) else ():
        index, _, amount = part.partition(":")
        try:
            window, value = int(index), float(amount)
        except ValueError:
            continue
        if math.isfinite(value) and value > 0:
            places[window] = places.get(window, 0.0) + value
    return places


def runtime_used_at(state: Mapping[str, Any], runtime: Sequence[RuntimeWindow], now: datetime) -> list[float]:
    """Running time already charged (or reserved) in each running-time window that holds `now`."""
    return [float(state.get(f"r{w.seconds}_used", 0.0)) if state.get(f"r{w.seconds}_start") == w.start(now) else 0.0
            for w in runtime]


def charged(state: Mapping[str, Any], runtime: Sequence[RuntimeWindow], now: datetime,
            seconds: float) -> dict[str, Any]:
    """The state with `seconds` of running time more (or, negative, less: an estimate settled) in every
    running-time window that holds `now`; never below zero."""
    new = dict(state)
    for window, used in zip(runtime, runtime_used_at(state, runtime, now), strict=True):
        new[f"r{window.seconds}_start"] = window.start(now)
        new[f"r{window.seconds}_used"] = max(0.0, used + seconds)
    return new


def counts_at(state: Mapping[str, Any], windows: Sequence[Window], now: datetime) -> list[int]:
    """Calls already counted in each window that holds `now` (what the previous window carried over included)."""
    counts = []
    for window in windows:
        start = state.get(f"w{window.seconds}_start")
        if start == window.start(now):
            counts.append(int(state.get(f"w{window.seconds}_calls", 0)))
        elif start == window.start(now) - window.seconds:
            counts.append(int(state.get(f"w{window.seconds}_next", 0)))
        else:
            counts.append(0)
    return counts


def admitted(state: Mapping[str, Any], windows: Sequence[Window], now: datetime) -> dict[str, Any]:
    """The state with one more call admitted at `now` in every window."""
    new = dict(state)
    for window, count in zip(windows, counts_at(state, windows, now), strict=True):
        same_window = state.get(f"w{window.seconds}_start") == window.start(now)
        carried = int(state.get(f"w{window.seconds}_next", 0)) if same_window else 0
        new[f"w{window.seconds}_start"] = window.start(now)
        new[f"w{window.seconds}_calls"] = count + 1
        new[f"w{window.seconds}_next"] = carried + 1 if window.at_edge(now) else carried
    return new


@dataclass(frozen=True)
class WindowUsage:
    """One call window of a gate as it holds at some moment."""

    seconds: int
    limit: int
    used: int
    left: int
    resets_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "limit": self.limit, "used": self.used, "left": self.left,
                "resets_at": iso(self.resets_at)}


@dataclass(frozen=True)
class GateUsage:
    """One gate (an API and a tenant; `tenant` None: the home tenant) as it holds at some moment. `configured`
    False: an entity no gate of the current settings uses (a tenant removed, another home tenant id)."""

    api: str
    tenant: str | None
    windows: tuple[WindowUsage, ...]
    paused_until: datetime | None
    key: str = ""
    configured: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"api": self.api, "tenant": self.tenant, "key": self.key, "configured": self.configured,
                "windows": [w.as_dict() for w in self.windows],
                "paused_until": iso(self.paused_until) if self.paused_until else None}


def gate_usage(state: Mapping[str, Any], windows: Sequence[Window], now: datetime, *, api: str,
               tenant: str | None, key: str = "", configured: bool = True) -> GateUsage:
    """The gate's state (an empty mapping: a gate never used, its whole budget left) as an operator reads it at
    `now`: a pause that has ended is None."""
    counts = counts_at(state, windows, now)
    usage = tuple(WindowUsage(w.seconds, w.limit, used, max(0, w.limit - used),
                              datetime.fromtimestamp(w.start(now) + w.seconds, UTC))
                  for w, used in zip(windows, counts, strict=True))
    paused = state.get("paused_until")
    if isinstance(paused, datetime) and paused.tzinfo is None:
        paused = paused.replace(tzinfo=UTC)
    return GateUsage(api, tenant, usage, paused if isinstance(paused, datetime) and paused > now else None, key,
                     configured)

