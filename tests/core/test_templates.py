"""KQL templates: the shipped files load, render and run on duckdb-kql; malformed templates and bad parameters
are refused with errors that name the culprit; hostile values stay inside their literal."""

from __future__ import annotations

from pathlib import Path

import duckdb_kql
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import dataset
from sandbox.hunting import HuntingEngine
from shared.core.errors import InvalidHuntRequest, TemplateDefinitionError, TemplateParameterError, UnknownTemplate
from shared.core.templates import (
    DEFAULT_TEMPLATES_DIR,
    Template,
    get_template,
    load_templates,
    parse_template,
    render,
)
from tests.core.kql_literal_decoder import decode_string_literal

H64 = "ab" * 32
SHIPPED_PARAMS: dict[str, dict[str, object]] = {
    "file-process-tree": {"sha256": H64},
    "processes-by-hashes": {"hashes": [H64, "cd" * 32]},
    "user-logons": {"account": "JDoe@contoso.com"},
    "device-network-connections": {"device_name": "pc-01"},
    "emails-from-sender": {"sender": "billing@fabrikam.com"},
}
ONE_ROW_TABLES = {  # just the columns the templates read, one row each that every template should find
    "DeviceProcessEvents": (
        "Timestamp: datetime, DeviceId: string, DeviceName: string, AccountDomain: string, AccountName: string, "
        "FileName: string, FolderPath: string, SHA256: string, ProcessId: long, ProcessCommandLine: string, "
        "ProcessCreationTime: datetime, InitiatingProcessFileName: string, InitiatingProcessFolderPath: string, "
        "InitiatingProcessId: long, InitiatingProcessCommandLine: string, InitiatingProcessSHA256: string, "
        "InitiatingProcessParentFileName: string, InitiatingProcessParentId: long, ReportId: long",
        f'NOW, "d1", "pc-01.contoso.com", "contoso", "jdoe", "evil.exe", "C:\\\\Temp", "{H64}", 4242, '
        '"evil.exe -x", NOW, "cmd.exe", "C:\\\\Windows", 4000, "cmd /c evil.exe", "", "explorer.exe", 1000, 1'),
    "DeviceLogonEvents": (
        "Timestamp: datetime, DeviceId: string, DeviceName: string, ActionType: string, LogonType: string, "
        "AccountDomain: string, AccountName: string, AccountSid: string, Protocol: string, FailureReason: string, "
        "IsLocalAdmin: bool, RemoteDeviceName: string, RemoteIP: string, RemoteIPType: string, RemotePort: int, "
        "InitiatingProcessFileName: string, ReportId: long",
        'NOW, "d1", "pc-01.contoso.com", "LogonSuccess", "Interactive", "contoso", "jdoe", "S-1-5-21-1", '
        '"Kerberos", "", false, "", "10.0.0.9", "Private", 0, "lsass.exe", 2'),
    "DeviceNetworkEvents": (
        "Timestamp: datetime, DeviceId: string, DeviceName: string, ActionType: string, Protocol: string, "
        "LocalIP: string, LocalPort: int, RemoteIP: string, RemotePort: int, RemoteUrl: string, "
        "RemoteIPType: string, InitiatingProcessFileName: string, InitiatingProcessCommandLine: string, "
        "InitiatingProcessAccountName: string, ReportId: long",
        'NOW, "d1", "PC-01.contoso.com", "ConnectionSuccess", "Tcp", "10.0.0.2", 50000, "203.0.113.7", 443, '
        '"evil.example", "Public", "evil.exe", "evil.exe -x", "jdoe", 3'),
    "EmailEvents": (
        "Timestamp: datetime, NetworkMessageId: string, InternetMessageId: string, SenderFromAddress: string, "
        "SenderMailFromAddress: string, SenderDisplayName: string, SenderIPv4: string, "
        "RecipientEmailAddress: string, Subject: string, EmailDirection: string, DeliveryAction: string, "
        "DeliveryLocation: string, ThreatTypes: string, DetectionMethods: string, AttachmentCount: int, "
        "UrlCount: int, ReportId: string",
        'NOW, "m1", "<m1@fabrikam.com>", "Billing@Fabrikam.com", "bounce@fabrikam.com", "Billing", '
        '"198.51.100.1", "jdoe@contoso.com", "Invoice", "Inbound", "Delivered", "Inbox/folder", "Phish", '
        '"URL detonation", 1, 2, "r1"'),
}
SIMPLE = """// @description Processes of one file.
// @param sha256: sha256
// @param lookback: timespan = 7d
// @param limit: int = 100
DeviceProcessEvents
| where Timestamp > ago({{lookback}}) and SHA256 == {{sha256}}
| take {{limit}}
"""


@pytest.fixture(scope="module")
def shipped() -> dict[str, Template]:
    return load_templates(DEFAULT_TEMPLATES_DIR)


def test_the_shipped_templates_are_the_documented_hunts(shipped: dict[str, Template]) -> None:
    assert set(shipped) == set(SHIPPED_PARAMS)
    assert all(template.description for template in shipped.values())


@pytest.mark.parametrize("name", sorted(SHIPPED_PARAMS))
def test_each_shipped_template_renders_to_kql_that_parses(shipped: dict[str, Template], name: str) -> None:
    query = render(shipped[name], SHIPPED_PARAMS[name])
    assert "{{" not in query
    assert duckdb_kql.parse(query).ok, duckdb_kql.validate(query)


@pytest.mark.parametrize("name", sorted(SHIPPED_PARAMS))
def test_each_shipped_template_finds_its_row_on_duckdb_kql(shipped: dict[str, Template], name: str) -> None:
    connection = duckdb_kql.connect()
    for table, (columns, row) in ONE_ROW_TABLES.items():
        # a timestamp in the future stays inside any lookback
        values = row.replace("NOW", "datetime(2999-01-01)")
        duckdb_kql.script(connection, f".set-or-replace {table} <| datatable({columns})[{values}]")
    rows = duckdb_kql.kql(connection, render(shipped[name], SHIPPED_PARAMS[name])).fetchall()
    assert len(rows) == 1


@pytest.fixture(scope="module")
def sandbox_engine() -> HuntingEngine:
    return HuntingEngine(rows=5000)


SANDBOX_PARAMS: dict[str, dict[str, object]] = {  # values the sandbox dataset is known to hold
    "file-process-tree": {"sha256": dataset.KNOWN_SHA256.upper()},
    "processes-by-hashes": {"hashes": [H64, dataset.KNOWN_SHA256]},
    "user-logons": {"account": dataset.KNOWN_ACCOUNT_UPN},
    "device-network-connections": {"device_name": dataset.KNOWN_DEVICE_NAME.split(".")[0]},
    "emails-from-sender": {"sender": dataset.KNOWN_SENDER.upper()},
}


@pytest.mark.parametrize("name", sorted(SHIPPED_PARAMS))
def test_each_shipped_template_finds_rows_in_the_sandbox_dataset(shipped: dict[str, Template],
                                                                  sandbox_engine: HuntingEngine, name: str) -> None:
    result = sandbox_engine.run(render(shipped[name], SANDBOX_PARAMS[name]), "m365d")
    assert list(result.rows)


def test_defaults_apply_and_given_values_replace_them() -> None:
    template = parse_template("simple", SIMPLE)
    assert render(template, {"sha256": H64.upper()}) == (
        "DeviceProcessEvents\n"
        f'| where Timestamp > ago(time(7.00:00:00.0000000)) and SHA256 == "{H64}"\n'
        "| take int(100)\n")
    assert "ago(time(0.01:00:00.0000000))" in render(template, {"sha256": H64, "lookback": "1h"})
    assert template.description == "Processes of one file."
    assert [(p.name, str(p.type)) for p in template.parameters] == [
        ("sha256", "sha256"), ("lookback", "timespan"), ("limit", "int")]
    assert template.body.startswith("DeviceProcessEvents\n| where Timestamp > ago({{lookback}})")


@pytest.mark.parametrize(("params", "field", "reason"), [
    ({}, "parameters.sha256", "required by template 'simple' (sha256)"),
    ({"sha256": H64, "shaa256": H64}, "parameters.shaa256", "not a parameter of template 'simple'"),
    ({"sha256": H64, "x" * 500: 1}, "parameters." + "x" * 64, "it takes: sha256, lookback, limit"),
    ({"sha256": "abc"}, "parameters.sha256", "not a valid sha256: expected exactly 64 hexadecimal digits"),
    ({"sha256": None}, "parameters.sha256", "got null"),
    ({"sha256": H64, "limit": "100"}, "parameters.limit", "not a valid int: expected a JSON integer"),
    ({"sha256": H64, "lookback": "7d) | take 1 //"}, "parameters.lookback", "not a valid timespan"),
])
def test_missing_unknown_and_ill_typed_parameters_are_refused_by_name(params: dict[str, object], field: str,
                                                                      reason: str) -> None:
    with pytest.raises(TemplateParameterError) as caught:
        render(parse_template("simple", SIMPLE), params)
    assert isinstance(caught.value, InvalidHuntRequest)
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert len(str(caught.value)) < 400


@pytest.mark.parametrize("params", [["sha256"], "sha256", None, {1: "x"}])
def test_parameters_that_are_not_an_object_are_refused(params: object) -> None:
    with pytest.raises(TemplateParameterError, match="expected a JSON object"):
        render(parse_template("simple", SIMPLE), params)  # type: ignore[arg-type]


def test_an_unknown_template_is_refused_listing_the_available_ones(shipped: dict[str, Template]) -> None:
    assert get_template(shipped, "user-logons").name == "user-logons"
    with pytest.raises(UnknownTemplate) as caught:
        get_template(shipped, "../../etc/passwd")
    assert caught.value.field == "template"
    assert "available: device-network-connections, emails-from-sender, file-process-tree" in str(caught.value)
    with pytest.raises(UnknownTemplate):
        get_template(shipped, ["user-logons"])


HEADER = "// @param v: string\n"


@pytest.mark.parametrize(("text", "problem"), [
    (HEADER + "print x = {{v}}, y = {{w}}", "placeholders without a @param: w"),
    (HEADER + "// @param w: int\nprint x = {{v}}", "declared but never used: w"),
    (HEADER + "// @param v: int\nprint x = {{v}}", "declared twice"),
    ("// @param v: identifier\nprint {{v}}", "unknown type 'identifier'"),
    ("// @param v string\nprint {{v}}", "cannot read @param"),
    ("// @param v: int = 1.5\nprint {{v}}", "the default is invalid"),
    ("// @param v: timespan = forever\nprint {{v}}", "the default is invalid"),
    ("// @paramm v: int\nprint 1", "unknown directive @paramm"),
    (HEADER + 'print x = "{{v}}"', "inside a string or comment"),
    (HEADER + "print x = '{{v}}'", "inside a string or comment"),
    (HEADER + 'print x = @"{{v}}"', "inside a string or comment"),
    (HEADER + "print x = ```\n{{v}}\n```", "inside a string or comment"),
    (HEADER + "print x = 1 // {{v}}", "inside a string or comment"),
    (HEADER + "print x = @{{v}}", "touches a name or '@'"),
    (HEADER + "print x = h{{v}}", "touches a name or '@'"),
    (HEADER + "print x = {{v}}abc", "touches a name or '@'"),
    (HEADER + "print x = {{v}}, y = {{ v }}", "'{{' outside a string or comment"),
    (HEADER + "print x = {{v}}, y = {{1v}}", "'{{' outside a string or comment"),
    (HEADER + 'print x = {{v}}, y = "abc', "unterminated string literal"),
    (HEADER + 'print x = {{v}}, y = "a\\\nb"', "unterminated string literal"),
    (HEADER + "print x = {{v}}, y = ```abc", "unterminated ``` literal"),
    (HEADER + "\n// only comments\n", "the query body is empty"),
])
def test_a_malformed_template_is_refused_at_load(text: str, problem: str) -> None:
    with pytest.raises(TemplateDefinitionError, match="^bad: .*" + problem.replace("(", r"\(").replace(")", r"\)")
                       .replace("{", r"\{").replace("}", r"\}").replace("*", r"\*")):
        parse_template("bad", text)


@pytest.mark.parametrize("text", [
    HEADER + 'print x = "{{ not one", y = {{v}}, z = @"\\", w = \'}}{{\'',  # braces inside strings
    HEADER + "print x = dynamic({\"a\": {\"b\": 1}}), y = {{v}}",  # `}}` closing nested bags
    HEADER + "print x = strcat({{v}},{{v}})",
    HEADER + "print x = ({{v}})",
])
def test_placeholders_in_code_beside_strings_and_bags_are_accepted(text: str) -> None:
    assert parse_template("ok", text).parameters[0].name == "v"


@pytest.mark.parametrize("name", ["Upper", "-lead", "has space", "a" * 65, ""])
def test_a_template_name_must_be_a_safe_file_stem(name: str) -> None:
    with pytest.raises(TemplateDefinitionError, match="template name"):
        parse_template(name, HEADER + "print {{v}}")


def test_load_reads_every_kql_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    (tmp_path / "one.kql").write_text(HEADER + "print x = {{v}}", encoding="utf-8")
    (tmp_path / "bom.kql").write_text("\ufeff" + HEADER + "print x = {{v}}", encoding="utf-8")
    (tmp_path / "README.md").write_text("not a template {{x}}", encoding="utf-8")
    assert list(load_templates(tmp_path)) == ["bom", "one"]
    (tmp_path / "two.kql").write_bytes(b"print '\xff'")
    with pytest.raises(TemplateDefinitionError, match=r"two\.kql: not UTF-8"):
        load_templates(tmp_path)
    with pytest.raises(TemplateDefinitionError, match="does not exist"):
        load_templates(tmp_path / "missing")


def test_the_shipped_templates_folder_is_the_repository_s_templates() -> None:
    assert Path(__file__).resolve().parents[2] / "templates" == DEFAULT_TEMPLATES_DIR
    assert load_templates(DEFAULT_TEMPLATES_DIR)


INJECTION = '" | take 1 //'


def test_an_injection_attempt_stays_inside_its_literal_on_duckdb_kql() -> None:
    template = parse_template("echo", HEADER + "print x = {{v}}, y = 2")
    query = render(template, {"v": INJECTION})
    assert duckdb_kql.kql(duckdb_kql.connect(), query).fetchall() == [(INJECTION, 2)]


@settings(max_examples=10_000, deadline=None)
@given(st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(list('"\'\\`@\n\u2028/|'))),
               max_size=40))
def test_any_string_value_leaves_the_rest_of_the_query_unchanged(value: str) -> None:
    template = parse_template("echo", HEADER + "print x = {{v}} | take 1 // tail")
    query = render(template, {"v": value})
    prefix = "print x = "
    decoded, end = decode_string_literal(query, len(prefix))
    assert (query[:len(prefix)], decoded, query[end:]) == (prefix, value, " | take 1 // tail")
