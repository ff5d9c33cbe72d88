"""An API's answer read as its chunks arrive: `{"<schema>": [...], "<results>": [row, row, ...], ...}`.

Each row is decoded by the standard library's C scanner (`json.JSONDecoder.raw_decode`) straight from the text,
which also says where the row ends, so the row comes with its own text: a JSON destination writes those bytes as
the service sent them instead of encoding the row again (shared.core.result_formats). A row's text is used only
when it is strict and on one line: a row holding NaN or Infinity (Python's reader takes them, strict JSON does not)
or a line break between its tokens is written from its decoded value instead. The other top-level values (the
schema, the stats) are handed to `on_value` whole, in any order.

Pure: chunks in, (row, row bytes) out; memory holds one chunk and the row being read (a value larger than
`max_value_chars` is refused). A body that is not such an object, or that ends early, raises BodyMalformed.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from shared.core.strict_json import dumps

MAX_VALUE_CHARS = 64 * 1024 * 1024
_SPACE = re.compile(r"[ \t\n\r]*")


class BodyMalformed(ValueError):
    """The answer is not a JSON object of that shape, or it ended before its end."""


class _Body:
    def __init__(self, chunks: Iterable[bytes], max_value_chars: int) -> None:
        self._chunks = iter(chunks)
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._max = max_value_chars
        self.text = ""
        self.pos = 0
        self.ended = False
        self.non_finite = False
        self._decoder = json.JSONDecoder(parse_constant=self._constant)

    def _constant(self, name: str) -> float:
        self.non_finite = True
        return float(name)

    def _more(self) -> bool:
        """Appends the next chunk (dropping what was read); False at the end of the body."""
        if self.ended:
            return False
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.text = self.text[self.pos:] + self._utf8.decode(b"", final=True)
            self.pos, self.ended = 0, True
            return False
        self.text = self.text[self.pos:] + self._utf8.decode(chunk)
        self.pos = 0
        return True

    def space(self) -> None:
        while True:
            match = _SPACE.match(self.text, self.pos)   # always matches (zero or more)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.text) or not self._more():
                return

    def peek(self) -> str:
        self.space()
        if self.pos >= len(self.text):
            raise BodyMalformed("the answer ended early")
        return self.text[self.pos]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise BodyMalformed(f"expected {char!r} at character {self.pos} of the answer's chunk")
        self.pos += 1

    def value(self) -> tuple[Any, int, int]:
        """The next value, and where its text starts and ends. A value that reaches the end of what has arrived
        is read again with more (a number or a literal may go on)."""
        self.space()
        while True:
            start = self.pos
            try:
                found, end = self._decoder.raw_decode(self.text, start)
            except json.JSONDecodeError:
                found, end = None, -1
            if end != -1 and (end < len(self.text) or self.ended):
                self.pos = end
                return found, start, end
            if len(self.text) - start > self._max:
                raise BodyMalformed(f"a value of the answer is larger than {self._max} characters")
            if not self._more():
                if end != -1:
                    self.pos = end
                    return found, start, end
                raise BodyMalformed("the answer is not JSON, or it ended early")


def rows_of(chunks: Iterable[bytes], results_key: str, on_value: Callable[[str, Any], None], *,
            max_value_chars: int = MAX_VALUE_CHARS) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Each row of the answer's `results_key` array, with its bytes as strict JSON on one line."""
    body = _Body(chunks, max_value_chars)
    body.expect("{")
    if body.peek() == "}":
        return
    while True:
        key, _, _ = body.value()
        if not isinstance(key, str):
            raise BodyMalformed("a key of the answer is not a string")
        body.expect(":")
        if key == results_key:
            yield from _rows(body)
        else:
            found, _, _ = body.value()
            on_value(key, found)
        if _closed(body, "}"):
            return


def _rows(body: _Body) -> Iterator[tuple[dict[str, Any], bytes]]:
    body.expect("[")
    if body.peek() == "]":
        body.pos += 1
        return
    while True:
        body.non_finite = False
        row, start, end = body.value()
        if not isinstance(row, dict):
            raise BodyMalformed("a result row is not a JSON object")
        text = body.text[start:end]
        yield row, (dumps(row) if body.non_finite or "\n" in text or "\r" in text else text.encode("utf-8"))
        if _closed(body, "]"):
            return


def _closed(body: _Body, closer: str) -> bool:
    """After an item: True at the closing `closer`, False at a comma (more items follow)."""
    following = body.peek()
    body.pos += 1
    if following == closer:
        return True
    if following != ",":
        raise BodyMalformed(f"expected ',' or {closer!r} in the answer, found {following!r}")
    return False
