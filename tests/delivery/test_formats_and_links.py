"""Result rendering (json, ndjson, csv, gzip), links and the envelope fitting, as pure functions over in-memory
bodies; the settings that configure them."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import pytest
import requests
from azure.storage.blob import UserDelegationKey

from shared.adapters.hunting_client import ResultStream
from shared.app.config import load_settings
from shared.core.apis import APIS
from shared.core.errors import SettingsError
from shared.core.result_formats import GzipWriter, csv_cell, file_name, render
from shared.core.settings import StorageConfig
from shared.core.strict_json import dumps
from shared.delivery.links import (
    AccountKeySigner,
    DelegationKeySigner,
    SpillingWriter,
    fit_envelope,
    signer_for,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
STORAGE = {"AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;"
                                  "QueueEndpoint=http://127.0.0.1:1/a"}

AWKWARD_ROWS = [
    {"Name": "plain", "Count": 1, "Ratio": 0.25, "Flag": True, "Extra": {"a": [1, "b,c"]}, "When": None},
    {"Name": 'say "hi", then\r\nleave', "Count": -7, "Ratio": 1e-07, "Flag": False, "Extra": [], "When": ""},
    {"Name": "résumé 报告 \t tab", "Count": 2**53 + 1, "Ratio": -0.0, "Flag": None, "Extra": None,
     "When": "2026-11-01T00:00:00.0000000Z"},
    {"Name": "=1+2", "Count": 0, "Ratio": 3.0, "Flag": True, "Extra": {"nested": {"null": None}}, "When": "\n"},
]
SCHEMA = [{"Name": "Name", "Type": "String"}, {"Name": "Count", "Type": "Int64"},
          {"Name": "Ratio", "Type": "Double"}, {"Name": "Flag", "Type": "Boolean"},
          {"Name": "Extra", "Type": "Object"}, {"Name": "When", "Type": "DateTime"}]


def stream_of(rows: list[dict], schema: list[dict] = SCHEMA, api: str = "mde", chunk: int = 7) -> ResultStream:
    """A real ResultStream over a real requests.Response whose body is in memory (read in small chunks)."""
    body = json.dumps({"Schema": schema, "Results": rows}).encode()
    response = requests.Response()
    response.status_code = 200
    response.raw = io.BufferedReader(io.BytesIO(body), buffer_size=chunk)
    return ResultStream(response, APIS[api])


def rendered(fmt: str, rows: list[dict] = AWKWARD_ROWS) -> bytes:
    out = io.BytesIO()
    render(out, fmt, {"id": "job-1", "status": "succeeded"}, stream_of(rows), lambda: NOW)
    return out.getvalue()


# --- formats ----------------------------------------------------------------------------------------------------

def test_json_is_the_whole_envelope_with_the_rows_as_the_service_wrote_them():
    document = json.loads(rendered("json"))
    assert document["results"] == AWKWARD_ROWS
    assert (document["id"], document["row_count"], document["truncated"]) == ("job-1", 4, False)
    assert document["schema"][0] == {"name": "Name", "type": "String"}


def test_ndjson_is_one_row_per_line():
    lines = rendered("ndjson").decode().splitlines()
    assert [json.loads(line) for line in lines] == AWKWARD_ROWS


def test_csv_reads_back_with_the_standard_library_to_the_same_values():
    reader = csv.reader(io.StringIO(rendered("csv").decode(), newline=""))
    header, *lines = list(reader)
    assert header == [c["Name"] for c in SCHEMA]
    assert len(lines) == len(AWKWARD_ROWS)
    for line, row in zip(lines, AWKWARD_ROWS, strict=True):
        assert line[0] == row["Name"]                       # commas, quotes, CR LF and unicode survive quoting
        assert int(line[1]) == row["Count"] and float(line[2]) == row["Ratio"]
        assert line[3] == {True: "true", False: "false", None: ""}[row["Flag"]]
        assert (json.loads(line[4]) if line[4] else None) == row["Extra"]
        assert line[5] == (row["When"] or "")


@pytest.mark.parametrize(("value", "cell"), [
    (None, ""), ("", ""), ("text", "text"), (True, "true"), (False, "false"), (0, "0"), (-12, "-12"),
    (0.5, "0.5"), ({"a": [1, None]}, '{"a":[1,null]}'), ([], "[]"), ({"é": "报"}, '{"é":"报"}'),
])
def test_a_csv_cell_is_the_value_as_text_and_dynamic_values_as_json(value, cell):
    assert csv_cell(value) == cell


def test_csv_of_an_empty_result_is_its_header():
    assert rendered("csv", rows=[]) == b"Name,Count,Ratio,Flag,Extra,When\r\n"


def test_a_lone_surrogate_from_the_service_is_kept_as_an_escape_in_json():
    assert json.loads(dumps({"s": "a\ud800b"})) == {"s": "a\ud800b"}


@pytest.mark.parametrize(("fmt", "compressed", "name"), [
    ("json", False, "job-1.json"), ("ndjson", False, "job-1.ndjson"), ("csv", False, "job-1.csv"),
    ("json", True, "job-1.json.gz"), ("csv", True, "job-1.csv.gz"),
])
def test_file_names_follow_the_format_and_compression(fmt, compressed, name):
    assert file_name("job-1", fmt, gzip=compressed) == name


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_gzip_output_decompresses_to_the_plain_rendering(fmt):
    plain = rendered(fmt)
    out = io.BytesIO()
    writer = GzipWriter(out)
    render(writer, fmt, {"id": "job-1", "status": "succeeded"}, stream_of(AWKWARD_ROWS), lambda: NOW)
    writer.finish()
    assert gzip.decompress(out.getvalue()) == plain
    assert writer.bytes_in == len(plain)


# --- spilling and fitting ---------------------------------------------------------------------------------------

class Collected(io.BytesIO):
    opened = 0


@pytest.mark.parametrize(("writes", "limit", "spilled"), [
    ([b"abc", b"def"], 6, False),     # exactly the limit still fits
    ([b"abc", b"defg"], 6, True),
    ([b"x" * 10], 3, True),
    ([], 0, False),
])
def test_a_spilling_writer_keeps_up_to_its_limit_and_moves_everything_past_it(writes, limit, spilled):
    blob = Collected()
    writer = SpillingWriter(limit, lambda: blob)
    for data in writes:
        writer.write(data)
    assert (writer.blob is not None) == spilled
    assert (blob.getvalue() if spilled else writer.inline()) == b"".join(writes)


ENVELOPE = {"id": "j", "status": "succeeded", "query": "q" * 3000, "context": {"c": "x" * 2000},
            "results_url": "https://a/b?sig=s", "row_count": 5, "schema": [{"name": "A", "type": "String"}]}


@pytest.mark.parametrize(("limit", "omitted"), [
    (100_000, None),
    (3000, ["query"]),
    (500, ["query", "context"]),
    (10, ["query", "context", "schema"]),
])
def test_an_envelope_too_big_for_its_limit_drops_optional_fields_and_names_them(limit, omitted):
    document = json.loads(fit_envelope(dict(ENVELOPE), limit))
    assert document.get("omitted") == omitted
    assert (document["id"], document["results_url"], document["row_count"]) == ("j", "https://a/b?sig=s", 5)


# --- signing ----------------------------------------------------------------------------------------------------

def test_an_account_key_link_is_read_only_and_expires_when_asked():
    expiry = NOW + timedelta(hours=1)
    query = parse_qs(AccountKeySigner("acct", "a2V5a2V5").sas("results", "links/j.json", expiry))
    assert query["sp"] == ["r"] and query["sr"] == ["b"]
    assert query["se"] == ["2026-11-20T13:00:00Z"]
    assert "sig" in query


def fake_delegation_key(start: datetime, expiry: datetime) -> UserDelegationKey:
    key = UserDelegationKey()
    key.signed_oid, key.signed_tid = "00000000-0000-0000-0000-0000000000aa", "00000000-0000-0000-0000-0000000000bb"
    key.signed_start, key.signed_expiry = start.strftime("%Y-%m-%dT%H:%M:%SZ"), expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    key.signed_service, key.signed_version, key.value = "b", "2025-01-05", "a2V5a2V5a2V5"
    return key


def test_a_delegation_key_is_fetched_once_and_reused_until_a_link_would_outlive_it():
    fetched: list[tuple[datetime, datetime]] = []

    def fetch(start: datetime, expiry: datetime) -> UserDelegationKey:
        fetched.append((start, expiry))
        return fake_delegation_key(start, expiry)

    signer = DelegationKeySigner("acct", fetch, lambda: NOW)
    first = parse_qs(signer.sas("results", "links/a.json", NOW + timedelta(hours=1)))
    signer.sas("results", "links/b.json", NOW + timedelta(hours=2))
    assert len(fetched) == 1 and fetched[0][0] < NOW and fetched[0][1] >= NOW + timedelta(hours=6)
    assert first["skoid"] == ["00000000-0000-0000-0000-0000000000aa"] and first["sp"] == ["r"]
    signer.sas("results", "links/c.json", NOW + timedelta(days=2))
    assert len(fetched) == 2 and fetched[1][1] == NOW + timedelta(days=2)


@pytest.mark.parametrize(("storage", "kind"), [
    (StorageConfig(connection_string="AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/a"),
     AccountKeySigner),
    (StorageConfig(connection_string="BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=x"),
     type(None)),
    (StorageConfig(queue_url="https://a.queue.core.windows.net", blob_url="https://a.blob.core.windows.net"),
     DelegationKeySigner),
])
def test_the_signer_follows_the_storage_connection(storage, kind):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient("https://a.blob.core.windows.net", credential=None)
    assert isinstance(signer_for(storage, service, lambda: NOW), kind)


# --- settings ---------------------------------------------------------------------------------------------------

def test_large_result_settings_have_defaults():
    settings = load_settings(STORAGE)
    assert settings.webhook_max_bytes == 1_000_000
    assert settings.link_lifetime_seconds == 3600


def test_queue_and_gzip_destinations_are_read_from_settings():
    settings = load_settings({**STORAGE, "HUNT_LINK_LIFETIME": "15m", "HUNT_WEBHOOK_MAX_BYTES": "65536",
                              "HUNT_DESTINATIONS": json.dumps({
                                  "q": {"type": "queue", "queue": "hunt-results-q"},
                                  "zipped": {"type": "blob", "container": "hunt-results", "gzip": True}})})
    assert (settings.link_lifetime_seconds, settings.webhook_max_bytes) == (900, 65536)
    assert (settings.destinations["q"].type, settings.destinations["q"].queue) == ("queue", "hunt-results-q")
    assert settings.destinations["zipped"].gzip is True


@pytest.mark.parametrize(("extra", "message"), [
    ({"HUNT_LINK_LIFETIME": "8d"}, "HUNT_LINK_LIFETIME"),
    ({"HUNT_LINK_LIFETIME": "soon"}, "HUNT_LINK_LIFETIME"),
    ({"HUNT_WEBHOOK_MAX_BYTES": "1MB"}, "HUNT_WEBHOOK_MAX_BYTES"),
    ({"HUNT_DESTINATIONS": '{"q": {"type": "queue", "queue": "Bad_Name"}}'}, "'queue' must be a valid queue name"),
    ({"HUNT_DESTINATIONS": '{"b": {"type": "blob", "container": "ok-name", "gzip": "yes"}}'}, "'gzip' must be"),
])
def test_malformed_large_result_settings_are_explained(extra, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({**STORAGE, **extra})
