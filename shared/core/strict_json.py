"""Strict JSON, in and out: what the relay accepts from a message and what it writes to any document.

In (`loads_object`): a JSON object whose every value a strict reader elsewhere would read the same way, or
`JsonRefused(path, reason)` naming the first offending place (`context.k`, `parameters.hashes[2]`, or "" for the
whole text). Refused, besides text that is not JSON at all:

    an integer of more than MAX_INT_DIGITS digits   Python would raise ValueError converting it (or take seconds)
    a number that overflows a 64-bit float          1e400 would become Infinity
    NaN, Infinity, -Infinity                        not JSON (RFC 8259), though Python's reader takes them
    a lone UTF-16 surrogate in a string or a key    "\\ud800" has no UTF-8 form: every writer would fail on it
    a key twice in one object                       readers differ on which value wins

Out (`dumps`): compact UTF-8 JSON with no NaN or Infinity. A non-finite float (a service's row may hold one) is
written as the string "NaN", "Infinity" or "-Infinity", as Kusto's own JSON writes it; a lone surrogate (from a
"\\ud800" escape in a service's row) is written as that escape, which strict readers take and which round-trips.

Pure: no I/O. Nesting is bounded by the caller (`shared.core.hunt_request` refuses deep text before parsing).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_INT_DIGITS = 100   # far beyond any 64-bit value (20 digits), far below Python's 4,300-digit conversion limit
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")


class JsonRefused(ValueError):
    """The text is not strict JSON; `path` names where ("" for the text as a whole)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class _Refused:
    """Put where a refused value stood while parsing, so that the walk afterwards can name its place."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Object(dict[str, Any]):
    duplicate: str | None = None


def _parse_int(text: str) -> int | _Refused:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        return _Refused(f"is an integer of {digits} digits; at most {MAX_INT_DIGITS} are accepted")
    return int(text)


def _parse_float(text: str) -> float | _Refused:
    value = float(text)
    if not math.isfinite(value):
        return _Refused("is a number too large for a 64-bit float")
    return value


def _parse_constant(name: str) -> _Refused:
    return _Refused(f"is {name}, which is not JSON (RFC 8259 has no NaN or Infinity)")


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    result = _Object()
    for key, value in pairs:
        if key in result and result.duplicate is None:
            result.duplicate = key
        result[key] = value
    return result


def key_name(key: str) -> str:
    """A key as it may appear in an error, a log line or a field path: plain keys as they are, any other
    escaped (ASCII, quoted) and cut at 40 characters."""
    if _PLAIN_KEY.fullmatch(key):
        return key
    return json.dumps(key[:40], ensure_ascii=True)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _checked(value: Any, path: str) -> Any:
    """The value with plain dicts, or JsonRefused at the first refused place."""
    if isinstance(value, _Refused):
        raise JsonRefused(path, value.reason)
    if isinstance(value, str):
        if _has_surrogate(value):
            raise JsonRefused(path, "contains an unpaired UTF-16 surrogate (a lone \\ud800-\\udfff escape)")
        return value
    if isinstance(value, list):
        return [_checked(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        if isinstance(value, _Object) and value.duplicate is not None:
            where = f"{path}.{key_name(value.duplicate)}" if path else key_name(value.duplicate)
            raise JsonRefused(where, "appears twice in one object; give each key once")
        result: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key_name(key)}" if path else key_name(key)
            if _has_surrogate(key):
                raise JsonRefused(where, "is a key with an unpaired UTF-16 surrogate")
            result[key] = _checked(item, where)
        return result
    return value


def loads_object(text: str) -> dict[str, Any]:
    """A strict JSON object (module docstring), or JsonRefused."""
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant,
                           object_pairs_hook=_pairs)
    except json.JSONDecodeError as error:
        raise JsonRefused("", f"is not valid JSON at character {error.pos}") from None
    except (ValueError, RecursionError):
        raise JsonRefused("", "is not valid JSON") from None
    if not isinstance(value, dict):
        raise JsonRefused("", "must be a JSON object")
    checked: dict[str, Any] = _checked(value, "")
    return checked


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)  # built once: every row
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def dumps(value: Any) -> bytes:
    """Compact strict JSON as UTF-8: the relay's one serialization of rows, envelopes, records and messages."""
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except ValueError:   # a non-finite float (UnicodeEncodeError, a ValueError too, is handled below)
        pass
    value = _finite(value)
    try:
        return _ENCODER.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form; as an escape it round-trips exactly.
        return _ASCII_ENCODER.encode(value).encode("ascii")


def dumps_text(value: Any) -> str:
    """`dumps` as text (a queue message)."""
    return dumps(value).decode("utf-8")
