"""A small decoder of KQL string literals: the oracle for the escaper's property tests.

Written from Microsoft's documentation of the string data type
(https://learn.microsoft.com/kusto/query/scalar-data-types/string), not from `shared.core.kql_literals`:

- `"..."` and `'...'`: a backslash escapes the enclosing quote, the other quote, `\\`, `\\t` and `\\n` (the
  documented set), plus `\\r`, `\\a`, `\\b`, `\\f`, `\\v`, `\\uXXXX`, `\\UXXXXXXXX` and `\\xHH` (what Kusto's lexer
  accepts); any other escape is an error here, so an escaper that invents one fails the tests. A raw line
  break (CR, LF, U+2028, U+2029) is not allowed: the literal would end there.
- `@"..."` and `@'...'` (verbatim): the backslash stands for itself; the quote is written twice.
- ```` ```...``` ```` (multi-line): everything up to the closing three backticks, verbatim, line breaks included.
- an `h` or `H` before a quoted or verbatim literal hides it from telemetry; it does not change its value.

`decode_string_literal(text, start)` decodes the one literal that starts at `start` and says where it ends, so a
test can check that a rendered literal, followed by anything at all, is consumed exactly.
"""

from __future__ import annotations

_LINE_BREAKS = "\r\n\u2028\u2029"
_SIMPLE_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "t": "\t", "n": "\n", "r": "\r", "a": "\a", "b": "\b",
                   "f": "\f", "v": "\v"}
_HEX_ESCAPES = {"u": 4, "U": 8, "x": 2}
_HEX_DIGITS = set("0123456789abcdefABCDEF")


class LiteralError(ValueError):
    """The text at the position is not a well-formed KQL string literal."""


def decode_string_literal(text: str, start: int = 0) -> tuple[str, int]:
    """Decode the string literal at text[start:]; return (its value, the index just past its closing quote)."""
    position = start
    hidden = text[position:position + 1] in ("h", "H")
    if hidden:
        position += 1
    if text.startswith("```", position):
        if hidden:
            raise LiteralError("multi-line literals cannot be hidden")
        close = text.find("```", position + 3)
        if close < 0:
            raise LiteralError("unterminated multi-line literal")
        return text[position + 3:close], close + 3
    verbatim = text[position:position + 1] == "@"
    if verbatim:
        position += 1
    quote = text[position:position + 1]
    if quote not in ('"', "'"):
        raise LiteralError(f"no string literal at {start}")
    if verbatim:
        return _decode_verbatim(text, position + 1, quote)
    return _decode_escaped(text, position + 1, quote)


def _decode_verbatim(text: str, position: int, quote: str) -> tuple[str, int]:
    value: list[str] = []
    while position < len(text):
        ch = text[position]
        if ch in _LINE_BREAKS:
            raise LiteralError("raw line break inside a verbatim literal")
        if ch == quote:
            if text[position + 1:position + 2] != quote:
                return "".join(value), position + 1
            position += 1  # a doubled quote stands for one quote
        value.append(ch)
        position += 1
    raise LiteralError("unterminated verbatim literal")


def _decode_escaped(text: str, position: int, quote: str) -> tuple[str, int]:
    value: list[str] = []
    while position < len(text):
        ch = text[position]
        if ch in _LINE_BREAKS:
            raise LiteralError("raw line break inside a quoted literal")
        if ch == quote:
            return "".join(value), position + 1
        if ch != "\\":
            value.append(ch)
            position += 1
            continue
        code = text[position + 1:position + 2]
        if code in _SIMPLE_ESCAPES:
            value.append(_SIMPLE_ESCAPES[code])
            position += 2
        elif code in _HEX_ESCAPES:
            digits = text[position + 2:position + 2 + _HEX_ESCAPES[code]]
            if len(digits) != _HEX_ESCAPES[code] or not set(digits) <= _HEX_DIGITS:
                raise LiteralError(f"\\{code} needs {_HEX_ESCAPES[code]} hexadecimal digits")
            value.append(chr(int(digits, 16)))
            position += 2 + len(digits)
        else:
            raise LiteralError(f"unknown escape \\{code!r} at {position}")
    raise LiteralError("unterminated quoted literal")
