"""Typed KQL literals: table tests per type, property tests of the string escaper against an independent
decoder (tests/core/kql_literal_decoder.py), and duckdb-kql reading the literals back."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid

import duckdb_kql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.core.errors import KqlValueError
from shared.core.kql_literals import ParamType, parse_type, quote_string, render_literal
from tests.core.kql_literal_decoder import LiteralError, decode_string_literal

H64, H40, H32 = "ab" * 32, "cd" * 20, "ef" * 16
GUID = "6f1d2b1a-0c4e-4f3a-9d7e-2b1c0a9f8e7d"

VALID = [
    ("string", "jdoe", '"jdoe"'),
    ("string", "", '""'),
    ("string", 'say "hi"\\', '"say \\"hi\\"\\\\"'),
    ("string", "it's", '"it\'s"'),
    ("int", 0, "int(0)"),
    ("int", -(2**31), "int(-2147483648)"),
    ("int", 2**31 - 1, "int(2147483647)"),
    ("long", -(2**63), "long(-9223372036854775808)"),
    ("long", 2**63 - 1, "long(9223372036854775807)"),
    ("real", 0.1, "real(0.1)"),
    ("real", 3, "real(3.0)"),
    ("real", -1.5e300, "real(-1.5e+300)"),
    ("bool", True, "true"),
    ("bool", False, "false"),
    ("datetime", "2024-01-31T08:00:00Z", "datetime(2024-01-31T08:00:00.0000000Z)"),
    ("datetime", "2024-01-31t08:00z", "datetime(2024-01-31T08:00:00.0000000Z)"),
    ("datetime", "2024-01-31 08:00:00.1234567+02:00", "datetime(2024-01-31T06:00:00.1234567Z)"),
    ("datetime", "2024-01-31T08:00:00.5-0130", "datetime(2024-01-31T09:30:00.5000000Z)"),
    ("datetime", "2024-02-29", "datetime(2024-02-29T00:00:00.0000000Z)"),
    ("datetime", "0001-01-01", "datetime(0001-01-01T00:00:00.0000000Z)"),
    ("datetime", dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC), "datetime(2024-01-01T12:00:00.0000000Z)"),
    ("timespan", "7d", "time(7.00:00:00.0000000)"),
    ("timespan", " 1.5H ", "time(0.01:30:00.0000000)"),
    ("timespan", "30min", "time(0.00:30:00.0000000)"),
    ("timespan", "30m", "time(0.00:30:00.0000000)"),
    ("timespan", "100ms", "time(0.00:00:00.1000000)"),
    ("timespan", "3ticks", "time(0.00:00:00.0000003)"),
    ("timespan", "0s", "time(0.00:00:00.0000000)"),
    ("timespan", "1.02:03:04.5", "time(1.02:03:04.5000000)"),
    ("timespan", "02:03", "time(0.02:03:00.0000000)"),
    ("timespan", "P1W2DT3H4M5.5S", "time(9.03:04:05.5000000)"),
    ("timespan", "pt36h", "time(1.12:00:00.0000000)"),
    ("timespan", dt.timedelta(hours=25), "time(1.01:00:00.0000000)"),
    ("guid", GUID, f"guid({GUID})"),
    ("guid", "{" + GUID.upper() + "}", f"guid({GUID})"),
    ("guid", GUID.replace("-", ""), f"guid({GUID})"),
    ("guid", uuid.UUID(GUID), f"guid({GUID})"),
    ("ip", "10.0.0.1", '"10.0.0.1"'),
    ("ip", "2001:DB8:0:0::1", '"2001:db8::1"'),
    ("ip", "::ffff:1.2.3.4", '"::ffff:1.2.3.4"'),
    ("ip", ipaddress.ip_address("192.168.1.1"), '"192.168.1.1"'),
    ("sha256", H64.upper(), f'"{H64}"'),
    ("sha1", H40, f'"{H40}"'),
    ("md5", H32, f'"{H32}"'),
    ("hostname", "pc-01", '"pc-01"'),
    ("hostname", "PC-01.corp.contoso.com", '"PC-01.corp.contoso.com"'),
    ("hostname", "a" * 63 + ".b", '"' + "a" * 63 + '.b"'),
    ("upn", "jdoe@contoso.com", '"jdoe@contoso.com"'),
    ("upn", "o'brien.j+hunt@mail.contoso.co.uk", '"o\'brien.j+hunt@mail.contoso.co.uk"'),
    ("list<string>", ["a", 'b"'], '("a", "b\\"")'),
    ("list<sha256>", [H64, H64.upper()], f'("{H64}", "{H64}")'),
    ("list<int>", [1, -2], "(int(1), int(-2))"),
    ("list<datetime>", ["2024-01-01"], "(datetime(2024-01-01T00:00:00.0000000Z))"),
]

INVALID = [
    ("string", 5, "expected a string, got a number"),
    ("string", None, "got null"),
    ("string", "x" * 2049, "at most 2048 characters"),
    ("string", "a\ud800b", "lone surrogate"),
    ("int", 2**31, "between -2147483648 and 2147483647"),
    ("int", -(2**31) - 1, "between"),
    ("int", True, "expected a JSON integer, got a boolean"),
    ("int", 1.0, "got a number"),
    ("int", "1", "got a string"),
    ("long", 2**63, "64-bit"),
    ("real", float("nan"), "finite"),
    ("real", float("inf"), "finite"),
    ("real", 10**400, "too large"),
    ("real", False, "got a boolean"),
    ("real", "1.5", "got a string"),
    ("bool", 1, "true or false"),
    ("bool", "true", "true or false"),
    ("datetime", "2024-01-31T08:00:00", "Z or an offset is required"),
    ("datetime", "2024-02-30", "not a valid date"),
    ("datetime", "2024-01-31T24:00:00Z", "not a valid date"),
    ("datetime", "2024-01-31T08:00:00.12345678Z", "ISO 8601"),
    ("datetime", "2024-01-31T08:00:00+01:75", "minutes"),
    ("datetime", "0001-01-01T00:00:00+01:00", "0001-9999"),
    ("datetime", "yesterday", "ISO 8601"),
    ("datetime", "\u0662\u0660\u0662\u0664-01-01", "ISO 8601"),  # Arabic-Indic digits
    ("datetime", "2024-01-31T08:00:00Z) | take 1 //", "ISO 8601"),
    ("datetime", 1706688000, "expected a string"),
    ("datetime", dt.datetime(2024, 1, 1), "needs a timezone"),
    ("timespan", "-1d", "non-negative"),
    ("timespan", "7 fortnights", "unknown unit"),
    ("timespan", "\u0667d", "non-negative"),  # an Arabic-Indic 7
    ("timespan", "0.5tick", "100 ns"),
    ("timespan", "1.24:00:00", "23:59:59"),
    ("timespan", "P", "non-negative"),
    ("timespan", "PT", "non-negative"),
    ("timespan", "P1Y", "non-negative"),
    ("timespan", "99999999999999999999d", "largest"),
    ("timespan", dt.timedelta(seconds=-1), "negative"),
    ("timespan", 7, "expected a string"),
    ("guid", "6f1d2b1a-0c4e-4f3a-9d7e", "expected a GUID"),
    ("guid", "6f1d2b1a0c4e-4f3a-9d7e-2b1c0a9f8e7d", "expected a GUID"),
    ("guid", "{" + GUID, "expected a GUID"),
    ("guid", "urn:uuid:" + GUID, "expected a GUID"),
    ("ip", "010.0.0.1", "IPv4 or IPv6"),
    ("ip", "10.0.0", "IPv4 or IPv6"),
    ("ip", "0x7f.1", "IPv4 or IPv6"),
    ("ip", "fe80::1%eth0", "scope"),
    ("ip", '1.2.3.4" | take 1', "IPv4 or IPv6"),
    ("sha256", H64[:-1], "exactly 64 hexadecimal digits, got 63"),
    ("sha256", H64[:-1] + "g", "exactly 64"),
    ("sha256", H40, "exactly 64"),
    ("sha1", H64, "exactly 40"),
    ("md5", H32 + "\n", "exactly 32"),
    ("hostname", "-pc", "host name"),
    ("hostname", "pc-", "host name"),
    ("hostname", "pc..contoso.com", "host name"),
    ("hostname", "pc.contoso.com.", "host name"),
    ("hostname", "pc_01", "host name"),
    ("hostname", "a" * 64, "host name"),
    ("hostname", ".".join(["a" * 63] * 4), "host name"),  # 255 characters
    ("hostname", "", "host name"),
    ("hostname", 'pc" | take 1 //', "host name"),
    ("upn", "jdoe", "name@domain.tld"),
    ("upn", "jdoe@contoso", "name@domain.tld"),
    ("upn", "j doe@contoso.com", "name@domain.tld"),
    ("upn", ".jdoe@contoso.com", "name@domain.tld"),
    ("upn", "j..doe@contoso.com", "name@domain.tld"),
    ("upn", '"@contoso.com', "name@domain.tld"),
    ("upn", "a@b@contoso.com", "name@domain.tld"),
    ("upn", "x" * 65 + "@contoso.com", "name@domain.tld"),
    ("list<string>", [], "1 to 1000 items, got 0"),
    ("list<string>", "a", "expected a JSON array, got a string"),
    ("list<int>", list(range(1001)), "got 1001"),
]


@pytest.mark.parametrize(("type_spec", "value", "literal"), VALID)
def test_a_valid_value_renders_as_the_expected_literal(type_spec: str, value: object, literal: str) -> None:
    assert render_literal(type_spec, value, "p") == literal


@pytest.mark.parametrize(("type_spec", "value", "reason"), INVALID)
def test_an_invalid_value_is_refused_naming_the_parameter_and_type(type_spec: str, value: object,
                                                                   reason: str) -> None:
    with pytest.raises(KqlValueError) as caught:
        render_literal(type_spec, value, "the_param")
    assert caught.value.parameter == "the_param"
    assert caught.value.type_name == type_spec
    assert reason in str(caught.value)
    assert "the_param" in str(caught.value) and type_spec in str(caught.value)


def test_a_bad_list_item_is_named_by_its_index_and_scalar_type() -> None:
    with pytest.raises(KqlValueError) as caught:
        render_literal("list<sha1>", [H40, "nope"], "hashes")
    assert (caught.value.parameter, caught.value.type_name) == ("hashes[1]", "sha1")


@pytest.mark.parametrize("type_spec", ["sha256", "string", "hostname", "timespan", "datetime", "upn", "guid"])
def test_an_error_never_echoes_a_huge_value(type_spec: str) -> None:
    with pytest.raises(KqlValueError) as caught:
        render_literal(type_spec, "Z" * 1_000_000, "p")
    assert len(str(caught.value)) < 300
    assert "ZZZZZZZZZZ" not in str(caught.value)


@pytest.mark.parametrize(("spec", "expected"), [
    ("sha256", ParamType("sha256")),
    (" list<sha256> ", ParamType("sha256", is_list=True)),
    ("list< ip >", ParamType("ip", is_list=True)),
])
def test_type_names_parse(spec: str, expected: ParamType) -> None:
    assert parse_type(spec) == expected


@pytest.mark.parametrize("spec", ["", "identifier", "column", "list<list<int>>", "list<>", "String", "dynamic"])
def test_unknown_types_are_refused_and_identifiers_are_not_a_type(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown type"):
        parse_type(spec)


@pytest.mark.parametrize(("text", "literal"), [
    ('"', '"\\""'),
    ("\\", '"\\\\"'),
    ("\a\b\f\n\r\t", '"\\a\\b\\f\\n\\r\\t"'),
    ("\x00\x1b\x7f\x85\x9f", '"\\u0000\\u001B\\u007F\\u0085\\u009F"'),
    ("\v", '"\\u000B"'),
    ("a\u2028b\u2029c", '"a\\u2028b\\u2029c"'),
    ("\u202egnp.exe", '"\\u202Egnp.exe"'),
    ("zero\u200bwidth\ufeff", '"zero\\u200Bwidth\\uFEFF"'),
    ("\ud800", '"\\uD800"'),
    ("'`@h$é日本😀\U000e0001", '"\'`@h$é日本😀\U000e0001"'),
    ('" | take 1 //', '"\\" | take 1 //"'),
    ("```", '"```"'),
])
def test_the_escaper_uses_short_escapes_then_uXXXX_and_leaves_other_text_alone(text: str, literal: str) -> None:
    assert quote_string(text) == literal


# --- properties, with the independent decoder as the oracle --------------------------------------------

_TRICKY = st.sampled_from(list('"\'\\`@hH\n\r\t\a\b\f\v\x00\x85\u2028\u2029\u202e\ufeff😀/|;{}'))
_ANY_TEXT = st.text(st.one_of(st.characters(codec="utf-8"), _TRICKY), max_size=60)  # Unicode text
_ALL_CODE_POINTS = st.text(st.one_of(st.characters(exclude_categories=()), _TRICKY), max_size=60)
_AFTER = st.one_of(st.text(max_size=20), st.sampled_from(['" | take 1 //', "'", '"', "\\", '""', "```", "h'"]))


@settings(max_examples=10_000, deadline=None)
@given(_ANY_TEXT)
def test_decoding_the_rendered_literal_gives_the_string_back(text: str) -> None:
    literal = render_literal("string", text)
    assert decode_string_literal(literal) == (text, len(literal))


@settings(max_examples=10_000, deadline=None)
@given(_ANY_TEXT, _AFTER)
def test_the_rendered_literal_cannot_end_early(text: str, after: str) -> None:
    literal = render_literal("string", text)
    assert decode_string_literal(literal + after) == (text, len(literal))


@settings(max_examples=10_000, deadline=None)
@given(_ALL_CODE_POINTS)
def test_the_escaper_round_trips_every_code_point_and_keeps_to_one_line(text: str) -> None:
    literal = quote_string(text)
    assert decode_string_literal(literal) == (text, len(literal))
    assert not any(ch in literal for ch in "\r\n\u2028\u2029")


@pytest.mark.parametrize(("text", "value", "end"), [
    ('"a\\"b" rest', 'a"b', 6),
    ("'a\\'b\"'", "a'b\"", 7),
    ('@"C:\\tmp\\""x"', 'C:\\tmp\\"x', 13),
    ("@'it''s'", "it's", 8),
    ('h"secret"', "secret", 9),
    ("H@'x'", "x", 5),
    ("```line1\nline2\\``` tail", "line1\nline2\\", 18),
    ('"\\u00e9\\x41\\U0001F600"', "éA😀", 22),
])
def test_the_oracle_decodes_each_documented_literal_form(text: str, value: str, end: int) -> None:
    assert decode_string_literal(text) == (value, end)


@pytest.mark.parametrize("text", ['"abc', '"a\nb"', "'a\u2028b'", '"\\q"', '"\\u12"', "@\"a\"\"", "h```x```",
                                  "abc", '"a\\'])
def test_the_oracle_refuses_what_kusto_would_not_read_as_one_literal(text: str) -> None:
    with pytest.raises(LiteralError):
        decode_string_literal(text)


# --- duckdb-kql reads the literals back -----------------------------------------------------------------

_DUCKDB_SAFE_STRINGS = ['" | take 1 //', "a\\b", "\\", 'x"', "it's", "line1\nline2", "tab\there", "cr\rlf\n",
                        "é日本😀", "@\"verbatim\"", "```", "h'hidden'", "// not a comment", "{{x}}", ""]


def _print(literal: str) -> object:
    rows = duckdb_kql.kql(duckdb_kql.connect(), f"print x = {literal}").fetchall()
    assert len(rows) == 1
    return rows[0][0]


@pytest.mark.parametrize("text", _DUCKDB_SAFE_STRINGS)
def test_duckdb_kql_reads_a_rendered_string_back_unchanged(text: str) -> None:
    assert _print(render_literal("string", text)) == text


@pytest.mark.xfail(strict=True, reason="duckdb-kql 1.1.2 reads \\a, \\b, \\f and \\uXXXX as the bare letter "
                   "(\\u0001 -> 'u0001'); Kusto's lexer reads them as escapes")
@pytest.mark.parametrize("text", ["\a", "\b", "\f", "\x01", "\u2028", "\u202e"])
def test_duckdb_kql_reads_the_remaining_escapes(text: str) -> None:
    assert _print(render_literal("string", text)) == text


@pytest.mark.parametrize(("type_spec", "value", "expected"), [
    ("int", -(2**31), -(2**31)),
    ("long", -(2**63), -(2**63)),
    ("real", 0.1, 0.1),
    ("bool", False, False),
    ("datetime", "2024-01-31T08:00:00.123456+02:00", dt.datetime(2024, 1, 31, 6, 0, 0, 123456)),
    ("timespan", "1.02:03:04.5", dt.timedelta(days=1, hours=2, minutes=3, seconds=4.5)),
    ("timespan", "P7D", dt.timedelta(days=7)),
    ("guid", GUID.upper(), uuid.UUID(GUID)),
    ("ip", "2001:db8::1", "2001:db8::1"),
    ("sha256", H64.upper(), H64),
])
def test_duckdb_kql_reads_each_typed_literal_as_its_value(type_spec: str, value: object, expected: object) -> None:
    assert _print(render_literal(type_spec, value)) == expected


def test_a_rendered_list_works_with_in() -> None:
    literal = render_literal("list<string>", ["a", 'b" | take 1 //'])
    assert _print(f'"b\\" | take 1 //" in {literal}') is True
    assert _print(f'"c" in {literal}') is False
