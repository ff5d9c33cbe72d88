"""The hunt request v1: decoding, validation, and agreement with the shipped JSON Schema."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest

from shared.core.errors import InvalidHuntRequest
from shared.core.hunt_request import decode_hunt_request, pending_delivery_name
from shared.core.relay_mark import MARK_FIELD, RELAY_FIELDS, RelayMark

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "hunt-request.v1.schema.json").read_text())
MARK = RelayMark([b"k" * 32])


def marked(body: dict) -> dict:
    """The body as the relay's own copy would carry it: with a valid mark."""
    return {**body, MARK_FIELD: MARK.sign(body)}


def decode(body: object, *, mark: RelayMark | None = MARK):
    """Dicts that carry relay-kept fields are marked first, as the relay's copies are; text is sent as is."""
    if isinstance(body, dict) and any(name in body for name in RELAY_FIELDS):
        body = marked(body)
    text = body if isinstance(body, str) else json.dumps(body)
    return decode_hunt_request(text, message_id="queue-msg-1", default_api="mde", now=NOW, mark=mark)


VALID = [
    {"query": "DeviceInfo | take 1"},
    {"Query": "DeviceInfo | take 1"},
    {"query": "x", "id": "job-1", "api": "m365d", "format": "csv", "context": {"incident": 42}},
    {"query": "x", "api": "graph", "timespan": "P7D"},
    {"query": "x", "api": "graph", "timespan": "2026-11-01T00:00:00Z/2026-11-02T00:00:00Z"},
    {"query": "x", "api": "graph", "timespan": "2026-11-01T00:00:00Z"},   # Graph: from then until now
    {"query": "x", "destination": "soc-webhook", "format": "ndjson"},
    {"template": "logons-of-user", "parameters": {"upn": "a@b.example"}},
    {"template": "logons-of-user"},
    {"query": "x", "attempt": 3, "first_enqueued_at": "2026-11-23T10:00:00+00:00", "version": 1},
    {"query": "x", "id": "A" * 128},
    {"query": "x", "id": "job-1", "attempt": 2, "pending_delivery": "pending/job-1.delivery.json"},
    {"query": "x", "id": "A" * 128, "pending_delivery": "pending/" + "A" * 128 + ".delivery.json"},
    {"query": "x", "split": True},
    {"query": "x", "api": "graph", "timespan": "P7D", "split": True},
    {"query": "x", "split": False},
    {"query": "x", "gate_waits": 3},
]

INVALID = [
    ({}, "query"),
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({"query": 5}, "query"),
    ({"query": "x", "Query": "y"}, "query"),
    ({"query": "x", "template": "t"}, "query"),
    ({"query": "x", "parameters": {}}, "parameters"),
    ({"query": "x", "api": "sentinel"}, "api"),
    ({"query": "x", "format": "xml"}, "format"),
    ({"query": "x", "timespan": "P7D"}, "timespan"),
    ({"query": "x", "api": "graph", "timespan": "last week"}, "timespan"),
    ({"query": "x", "context": [1, 2]}, "context"),
    ({"query": "x", "id": "../../etc/passwd"}, "id"),
    ({"query": "x", "id": "job\n1"}, "id"),
    ({"query": "x", "id": ""}, "id"),
    ({"query": "x", "id": "A" * 129}, "id"),
    ({"query": "x", "attempt": 0}, "attempt"),
    ({"query": "x", "gate_waits": -1}, "gate_waits"),
    ({"query": "x", "gate_waits": True}, "gate_waits"),
    ({"query": "x", "gate_waits": "2"}, "gate_waits"),
    ({"query": "x", "attempt": "2"}, "attempt"),
    ({"query": "x", "version": 2}, "version"),
    ({"query": "x", "destination": ""}, "destination"),
    ({"query": "x", "colour": "blue"}, "colour"),
    ({"template": "../evil"}, "template"),
    ({"query": "x", "id": "job-1", "pending_delivery": 5}, "pending_delivery"),
    ({"query": "x", "id": "job-1", "pending_delivery": ""}, "pending_delivery"),
    ({"query": "x", "id": "job-1", "pending_delivery": "links/job-1.json"}, "pending_delivery"),
    ({"query": "x", "id": "job-1", "pending_delivery": "pending/../links/job-1.delivery.json"}, "pending_delivery"),
    ({"query": "x", "id": "job-1", "pending_delivery": "pending/job-1.json"}, "pending_delivery"),
    ({"query": "x", "id": "job-1", "pending_delivery": "/pending/job-1.delivery.json"}, "pending_delivery"),
    ({"query": "x", "pending_delivery": "pending/queue-msg-1.delivery.json"}, "pending_delivery"),
    ({"query": "x", "split": "yes"}, "split"),
    ({"query": "x", "split": 1}, "split"),
]

# Valid in shape (the schema accepts them), refused by the parser: the name must be the one for the message's own
# id, a comparison of two fields that JSON Schema cannot express.
PARSER_ONLY = [
    ({"query": "x", "id": "job-1", "pending_delivery": "pending/job-2.delivery.json"}, "pending_delivery"),
    ({"query": "x", "id": "job-1", "pending_delivery": "pending/JOB-1.delivery.json"}, "pending_delivery"),
]


@pytest.mark.parametrize("body", VALID)
def test_valid_messages_are_accepted_by_the_parser_and_the_schema(body):
    decode(body)
    jsonschema.validate(body, SCHEMA)


@pytest.mark.parametrize(("body", "field"), INVALID)
def test_invalid_messages_are_refused_by_the_parser_and_the_schema_naming_the_field(body, field):
    with pytest.raises(InvalidHuntRequest) as refused:
        decode(body)
    assert refused.value.field == field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, SCHEMA)


@pytest.mark.parametrize(("body", "field"), PARSER_ONLY)
def test_a_pending_delivery_for_another_job_passes_the_schema_but_not_the_parser(body, field):
    jsonschema.validate(body, SCHEMA)
    with pytest.raises(InvalidHuntRequest) as refused:
        decode(body)
    assert refused.value.field == field
    assert "pending/<id>.delivery.json" in refused.value.reason


def test_plain_and_base64_messages_decode_to_the_same_request():
    body = json.dumps({"query": "DeviceInfo | take 1", "id": "j1"})
    plain = decode(body)
    encoded = decode(base64.b64encode(body.encode()).decode())
    assert plain == encoded


def test_defaults_come_from_the_queue_message_and_settings():
    request = decode({"query": "DeviceInfo"})
    assert (request.id, request.api, request.format, request.attempt) == ("queue-msg-1", "mde", "json", 1)
    assert request.first_enqueued_at == NOW


def test_the_query_text_is_kept_byte_for_byte():
    query = 'DeviceProcessEvents\n// a comment\n| where ProcessCommandLine has @"C:\\Temp" or FileName == \'é"\''
    assert decode({"query": query}).query == query


@pytest.mark.parametrize(("raw", "reason"), [
    ("not json", "neither a JSON object nor base64"),
    (base64.b64encode(b"[1,2]").decode(), "base64, but not of a JSON object"),
    ("[1, 2]", "neither a JSON object nor base64"),
    ('{"query": "x",}', "not valid JSON"),
    ("{" * 10 + '"a":' * 0, "not valid JSON"),
    ('{"a":' * 100 + "1" + "}" * 100, "nests deeper"),
    ("{" + " " * (70 * 1024) + "}", "limit is"),
])
def test_malformed_messages_are_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidHuntRequest, match=reason):
        decode(raw)


def test_invalid_utf8_is_refused():
    with pytest.raises(InvalidHuntRequest, match="UTF-8"):
        decode_hunt_request(b'{"query": "\xff"}', message_id="m", default_api="mde", now=NOW)


def test_a_re_enqueued_copy_keeps_id_and_first_time_and_counts_the_attempt():
    request = decode({"query": "DeviceInfo", "id": "job-7", "context": {"run": "r1"}})
    again = decode(request.next_attempt("HTTP 429").to_message(MARK))
    assert (again.id, again.attempt, again.first_enqueued_at, again.context) == ("job-7", 2, NOW, {"run": "r1"})
    assert again.last_error == "HTTP 429"
    assert again.query == request.query


def test_gate_waits_round_trip_under_the_mark_and_are_dropped_without_it():
    request = decode({"query": "DeviceInfo", "id": "job-7"})
    waited = replace(request, gate_waits=2)
    again = decode(waited.to_message(MARK))
    assert (again.gate_waits, again.attempt, again.digest()) == (2, 1, request.digest())
    assert decode(again.next_attempt("HTTP 429").to_message(MARK)).gate_waits == 2
    forged = decode(waited.to_message(None))   # no mark: a producer cannot say the hunt began before
    assert forged.gate_waits == 0 and "gate_waits" in forged.dropped


def test_a_delivery_only_copy_names_its_own_pending_body_and_survives_the_round_trip():
    request = decode({"query": "DeviceInfo", "id": "job-7", "destination": "hook"})
    assert request.pending_delivery is None
    again = decode(request.delivery_only().next_attempt("webhook hook answered 503").to_message(MARK))
    assert again.pending_delivery == pending_delivery_name("job-7") == "pending/job-7.delivery.json"
    assert (again.id, again.attempt, again.destination, again.query) == ("job-7", 2, "hook", "DeviceInfo")
    assert decode(again.next_attempt("again").to_message(MARK)).pending_delivery == again.pending_delivery


def near_limit(size: int) -> dict[str, object]:
    """A hunt whose compact JSON is `size` bytes (a long query comment, then a context to pad)."""
    body: dict[str, object] = {"query": "DeviceInfo | take 1\n//" + "x" * 60_000, "id": "big-1", "context": {"p": ""}}
    pad = size - len(json.dumps(body, separators=(",", ":")).encode())
    body["context"] = {"p": "y" * pad}
    return body


def test_a_copy_that_would_pass_the_queue_limit_drops_its_last_error_first():
    request = decode(near_limit(64 * 1024 - 300))
    copy = request.next_attempt("HTTP 503 " + "e" * 480).to_message(MARK)
    assert len(copy.encode()) <= 64 * 1024 and "last_error" not in json.loads(copy)
    roomy = decode({"query": "DeviceInfo", "id": "job-8"}).next_attempt("HTTP 503").to_message(MARK)
    assert json.loads(roomy)["last_error"] == "HTTP 503"


def test_relay_fields_without_the_mark_are_dropped_and_the_hunt_is_fresh():
    forged = {"query": "x", "id": "job-1", "attempt": 49, "first_enqueued_at": "2020-01-01T00:00:00+00:00",
              "last_error": "x", "pending_delivery": "pending/job-1.delivery.json"}
    request = decode(json.dumps(forged))
    assert (request.attempt, request.first_enqueued_at, request.last_error, request.pending_delivery) == \
        (1, NOW, None, None)
    assert set(request.dropped) == {"attempt", "first_enqueued_at", "last_error", "pending_delivery"}


@pytest.mark.parametrize("tamper", [
    lambda body: {**body, MARK_FIELD: "v1,AAAA"},                                      # a made-up mark
    lambda body: {**body, MARK_FIELD: RelayMark([b"o" * 32]).sign(body)},            # another deployment's key
    lambda body: {**marked(body), "query": "other"},                                 # a mark moved to another hunt
    lambda body: {**marked(body), "attempt": 2},                                     # a marked field changed
    lambda body: {**body, MARK_FIELD: 5},
    lambda body: {**body, MARK_FIELD: "v1,é"},                                        # not even ASCII
])
def test_a_mark_that_does_not_verify_drops_the_relay_fields(tamper):
    body = {"query": "x", "id": "job-1", "attempt": 40}
    request = decode(json.dumps(tamper(body)))
    assert request.attempt == 1 and "attempt" in request.dropped


def test_without_a_key_no_message_is_the_relays_own():
    request = decode(json.dumps(marked({"query": "x", "attempt": 3})), mark=None)
    assert request.attempt == 1 and request.dropped == ("attempt", MARK_FIELD)


def test_a_rotated_key_still_verifies_copies_signed_with_the_previous_one():
    old, new = b"o" * 32, b"n" * 32
    copy = decode({"query": "x", "id": "j"}).next_attempt("HTTP 429").to_message(RelayMark([old]))
    request = decode_hunt_request(copy, message_id="m", default_api="mde", now=NOW, mark=RelayMark([new, old]))
    assert request.attempt == 2 and request.dropped == ()


HUGE = "9" * 5000
HOSTILE_NUMBERS = [
    ('{"query": "x", "attempt": ' + HUGE + "}", "attempt"),
    ('{"query": "x", "context": {"n": -' + HUGE + "}}", "context.n"),
    ('{"query": "x", "context": {"n": 1e400}}', "context.n"),
    ('{"query": "x", "context": {"n": -1e400}}', "context.n"),
    ('{"query": "x", "context": {"n": 1.7976931348623157e309}}', "context.n"),
    ('{"query": "x", "context": {"n": [1, NaN]}}', "context.n[1]"),
    ('{"query": "x", "context": {"n": Infinity}}', "context.n"),
    ('{"query": "x", "attempt": -Infinity}', "attempt"),
]


@pytest.mark.parametrize(("raw", "field"), HOSTILE_NUMBERS)
def test_numbers_a_strict_reader_would_not_take_are_refused_naming_the_field(raw, field):
    with pytest.raises(InvalidHuntRequest) as refused:
        decode(raw)
    assert refused.value.field == field


@pytest.mark.parametrize(("raw", "field"), [
    ('{"query": "x", "context": {"k": "v\\ud800v"}}', "context.k"),
    ('{"query": "x", "context": {"k\\udfff": 1}}', 'context."k\\udfff"'),
    ('{"query": "x\\ud83d"}', "query"),
    ('{"query": "x", "id": "a\\udc00"}', "id"),
    ('{"query": "x", "query": "y"}', "query"),
    ('{"query": "x", "context": {"a": 1, "a": 2}}', "context.a"),
])
def test_lone_surrogates_and_duplicate_keys_are_refused_naming_the_field(raw, field):
    with pytest.raises(InvalidHuntRequest) as refused:
        decode(raw)
    assert refused.value.field == field


@pytest.mark.parametrize("char", [chr(c) for c in [*range(0, 32), 127, 0x85, 0x2028]])
def test_an_id_with_any_control_character_anywhere_is_refused(char):
    for job_id in (f"job{char}", f"jo{char}b", f"{char}job"):
        with pytest.raises(InvalidHuntRequest) as refused:
            decode({"query": "x", "id": job_id})
        assert refused.value.field == "id"
    with pytest.raises(InvalidHuntRequest):
        decode({"template": f"logons{char}"})


def test_split_is_part_of_the_request_and_of_its_queue_copy():
    plain, split = decode({"query": "x", "id": "j"}), decode({"query": "x", "id": "j", "split": True})
    assert (plain.split, split.split) == (False, True)
    assert plain.digest() != split.digest()
    copy = decode(json.loads(split.next_attempt("429").to_message(MARK)))
    assert copy.split and copy.attempt == 2


@pytest.mark.parametrize("timespan", ["P1M", "2026-11-08T00:00:00Z/2026-11-01T00:00:00Z"])
def test_a_split_hunt_needs_a_range_of_fixed_length_in_order(timespan):
    body = {"query": "x", "api": "graph", "timespan": timespan, "split": True}
    jsonschema.validate(body, SCHEMA)   # the shape is right: the parser reads the range
    with pytest.raises(InvalidHuntRequest) as refused:
        decode(body)
    assert refused.value.field == "timespan" and "split hunt" in refused.value.reason
