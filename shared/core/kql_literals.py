"""Typed parameter values, validated and rendered as KQL literals (pure: no I/O, no settings).

A template parameter has a type (`ParamType`: a scalar name, or `list<scalar>`). `render_literal` first
validates the value for that type, then emits a literal that Kusto reads back as exactly that value:

    string          "..."  (always double-quoted, escaped by `quote_string`; never verbatim or multi-line)
    int, long       int(-5), long(9223372036854775807)   JSON integers within Kusto's 32/64-bit ranges
    real            real(0.1)                            JSON numbers, finite
    bool            true / false                         JSON true/false only
    datetime        datetime(2024-01-01T00:00:00.0000000Z)
                    from ISO 8601 text with Z or an offset (or a date alone, taken as UTC midnight)
    timespan        time(7.00:00:00.0000000)
                    from 7d, 1.5h, 30min, 100ms (Kusto's suffixes), 1.02:03:04.5 or ISO 8601 P7DT1H;
                    non-negative, whole 100 ns ticks
    guid            guid(6f1d2b1a-0000-4000-8000-000000000000)
    ip              "10.0.0.1"  (a string literal: Defender stores addresses as strings); no IPv6 scope
    sha256/sha1/md5 "<hex>"     exactly 64/40/32 hex digits, lowered (Defender stores hashes in lowercase)
    hostname        "host.contoso.com"  RFC 1123 labels, at most 253 characters
    upn             "jdoe@contoso.com"  a conservative local@domain shape
    list<T>         ("a", "b")  a parenthesised list of 1 to MAX_LIST_ITEMS literals, for `in`, `!in`,
                    `has_any`: `| where SHA256 in {{hashes}}`. Empty lists are refused: `in ()` is a
                    syntax error, and an empty IOC list is almost always a caller's mistake.

String escaping follows Kusto's rules: `"` and `\\` and `\\a \\b \\f \\n \\r \\t` get their short escapes
(what Kusto.Language's own `KustoFacts` emits); every other control character (C0, DEL, C1), the line and
paragraph separators U+2028/U+2029 (Kusto's lexer ends a literal at them, and KustoFacts does not escape them),
surrogates, and BMP format characters (bidi overrides, zero-width spaces: they make a logged query read
differently from what runs) become `\\uXXXX`. Everything else, non-BMP characters included, is emitted as
itself: raw UTF-8 is valid inside a double-quoted literal and keeps hunts readable.

Identifiers (column or table names) are deliberately not a parameter type: templates name their columns.

Errors: `KqlValueError` (a ValueError) names the parameter, its type and what is allowed; it quotes at most a
short preview of the value, never a large one.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from shared.core.errors import KqlValueError

SCALAR_TYPES = ("string", "int", "long", "real", "bool", "datetime", "timespan", "guid", "ip",
                "sha256", "sha1", "md5", "hostname", "upn")
MAX_STRING_CHARS = 2048
MAX_LIST_ITEMS = 1000
_TICKS_PER_SECOND = 10_000_000
_TICKS_PER_DAY = 86_400 * _TICKS_PER_SECOND
_MAX_TICKS = 2**63 - 1  # .NET TimeSpan.MaxValue


@dataclass(frozen=True)
class ParamType:
    scalar: str
    is_list: bool = False

    def __str__(self) -> str:
        return f"list<{self.scalar}>" if self.is_list else self.scalar


def parse_type(spec: str) -> ParamType:
    """`"sha256"` or `"list<sha256>"` -> ParamType; ValueError names the known types."""
    text = spec.strip()
    match = re.fullmatch(r"list\s*<\s*(\w+)\s*>", text)
    scalar = match.group(1) if match else text
    if scalar not in SCALAR_TYPES:
        raise ValueError(f"unknown type {spec[:40]!r}; known: {', '.join(SCALAR_TYPES)} and list<...> of them")
    return ParamType(scalar, is_list=match is not None)


# --- the string escaper -----------------------------------------------------------------------------------

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                  "\t": "\\t"}
_BMP_FORMAT_CHARS = "".join(chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) == "Cf")
# One character class: the quote and backslash, C0/DEL/C1 controls, U+2028/U+2029, surrogates, BMP format chars.
_NEEDS_ESCAPE = re.compile("[\"\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"
                           + "".join(re.escape(ch) for ch in _BMP_FORMAT_CHARS) + "]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _SHORT_ESCAPES.get(ch) or f"\\u{ord(ch):04X}"


def quote_string(text: str) -> str:
    """Any Python string -> a double-quoted KQL literal on one line that decodes to exactly `text`."""
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


# --- validators: each takes the raw value and returns the literal, or raises _Invalid ----------------------

class _Invalid(Exception):
    pass


def _json_kind(value: object) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
             tuple: "an array", dict: "an object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _text(value: object, max_chars: int = MAX_STRING_CHARS) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_json_kind(value)}")
    if len(value) > max_chars:
        raise _Invalid(f"at most {max_chars} characters allowed, got {len(value)}")
    return value


def _string(value: object) -> str:
    text = _text(value)
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise _Invalid("not valid Unicode text (contains a lone surrogate)")
    return quote_string(text)


def _integer(bits: int, keyword: str) -> Callable[[object], str]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def validate(value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected a JSON integer, got {_json_kind(value)}")
        if not low <= value <= high:
            raise _Invalid(f"must be between {low} and {high} ({bits}-bit)")
        return f"{keyword}({value})"
    return validate


def _real(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"expected a JSON number, got {_json_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise _Invalid("too large for a 64-bit real") from None
    if not math.isfinite(number):
        raise _Invalid("must be finite (no NaN or infinity)")
    return f"real({number!r})"


def _bool(value: object) -> str:
    if not isinstance(value, bool):
        raise _Invalid(f"expected JSON true or false, got {_json_kind(value)}")
    return "true" if value else "false"


_DATE = r"(\d{4})-(\d{2})-(\d{2})"
_DATETIME = re.compile(_DATE + r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:?\d{2}))?",
                       re.IGNORECASE | re.ASCII)


def _datetime(value: object) -> str:
    extra_ticks = 0
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _Invalid("a datetime object needs a timezone")
        moment = value
    else:
        match = _DATETIME.fullmatch(_text(value, 64))
        if not match:
            raise _Invalid("expected ISO 8601 such as 2024-01-31T08:00:00Z (Z or an offset is required "
                           "unless the value is a date alone)")
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        fraction = (fraction or "").ljust(7, "0")
        offset = timedelta(0)
        if zone and zone.upper() != "Z":
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            if int(digits[2:]) > 59:
                raise _Invalid("the offset's minutes must be below 60")
            offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        try:
            moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                              int(second or 0), int(fraction[:6]), tzinfo=timezone(offset))
        except ValueError as error:
            raise _Invalid(f"not a valid date and time ({error})") from None
        extra_ticks = int(fraction[6])
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise _Invalid("outside the years 0001-9999 once converted to UTC") from None
    ticks = utc.microsecond * 10 + extra_ticks
    # Formatted by hand: strftime's %Y does not zero-pad years below 1000 on every platform.
    return (f"datetime({utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
            f"{utc.second:02d}.{ticks:07d}Z)")


_UNIT_TICKS = {
    **dict.fromkeys(("d", "day", "days"), _TICKS_PER_DAY),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600 * _TICKS_PER_SECOND),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60 * _TICKS_PER_SECOND),
    **dict.fromkeys(("s", "sec", "second", "seconds"), _TICKS_PER_SECOND),
    **dict.fromkeys(("ms", "milli", "millis", "millisec", "millisecond", "milliseconds"), 10_000),
    **dict.fromkeys(("micro", "micros", "microsec", "microsecond", "microseconds"), 10),
    **dict.fromkeys(("tick", "ticks"), 1),
}
_SPAN_UNIT = re.compile(r"(\d{1,20}(?:\.\d{1,20})?)\s*([a-z]+)", re.ASCII)
_SPAN_CLOCK = re.compile(r"(?:(\d{1,8})\.)?(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?", re.ASCII)
_SPAN_ISO = re.compile(r"P(?=\d|T\d)(?:(\d{1,8})W)?(?:(\d{1,8})D)?(?:T(?=\d)(?:(\d{1,9})H)?(?:(\d{1,9})M)?"
                       r"(?:(\d{1,12}(?:\.\d{1,7})?)S)?)?", re.ASCII)


def _span_ticks(text: str) -> int:
    if match := _SPAN_UNIT.fullmatch(text):
        number, unit = match.groups()
        if unit not in _UNIT_TICKS:
            raise _Invalid(f"unknown unit {unit[:20]!r}; use d, h, m/min, s, ms, micro or tick")
        exact = Decimal(number) * _UNIT_TICKS[unit]
        if exact != exact.to_integral_value():
            raise _Invalid("finer than the 100 ns resolution of a Kusto timespan")
        return int(exact)
    if match := _SPAN_CLOCK.fullmatch(text):
        days, hours, minutes, seconds, fraction = match.groups()
        if int(hours) > 23 or int(minutes) > 59 or int(seconds or 0) > 59:
            raise _Invalid("hours, minutes and seconds must be within 23:59:59")
        total = ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds or 0)
        return total * _TICKS_PER_SECOND + int((fraction or "").ljust(7, "0"))
    if match := _SPAN_ISO.fullmatch(text.upper()):
        weeks, days, hours, minutes, seconds = match.groups()
        total_days = int(weeks or 0) * 7 + int(days or 0)
        whole = ((total_days * 24 + int(hours or 0)) * 60 + int(minutes or 0)) * 60
        return int((Decimal(whole) + Decimal(seconds or 0)) * _TICKS_PER_SECOND)
    raise _Invalid("expected a non-negative span such as 7d, 1.5h, 30min, 100ms, 1.02:03:04 or P7DT1H")


def _timespan(value: object) -> str:
    if isinstance(value, timedelta):
        ticks = (value // timedelta(microseconds=1)) * 10
        if ticks < 0:
            raise _Invalid("must not be negative")
    else:
        ticks = _span_ticks(_text(value, 64).strip().lower())
    if ticks > _MAX_TICKS:
        raise _Invalid("longer than Kusto's largest timespan (about 29,000 years)")
    days, rest = divmod(ticks, _TICKS_PER_DAY)
    seconds, fraction = divmod(rest, _TICKS_PER_SECOND)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"time({days}.{hours:02d}:{minutes:02d}:{seconds:02d}.{fraction:07d})"


_HEX = "[0-9a-fA-F]"
_GUID = re.compile(rf"\{{?{_HEX}{{8}}(-?){_HEX}{{4}}\1{_HEX}{{4}}\1{_HEX}{{4}}\1{_HEX}{{12}}\}}?")


def _guid(value: object) -> str:
    if isinstance(value, uuid.UUID):
        return f"guid({value})"
    text = _text(value, 64)
    if not _GUID.fullmatch(text) or text.startswith("{") != text.endswith("}"):
        raise _Invalid("expected a GUID such as 6f1d2b1a-0c4e-4f3a-9d7e-2b1c0a9f8e7d")
    return f"guid({uuid.UUID(text)})"


def _ip(value: object) -> str:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address = value
    else:
        try:
            address = ipaddress.ip_address(_text(value, 64))
        except ValueError:
            raise _Invalid("expected an IPv4 or IPv6 address such as 10.0.0.1 or 2001:db8::1") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            raise _Invalid("IPv6 scope ids (%...) are not allowed")
        if address.ipv4_mapped is not None:  # the dotted form, as Defender records mapped addresses
            return quote_string(f"::ffff:{address.ipv4_mapped}")
    return quote_string(str(address))


def _hex_hash(digits: int) -> Callable[[object], str]:
    pattern = re.compile(f"[0-9a-fA-F]{{{digits}}}")

    def validate(value: object) -> str:
        text = _text(value, 256)
        if not pattern.fullmatch(text):
            raise _Invalid(f"expected exactly {digits} hexadecimal digits, got {len(text)} characters")
        return quote_string(text.lower())
    return validate


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_UPN_LOCAL = re.compile(r"[A-Za-z0-9'_!#^~+-]+(?:\.[A-Za-z0-9'_!#^~+-]+)*")


def _is_hostname(text: str) -> bool:
    return 0 < len(text) <= 253 and all(_LABEL.fullmatch(label) for label in text.split("."))


def _hostname(value: object) -> str:
    text = _text(value, 256)
    if not _is_hostname(text):
        raise _Invalid("expected a host name of dot-separated labels (letters, digits, inner hyphens; "
                       "1-63 characters each, 253 in all)")
    return quote_string(text)


def _upn(value: object) -> str:
    text = _text(value, 256)
    local, at, domain = text.rpartition("@")
    if not (at and len(local) <= 64 and _UPN_LOCAL.fullmatch(local) and "." in domain and _is_hostname(domain)):
        raise _Invalid("expected name@domain.tld (name: letters, digits and ' . _ - + ! # ^ ~)")
    return quote_string(text)


_VALIDATORS: dict[str, Callable[[object], str]] = {
    "string": _string, "int": _integer(32, "int"), "long": _integer(64, "long"), "real": _real,
    "bool": _bool, "datetime": _datetime, "timespan": _timespan, "guid": _guid, "ip": _ip,
    "sha256": _hex_hash(64), "sha1": _hex_hash(40), "md5": _hex_hash(32), "hostname": _hostname, "upn": _upn,
}


def render_literal(param_type: ParamType | str, value: object, parameter: str = "value") -> str:
    """Validate `value` for `param_type` and return its KQL literal; KqlValueError names what is wrong."""
    kind = param_type if isinstance(param_type, ParamType) else parse_type(param_type)
    validate = _VALIDATORS[kind.scalar]
    if not kind.is_list:
        try:
            return validate(value)
        except _Invalid as invalid:
            raise KqlValueError(parameter, str(kind), str(invalid)) from None
    if not isinstance(value, list | tuple):
        raise KqlValueError(parameter, str(kind), f"expected a JSON array, got {_json_kind(value)}")
    if not 1 <= len(value) <= MAX_LIST_ITEMS:
        raise KqlValueError(parameter, str(kind), f"expected 1 to {MAX_LIST_ITEMS} items, got {len(value)}")
    items = []
    for index, item in enumerate(value):
        try:
            items.append(validate(item))
        except _Invalid as invalid:
            raise KqlValueError(f"{parameter}[{index}]", kind.scalar, str(invalid)) from None
    return "(" + ", ".join(items) + ")"
