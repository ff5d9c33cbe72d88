"""The real Functions entry point, taken from the app the host would load, invoked with real QueueMessages."""

from __future__ import annotations

import base64
import json

import azure.functions as func
import pytest

import function_app
from shared.app import functions
from tests.relay.conftest import RelayStack

# The app indexes its functions once, as the host does (a second get_functions() refuses duplicate names).
FUNCTIONS = {f.get_function_name(): f for f in function_app.app.get_functions()}


@pytest.fixture
def entry_point(relay_stack: RelayStack):
    for name, value in relay_stack.env().items():
        relay_stack.monkeypatch.setenv(name, value)
    functions.relay.cache_clear()
    yield FUNCTIONS["run_hunt"]
    functions.relay.cache_clear()


@pytest.mark.parametrize(("function", "queue"), [("run_hunt", "%HUNT_QUEUE%"),
                                                 ("persist_poison", "%HUNT_QUEUE%-poison")])
def test_the_triggers_listen_on_the_hunt_queues_with_the_host_storage_connection(function, queue):
    [trigger] = [b for b in FUNCTIONS[function].get_bindings() if b.type == "queueTrigger"]
    assert (trigger.queue_name, trigger.connection) == (queue, "AzureWebJobsStorage")


@pytest.mark.parametrize("encode", [False, True], ids=["plain", "base64"])
def test_a_queue_message_handled_by_the_entry_point_ends_with_results_in_storage(relay_stack, entry_point, encode):
    body = json.dumps({"id": f"fn-{int(encode)}", "query": "DeviceInfo | take 3", "api": "m365d"}).encode()
    message = func.QueueMessage(id="msg-1", body=base64.b64encode(body) if encode else body)
    entry_point.get_user_function()(message)
    result = relay_stack.read_json(relay_stack.results_container, f"fn-{int(encode)}.json")
    assert (result["status"], result["row_count"]) == ("succeeded", 3)
