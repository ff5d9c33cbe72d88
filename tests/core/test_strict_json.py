"""Strict JSON in and out (shared.core.strict_json): what a message may hold, and what every written document holds."""

from __future__ import annotations

import pytest

from shared.core.strict_json import JsonRefused, dumps, loads_object
from tests.document_audit import is_strict


@pytest.mark.parametrize(("value", "written"), [
    (float("nan"), b'"NaN"'), (float("inf"), b'"Infinity"'), (float("-inf"), b'"-Infinity"'),
    ({"a": [1.5, float("inf")]}, b'{"a":[1.5,"Infinity"]}'),
    ("caf\u00e9", "\"caf\u00e9\"".encode()),
    ("x\ud800", b'"x\\ud800"'),
])
def test_documents_are_written_as_strict_json(value, written):
    assert dumps(value) == written
    assert is_strict(dumps(value))


def test_the_strict_reader_refuses_what_pythons_reader_takes():
    assert not is_strict(b'{"a": NaN}') and not is_strict(b"[Infinity]") and not is_strict(b"[1e400]")
    assert is_strict(b'{"a": 1.5, "b": "\\ud800"}')


@pytest.mark.parametrize(("text", "path"), [
    ('{"a": {"b": [0, {"c": NaN}]}}', "a.b[1].c"),
    ('{"a b": 1e999}', '"a b"'),
    ('{"k": "\\udc00"}', "k"),
    ("[1]", ""),
    ('{"a": 1', ""),
])
def test_the_first_refused_place_is_named_by_its_path(text, path):
    with pytest.raises(JsonRefused) as refused:
        loads_object(text)
    assert refused.value.path == path
