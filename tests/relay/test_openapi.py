"""schemas/openapi.json describes the HTTP API as the handlers answer it: the hunt request in it is the message
schema's, and schemathesis, run against the real portable server over the local stack, finds no 5xx and no response
that does not match the description."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.app.http_api import HuntApi
from shared.app.http_server import ApiServer
from tests.relay.conftest import RelayStack

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "schemas" / "openapi.json"
KEY = "openapi-key-0123456789abcdef"


def test_the_openapi_hunt_request_is_the_message_schema():
    document = json.loads(OPENAPI.read_text())
    message = json.loads((ROOT / "schemas" / "hunt-request.v1.schema.json").read_text())
    embedded = json.loads(json.dumps(document["components"]["schemas"]["HuntRequest"]).replace(
        "#/components/schemas/HuntRequest/$defs/", "#/$defs/"))
    assert embedded == {k: v for k, v in message.items() if k not in ("$schema", "$id")}
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {"/api/hunts", "/api/hunts/{id}"}


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_undocumented_response(relay_stack: RelayStack,
                                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("API_KEY_MAIN", KEY)
    relay = relay_stack.make(HUNT_API_KEYS="API_KEY_MAIN", API_KEY_MAIN=KEY)
    server = ApiServer(HuntApi(relay), port=0).start()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", str(OPENAPI), "--url", server.url,
             "--header", f"x-functions-key: {KEY}", "--checks", "not_a_server_error,status_code_conformance,"
             "content_type_conformance,response_headers_conformance,response_schema_conformance",
             "--max-examples", "30", "--seed", "7", "--generation-deterministic", "--no-color"],
            cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        server.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Tested: 4" in run.stdout and " generated, " in run.stdout   # every operation was exercised
