"""An API's answer read as its chunks arrive: `{"<schema>": [...], "<results>": [row, row, ...], ...}`.

The rows are what a large answer is made of, so they are read as bytes and never decoded to text: a row ends at a
`}` followed by `,` or `]`, and a candidate end is checked by validating the bytes up to it with simdjson (strict
JSON, UTF-8 included, at several hundred MB/s, building no Python objects). A candidate that does not validate
(a `},` inside a string or a nested object) is passed over for the next. Whatever the fast path cannot take is
read by the standard library's C scanner (`json.JSONDecoder.raw_decode`) from the decoded text, as every other
top-level value (the schema, the stats) is: a row holding NaN or Infinity (Python's reader takes them, strict JSON
does not), an integer beyond 64 bits, a lone surrogate, or a row whose ends could not be found in a few tries.

Each row comes as strict JSON on one line: the service's own bytes when they are (a JSON destination writes them
as they came, shared.core.result_formats), else written again from its value (NaN, a line break between tokens),
and with its decoded value when the slow path decoded it (None: `row_value` decodes it when a destination wants
values, such as csv).

Pure: chunks in, rows out; memory holds one chunk and the row being read (a value larger than `max_value_chars`
is refused). A body that is not such an object, or that ends early, raises BodyMalformed.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import simdjson

from shared.core.strict_json import dumps

MAX_VALUE_CHARS = 64 * 1024 * 1024
DECODE_WINDOW = 64 * 1024
ROW_END_TRIES = 8   # candidate ends tried for one row before the slow path reads it
_SPACE = b" \t\n\r"
_ROW_END = re.compile(rb"\}[ \t\n\r]*[,\]]")
_NON_FINITE = (b"NaN", b"Infinity")


class BodyMalformed(ValueError):
    """The answer is not a JSON object of that shape, or it ended before its end."""


def row_value(text: bytes) -> dict[str, Any]:
    """A row's value from its strict text (what `rows_of` gave without one)."""
    value: dict[str, Any] = json.loads(text)
    return value


class _Body:
    def __init__(self, chunks: Iterable[bytes], max_value_chars: int) -> None:
        self._chunks = iter(chunks)
        self._max = max_value_chars
        self.data = b""
        self.pos = 0
        self.ended = False
        self.non_finite = False
        self._decoder = json.JSONDecoder(parse_constant=self._constant)
        self._validator = simdjson.Parser()

    def _constant(self, name: str) -> float:
        self.non_finite = True
        return float(name)

    def more(self) -> bool:
        """Appends the next chunk (dropping what was read); False at the end of the body."""
        if self.ended:
            return False
        for chunk in self._chunks:
            if chunk:
                self.data = self.data[self.pos:] + chunk
                self.pos = 0
                return True
        self.data, self.pos, self.ended = self.data[self.pos:], 0, True
        return False

    def space(self) -> None:
        while True:
            while self.pos < len(self.data) and self.data[self.pos] in _SPACE:
                self.pos += 1
            if self.pos < len(self.data) or not self.more():
                return

    def peek(self) -> int:
        self.space()
        if self.pos >= len(self.data):
            raise BodyMalformed("the answer ended early")
        return self.data[self.pos]

    def expect(self, char: bytes) -> None:
        if self.peek() != char[0]:
            raise BodyMalformed(f"expected {char.decode()!r} at byte {self.pos} of the answer's chunk")
        self.pos += 1

    def value(self) -> tuple[Any, bytes]:
        """The next value, decoded, and its bytes: read from the decoded text of what has arrived, a window at a
        time (64 KiB, doubled while the value goes on past it). A value that reaches the end of what has arrived
        is read again with more (a number or a literal may go on)."""
        self.space()
        window = DECODE_WINDOW
        while True:
            whole = self.pos + window >= len(self.data)
            try:
                text, _ = codecs.utf_8_decode(self.data[self.pos:self.pos + window], "strict", whole and self.ended)
            except UnicodeDecodeError:
                raise BodyMalformed("the answer is not UTF-8") from None
            try:
                found, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                found, end = None, -1
            if end != -1 and (end < len(text) or (whole and self.ended)):
                raw = text[:end].encode("utf-8")
                self.pos += len(raw)
                return found, raw
            if not whole:
                window *= 2
                continue
            if len(self.data) - self.pos > self._max:
                raise BodyMalformed(f"a value of the answer is larger than {self._max} characters")
            if not self.more():
                if end != -1:
                    raw = text[:end].encode("utf-8")
                    self.pos += len(raw)
                    return found, raw
                raise BodyMalformed("the answer is not JSON, or it ended early")

    def row(self) -> tuple[dict[str, Any] | None, bytes, int]:
        """The next row (the body is at its `{`): its bytes as they came when they are strict JSON on one line,
        found without decoding; else by `value`. Also what follows it when that was read (the `,` or `]`), else
        -1."""
        search_from, tries = self.pos + 1, 0
        while tries < ROW_END_TRIES:
            found = _ROW_END.search(self.data, search_from)
            if found is None:
                if len(self.data) - self.pos > self._max:
                    raise BodyMalformed(f"a value of the answer is larger than {self._max} characters")
                start = self.pos
                if not self.more():
                    break
                search_from -= start
                continue
            end = found.start() + 1
            text = self.data[self.pos:end]
            try:
                self._validator.parse(text)
            except (ValueError, UnicodeDecodeError):   # not a whole row, or not one simdjson takes
                if any(word in text for word in _NON_FINITE):
                    break
                search_from, tries = end, tries + 1
                continue
            self.pos = found.end()
            following = self.data[self.pos - 1]
            if b"\n" in text or b"\r" in text:   # JSON strings hold no raw line break: it is between tokens
                return None, dumps(row_value(text)), following
            return None, text, following
        self.non_finite = False
        row, text = self.value()
        if not isinstance(row, dict):
            raise BodyMalformed("a result row is not a JSON object")
        if self.non_finite or b"\n" in text or b"\r" in text:
            return row, dumps(row), -1
        return row, text, -1


def rows_of(chunks: Iterable[bytes], results_key: str, on_value: Callable[[str, Any], None], *,
            max_value_chars: int = MAX_VALUE_CHARS) -> Iterator[tuple[dict[str, Any] | None, bytes]]:
    """Each row of the answer's `results_key` array: its value when it was decoded (else None), and its bytes as
    strict JSON on one line."""
    body = _Body(chunks, max_value_chars)
    body.expect(b"{")
    if body.peek() == ord("}"):
        return
    while True:
        key, _ = body.value()
        if not isinstance(key, str):
            raise BodyMalformed("a key of the answer is not a string")
        body.expect(b":")
        if key == results_key:
            yield from _rows(body)
        else:
            found, _ = body.value()
            on_value(key, found)
        if _closed(body, b"}"):
            return


def _rows(body: _Body) -> Iterator[tuple[dict[str, Any] | None, bytes]]:
    body.expect(b"[")
    if body.peek() == ord("]"):
        body.pos += 1
        return
    while True:
        if body.peek() != ord("{"):
            raise BodyMalformed("a result row is not a JSON object")
        row, text, following = body.row()
        yield row, text
        if following == -1:
            if _closed(body, b"]"):
                return
        elif following == ord("]"):
            return


def _closed(body: _Body, closer: bytes) -> bool:
    """After an item: True at the closing `closer`, False at a comma (more items follow)."""
    following = body.peek()
    body.pos += 1
    if following == closer[0]:
        return True
    if following != ord(","):
        raise BodyMalformed(f"expected ',' or {closer.decode()!r} in the answer, found {chr(following)!r}")
    return False
