"""Large results end to end over the local stack: every format read back with the standard library and compared
row by row with the sandbox's own data; the row cap; a stream cut midway; links for webhooks and queues (fetched
with a plain GET, and expired); the service's own size errors."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sandbox.azurite import Azurite
from shared.app.config import load_settings
from shared.app.relay import Relay
from tests.relay.conftest import RelayStack, drain

# Columns with commas, quotes, backslashes, non-ASCII text, nulls and dynamic values (csv's hard cases).
BIG_QUERY = ("DeviceProcessEvents | order by ReportId asc | project Timestamp, FolderPath, FileSize, "
             "InitiatingProcessCommandLine, InitiatingProcessVersionInfoProductName, "
             "InitiatingProcessParentCreationTime, ReportId, AdditionalFields")
AWKWARD_QUERY = ('DeviceProcessEvents | order by ReportId asc | take 300 | extend Note = "two\\nlines, a \\"quote\\"'
                 '\\r\\nand é 报告", Flag = true, Ratio = 0.25, Empty = "", Nothing = dynamic(null), '
                 'List = dynamic([1, "a,b", {"k": "v"}])')
ROW_CAP = 100_000


def enqueue(relay: Relay, **body: Any) -> str:
    body.setdefault("id", "job-" + uuid.uuid4().hex[:12])
    relay.hunt_queue.send_message(json.dumps(body))
    return str(body["id"])


def sandbox_rows(sandbox: Any, query: str, api: str = "mde") -> Iterator[dict[str, Any]]:
    """The rows the sandbox's engine gives for the query, as the service writes them."""
    for row in sandbox.engine.run(query, api).rows:
        yield json.loads(row)


def assert_cell_matches(cell: str, value: Any) -> None:
    """csv's oracle: null and "" are empty, dynamic values JSON text, booleans true/false, numbers as numbers."""
    if value is None or value == "":
        assert cell == ""
    elif isinstance(value, dict | list):
        assert json.loads(cell) == value
    elif isinstance(value, bool):
        assert cell == ("true" if value else "false")
    elif isinstance(value, int | float):
        assert float(cell) == value and (not isinstance(value, int) or int(cell) == value)
    else:
        assert cell == value


def assert_same_rows(data: bytes, fmt: str, expected: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
    """Reads a result back with the standard library and compares it row by row; returns the json envelope."""
    text = data.decode("utf-8")
    if fmt == "json":
        document = json.loads(text)
        for got, want in zip(document["results"], expected, strict=True):
            assert got == want
        return dict(document)
    if fmt == "ndjson":
        for line, want in zip(text.splitlines(), expected, strict=True):
            assert json.loads(line) == want
        return None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    count = 0
    for line, want in zip(reader, expected, strict=True):
        assert header == list(want)
        for cell, name in zip(line, header, strict=True):
            assert_cell_matches(cell, want[name])
        count += 1
    assert count > 0
    return None


# --- 150,000 rows requested, 100,000 delivered -------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_sandbox() -> Iterator[Any]:
    from sandbox.server import Sandbox

    server = Sandbox(rows=150_000).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def big_stack(azurite: Azurite, big_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> RelayStack:
    big_sandbox.reset()
    big_sandbox.knobs.quota.calls_per_window = 1000
    return RelayStack(azurite, big_sandbox, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_150000_rows_requested_arrive_as_100000_marked_truncated_and_equal_to_the_sandbox_s(big_stack, fmt):
    [(count,)] = [tuple(json.loads(r).values()) for r in big_stack.sandbox.engine.run(
        "DeviceProcessEvents | count", "mde", row_cap=1_000_000).rows]
    assert count == 150_000
    relay = big_stack.make()
    job = enqueue(relay, query=BIG_QUERY, api="mde", format=fmt)
    stats = drain(relay)
    assert [(o.status, o.rows) for o in stats.outcomes] == [("delivered", ROW_CAP)]
    blob = big_stack.blob_service().get_blob_client(big_stack.results_container, f"{job}.{fmt}")
    document = assert_same_rows(blob.download_blob().readall(), fmt, sandbox_rows(big_stack.sandbox, BIG_QUERY))
    if document is not None:
        assert (document["row_count"], document["truncated"]) == (ROW_CAP, True)
        assert "100000 rows" in document["truncated_hint"] and "narrow the query" in document["truncated_hint"]
    else:
        metadata = blob.get_blob_properties().metadata
        assert (metadata["hunt_row_count"], metadata["hunt_truncated"], metadata["hunt_id"]) == ("100000", "true",
                                                                                                 job)


# --- each format and gzip, awkward values --------------------------------------------------------------------------

@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_each_format_round_trips_with_awkward_values_plain_and_gzipped(relay_stack: RelayStack, fmt, compressed):
    destinations = {"store": {"type": "blob", "container": relay_stack.results_container, "prefix": "out/",
                              "gzip": compressed}}
    relay = relay_stack.make(HUNT_DESTINATIONS=json.dumps(destinations), HUNT_DEFAULT_DESTINATION="store")
    job = enqueue(relay, query=AWKWARD_QUERY, api="m365d", format=fmt, context={"ticket": "T-1"})
    assert [o.status for o in drain(relay).outcomes] == ["delivered"]
    name = f"out/{job}.{fmt}" + (".gz" if compressed else "")
    assert relay_stack.results() == [name]
    blob = relay_stack.blob_service().get_blob_client(relay_stack.results_container, name)
    properties = blob.get_blob_properties()
    assert properties.content_settings.content_type.split(";")[0] == {
        "json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv"}[fmt]
    assert properties.content_settings.content_encoding == ("gzip" if compressed else None)
    data = blob.download_blob(decompress=False).readall()     # the bytes at rest, not decoded on the way
    if compressed:
        data = gzip.decompress(data)
    document = assert_same_rows(data, fmt, sandbox_rows(relay_stack.sandbox, AWKWARD_QUERY, "m365d"))
    if document is not None:
        assert (document["row_count"], document["truncated"], document["context"]) == (300, False, {"ticket": "T-1"})
        assert document["stats"]["dataset_statistics"][0]["table_row_count"] == 300    # m365d's own Stats
    else:
        assert properties.metadata["hunt_row_count"] == "300" and properties.metadata["hunt_status"] == "succeeded"


# --- a stream cut midway ---------------------------------------------------------------------------------------

def test_a_stream_cut_midway_leaves_no_blob_under_the_final_name_and_is_delivered_on_retry(relay_stack):
    relay = Relay(load_settings(relay_stack.env()), rand=lambda: 0.0)   # no backoff jitter: retry at once
    relay.ensure_resources()
    query = "DeviceProcessEvents | order by ReportId asc | take 1000"
    job = enqueue(relay, query=query, api="mde")
    relay_stack.sandbox.knobs.faults.reset_next = 1
    [message] = relay.hunt_queue.receive_messages(max_messages=1)
    with pytest.MonkeyPatch.context() as patch:
        # Small pieces and blocks, so that some are staged before the cut (the sandbox cuts after 32 KiB of the
        # body).
        patch.setattr("shared.core.result_formats.WRITE_BYTES", 1024)
        patch.setattr("shared.adapters.blob_writer.BLOCK_BYTES", 8 * 1024)
        outcome = relay.handle(message.content.encode(), message_id=message.id, dequeue_count=1)
    relay.hunt_queue.delete_message(message)

    assert outcome.status == "requeued" and "the result stream broke" in outcome.detail
    blob = relay_stack.blob_service().get_blob_client(relay_stack.results_container, f"{job}.json")
    assert relay_stack.results() == []
    committed, uncommitted = blob.get_block_list("all")
    assert committed == [] and len(uncommitted) >= 1        # blocks were staged, none became a blob

    stats = drain(relay)
    assert [o.status for o in stats.outcomes] == ["delivered"]
    assert relay_stack.results() == [f"{job}.json"]
    document = assert_same_rows(blob.download_blob().readall(), "json", sandbox_rows(relay_stack.sandbox, query))
    assert document is not None and (document["attempts"], document["row_count"]) == (2, 1000)
    assert relay_stack.dead_letters() == []


def test_a_block_that_fails_to_upload_in_the_background_fails_the_commit(azurite: Azurite):
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    from shared.adapters.blob_writer import StagedBlobWriter

    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        "missing-" + uuid.uuid4().hex[:12])
    writer = StagedBlobWriter(container.get_blob_client("x.json"), block_bytes=1024)
    writer.write(b"x" * 4096)      # a block goes out in the background, to a container that does not exist
    with pytest.raises(ResourceNotFoundError):
        writer.commit("application/json")


def test_a_block_damaged_on_the_way_is_refused_by_storage_and_fails_the_commit(azurite: Azurite):
    """Each staged block carries its MD5: storage checks it on arrival, so bytes changed in transit (here by the
    transport, after the checksum was taken) are refused rather than stored in the result."""
    from azure.core.exceptions import HttpResponseError
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient

    from shared.adapters.blob_writer import StagedBlobWriter

    class DamagingTransport(RequestsTransport):
        def send(self, request, **kwargs):  # type: ignore[no-untyped-def, override]
            if request.method == "PUT" and "comp=blocklist" not in request.url and isinstance(request.data, bytes):
                request.data = b"y" + request.data[1:]     # the same length, one byte changed
            return super().send(request, **kwargs)

    service = BlobServiceClient.from_connection_string(azurite.connection_string, transport=DamagingTransport())
    container = service.get_container_client("damaged-" + uuid.uuid4().hex[:12])
    container.create_container()
    staged = StagedBlobWriter(container.get_blob_client("staged.json"), block_bytes=1024)
    staged.write(b"x" * 4096)
    with pytest.raises(HttpResponseError) as refused:
        staged.commit("application/json")
    assert refused.value.error_code == "Md5Mismatch"
    whole = StagedBlobWriter(container.get_blob_client("whole.json"), block_bytes=1024)
    whole.write(b"x" * 100)     # under one block: a single Put Blob
    with pytest.raises(HttpResponseError) as refused:
        whole.commit("application/json")
    assert refused.value.error_code == "Md5Mismatch"
    assert [blob.name for blob in container.list_blobs()] == []


# --- links -----------------------------------------------------------------------------------------------------

LINK_QUERY = "DeviceProcessEvents | order by ReportId asc | take 200"     # about 600 KB of JSON


def link_of(envelope: dict[str, Any]) -> str:
    url = str(envelope["results_url"])
    assert "results" not in envelope and "sig=" in url
    return url


def test_a_webhook_above_the_size_limit_gets_a_link_that_returns_the_full_result(relay_stack, webhook_receiver,
                                                                                 caplog):
    caplog.set_level(logging.DEBUG)
    relay = relay_stack.make(**relay_stack.with_webhook(webhook_receiver.url, HUNT_WEBHOOK_MAX_BYTES="20000"))
    job = enqueue(relay, query=LINK_QUERY, api="mde", context={"incident": 9})
    assert [o.status for o in drain(relay).outcomes] == ["delivered"]
    [delivery] = webhook_receiver.requests
    assert len(delivery.body) <= 20_000
    envelope = json.loads(delivery.body)
    url = link_of(envelope)
    assert (envelope["id"], envelope["status"], envelope["row_count"], envelope["truncated"]) == (
        job, "succeeded", 200, False)
    assert envelope["context"] == {"incident": 9} and envelope["results_format"] == "json"
    assert [c["name"] for c in envelope["schema"]][:2] == ["Timestamp", "DeviceId"]
    assert urlsplit(url).path.endswith(f"/{relay_stack.results_container}/links/{job}.json")

    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200
    full = assert_same_rows(fetched.content, "json", sandbox_rows(relay_stack.sandbox, LINK_QUERY))
    assert full is not None and full["row_count"] == 200 and full["id"] == job
    assert requests.put(url, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10).status_code == 403
    # The SAS never reaches a log: not the relay's own lines, not the signature anywhere.
    assert parse_qs(urlsplit(url).query)["sig"][0] not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("shared") and "sig=" in r.getMessage()]


def test_a_link_stops_working_once_its_lifetime_is_over(relay_stack, webhook_receiver):
    relay = relay_stack.make(**relay_stack.with_webhook(webhook_receiver.url, HUNT_WEBHOOK_MAX_BYTES="20000",
                                                        HUNT_LINK_LIFETIME="2s"))
    job = enqueue(relay, query=LINK_QUERY, api="mde")
    drain(relay)
    url = link_of(json.loads(webhook_receiver.requests[0].body))
    expiry = datetime.fromisoformat(parse_qs(urlsplit(url).query)["se"][0].replace("Z", "+00:00"))
    time.sleep(max(0.0, expiry.timestamp() - time.time()) + 1.5)
    expired = requests.get(url, timeout=10)
    assert expired.status_code == 403 and b"AuthorizationFailure" in expired.content
    # The blob is still there: only the link has expired.
    blob = relay_stack.blob_service().get_blob_client(relay_stack.results_container, f"links/{job}.json")
    assert json.loads(blob.download_blob().readall())["row_count"] == 200


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_webhook_hunt_in_ndjson_or_csv_gets_the_envelope_with_a_link_in_that_format(relay_stack, webhook_receiver,
                                                                                     fmt):
    relay = relay_stack.make(**relay_stack.with_webhook(webhook_receiver.url))
    query = "DeviceProcessEvents | order by ReportId asc | take 5"
    job = enqueue(relay, query=query, api="mde", format=fmt)
    drain(relay)
    envelope = json.loads(webhook_receiver.requests[0].body)
    assert (envelope["id"], envelope["row_count"], envelope["results_format"]) == (job, 5, fmt)
    fetched = requests.get(link_of(envelope), timeout=10)
    assert fetched.status_code == 200
    assert_same_rows(fetched.content, fmt, sandbox_rows(relay_stack.sandbox, query))


# --- queue destination -----------------------------------------------------------------------------------------

@pytest.fixture
def queue_destination(relay_stack: RelayStack) -> tuple[Relay, Any]:
    name = "out-" + uuid.uuid4().hex[:12]
    relay = relay_stack.make(HUNT_DESTINATIONS=json.dumps({"q": {"type": "queue", "queue": name}}),
                             HUNT_DEFAULT_DESTINATION="q")
    out = relay.queue_service.get_queue_client(name)
    assert out.get_queue_properties() is not None  # created by the relay's ensure_resources
    return relay, out


def received(out: Any) -> dict[str, Any]:
    [message] = out.receive_messages(max_messages=32)
    assert len(message.content.encode("utf-8")) <= 48 * 1024
    return dict(json.loads(message.content))


def test_a_queue_destination_above_48_kb_gets_a_claim_check(relay_stack, queue_destination):
    relay, out = queue_destination
    job = enqueue(relay, query=LINK_QUERY, api="mde")
    assert [o.status for o in drain(relay).outcomes] == ["delivered"]
    claim = received(out)
    assert (claim["id"], claim["status"], claim["row_count"]) == (job, "succeeded", 200)
    fetched = requests.get(link_of(claim), timeout=10)
    assert_same_rows(fetched.content, "json", sandbox_rows(relay_stack.sandbox, LINK_QUERY))


def test_a_queue_destination_gets_a_small_result_whole(relay_stack, queue_destination):
    relay, out = queue_destination
    query = "DeviceProcessEvents | order by ReportId asc | take 3"
    enqueue(relay, query=query, api="mde")
    drain(relay)
    envelope = received(out)
    assert "results_url" not in envelope
    assert envelope["results"] == list(sandbox_rows(relay_stack.sandbox, query))


def test_a_failure_too_big_for_a_queue_message_drops_the_query_and_says_so(relay_stack, queue_destination):
    relay, out = queue_destination
    job = enqueue(relay, query="// " + "x" * 50_000 + "\nDeviceProcessEvents | wherex", api="mde")
    drain(relay)
    failure = received(out)
    assert (failure["id"], failure["status"], failure["error"]["code"]) == (job, "failed", "QueryError")
    assert failure["omitted"] == ["query"] and "query" not in failure


# --- the service's own size errors ------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "code"), [("result_size", "ResultTooLarge"), ("preempted", "QueryPreempted")])
def test_the_service_s_size_errors_end_in_a_failed_envelope_with_a_hint(relay_stack, kind, code):
    relay_stack.sandbox.knobs.faults.size_error, relay_stack.sandbox.knobs.faults.size_error_next = kind, 1
    relay = relay_stack.make()
    job = enqueue(relay, query="DeviceProcessEvents", api="m365d")
    assert [o.status for o in drain(relay).outcomes] == ["failed"]
    failure = relay_stack.read_json(relay_stack.results_container, f"{job}.failed.json")
    assert (failure["status"], failure["error"]["code"], failure["error"]["http_status"]) == ("failed", code, 400)
    assert "narrow the query" in failure["error"]["hint"] and "summarize" in failure["error"]["hint"]
    [record] = relay_stack.dead_letters()
    assert record["reason"] == code
    assert relay_stack.sandbox.counters.calls_to("m365d") == 1
