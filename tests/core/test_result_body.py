"""Reading an API's answer as it arrives (shared.core.result_body): the rows and their own bytes, whatever the
chunk boundaries, with the other top-level values handed over in any order; NaN rows and rows spread over lines
are written from their values; a body cut short or malformed is refused."""

from __future__ import annotations

import json
import random

import pytest

from shared.core.result_body import BodyMalformed, row_value, rows_of
from shared.core.strict_json import dumps

ROWS = [{"Timestamp": "2026-11-30T10:00:00.1234567Z", "DeviceName": "pc-é-01", "N": 12345678901234567890,
         "F": 1.5e-7, "Obj": {"a": [1, {"b": "c}]\\"}]}, "Empty": None, "Flag": True},
        {"DeviceName": "x", "Text": "quote \" and \\u2028 and ] } ,"}]


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def read(body: bytes, size: int, key: str = "Results"):  # type: ignore[no-untyped-def]
    seen: dict[str, object] = {}
    rows = [(row_value(text) if row is None else row, text)
            for row, text in rows_of(chunked(body, size), key, seen.__setitem__)]
    return rows, seen


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
def test_rows_and_their_bytes_whatever_the_chunk_boundaries(size):
    body = json.dumps({"Stats": {"ExecutionTime": 0.4}, "Schema": [{"Name": "N", "Type": "Int64"}], "Results": ROWS,
                       "After": 5}, ensure_ascii=False).encode()
    rows, seen = read(body, size)
    assert [row for row, _ in rows] == ROWS
    assert [json.loads(text) for _, text in rows] == ROWS
    assert seen == {"Stats": {"ExecutionTime": 0.4}, "Schema": [{"Name": "N", "Type": "Int64"}], "After": 5}


def test_random_chunks_and_spacing_read_the_same_rows():
    generator = random.Random(7)
    body = json.dumps({"schema": [], "results": ROWS * 20}, indent=None, separators=(" , ", " : ")).encode()
    for _ in range(20):
        cuts = sorted(generator.sample(range(1, len(body)), 30))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        rows = list(rows_of(pieces, "results", lambda key, value: None))
        assert [json.loads(text) for _, text in rows] == ROWS * 20


def test_a_row_that_is_not_strict_or_not_on_one_line_is_written_from_its_value():
    body = b'{"Results": [{"a": NaN, "b": 1}, {"c":\n 2}, {"d": 3}]}'
    rows, _ = read(body, 5)
    assert [text for _, text in rows] == [dumps({"a": float("nan"), "b": 1}), b'{"c":2}', b'{"d": 3}']
    assert b"NaN" not in rows[0][1].replace(b'"NaN"', b"")


@pytest.mark.parametrize("body", [b'{"Results": [{"a": 1}, {"b": 2', b'{"Results": [{"a": 1}', b'[1, 2]',
                                  b'{"Results": [1]}', b'{"Results": [{"a": 1} {"b": 2}]}', b'not json',
                                  b'{"Results": [{"a": 1}]'])
def test_a_body_cut_short_or_malformed_is_refused(body):
    with pytest.raises(BodyMalformed):
        read(body, 4)


def test_an_empty_result_and_an_empty_object():
    assert read(b'{"Schema": [], "Results": []}', 3) == ([], {"Schema": []})
    assert read(b"{}", 1) == ([], {})


def test_a_number_at_a_chunk_boundary_is_read_whole():
    _, seen = read(b'{"Results": [], "Count": 1234567}', 21)
    assert seen == {"Count": 1234567}
