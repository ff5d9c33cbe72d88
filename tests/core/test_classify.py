"""The classification of API responses, as the table in shared/core/classify.py's docstring."""

from __future__ import annotations

import json

import pytest

from shared.core.apis import APIS
from shared.core.classify import Success, Terminal, Throttled, Transient, classify


def envelope(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message, "target": "00000000-0000-0000-0000-000000000000"}})


@pytest.mark.parametrize(("status", "body", "verdict", "code"), [
    (200, "", Success, None),
    (429, envelope("429", "API calls quota exceeded! maximum allowed 45 per 00:01:00"), Throttled, None),
    (429, "", Throttled, None),
    (400, envelope("BadRequest", "Syntax error: Query could not be parsed at '|'"), Terminal, "QueryError"),
    (400, envelope("BadRequest", "Query execution has exceeded the allowed result size"), Terminal, "ResultTooLarge"),
    (400, envelope("BadRequest", "The query execution was preempted"), Terminal, "QueryPreempted"),
    (400, envelope("InvalidRequestBody", "Request body is invalid"), Terminal, "QueryError"),
    (401, envelope("Unauthorized", "Account mode is inactive"), Terminal, "Unauthorized"),
    (403, envelope("Forbidden", "Missing application roles."), Terminal, "Forbidden"),
    (404, "Not Found", Terminal, "RequestRejected"),
    (408, "", Transient, None),
    (500, envelope("InternalServerError", "oops"), Transient, None),
    (502, "Bad Gateway", Transient, None),
    (503, "", Transient, None),
    (504, "<html>gateway timeout</html>", Transient, None),
])
def test_each_status_is_classified_as_the_table_says(status, body, verdict, code):
    result = classify(status, body, APIS["mde"])
    assert isinstance(result, verdict)
    if code is not None:
        assert isinstance(result, Terminal)
        assert result.error.code == code
        assert result.error.http_status == status


@pytest.mark.parametrize("api", ["mde", "m365d", "graph"])
def test_a_missing_permission_names_the_role_and_the_api(api):
    result = classify(403, envelope("Forbidden", "Missing application roles"), APIS[api])
    assert isinstance(result, Terminal)
    assert APIS[api].role in (result.error.hint or "")
    assert f"--api {api}" in (result.error.hint or "")


def test_result_size_errors_carry_a_hint_on_narrowing_the_query():
    result = classify(400, envelope("BadRequest", "exceeded the allowed result size"), APIS["m365d"])
    assert isinstance(result, Terminal)
    assert "narrow the query" in (result.error.hint or "")
