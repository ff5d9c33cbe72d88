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


def test_the_http_triggers_serve_the_front_door_with_function_keys(relay_stack, entry_point):
    """Under function-level auth the host checked the key; the same handlers answer through func.HttpRequest."""
    functions.http_api.cache_clear()
    hunts, hunt = FUNCTIONS["hunts"].get_user_function(), FUNCTIONS["hunt"].get_user_function()
    [binding] = [b for b in FUNCTIONS["hunts"].get_bindings() if b.type == "httpTrigger"]
    assert (binding.route, binding.auth_level) == ("hunts", func.AuthLevel.FUNCTION)
    body = json.dumps({"id": "fn-http", "query": "DeviceInfo | take 3", "api": "m365d"}).encode()

    submitted = hunts(func.HttpRequest("POST", "https://relay.example/api/hunts", body=body,
                                       headers={"Content-Type": "application/json"}))
    entry_point.get_user_function()(func.QueueMessage(id="m-1", body=body))
    done = hunt(func.HttpRequest("GET", "https://relay.example/api/hunts/fn-http", body=b"",
                                 route_params={"job_id": "fn-http"}))

    assert submitted.status_code == 202
    assert submitted.headers["Location"] == "https://relay.example/api/hunts/fn-http"
    assert done.status_code == 200 and json.loads(done.get_body())["row_count"] == 3
    functions.http_api.cache_clear()


def test_the_timer_trigger_runs_the_scheduler_every_minute(relay_stack, entry_point, tmp_path):
    (tmp_path / "every-five.json").write_text(json.dumps({"every": "PT5M", "query": "DeviceInfo | take 1"}))
    relay_stack.monkeypatch.setenv("HUNT_SCHEDULES_DIR", str(tmp_path))
    functions.relay.cache_clear()
    [binding] = [b for b in FUNCTIONS["run_schedules"].get_bindings() if b.type == "timerTrigger"]
    assert binding.schedule == "0 * * * * *"

    FUNCTIONS["run_schedules"].get_user_function()(None)
    FUNCTIONS["run_schedules"].get_user_function()(None)   # the next minute's fire: nothing twice

    messages = list(functions.relay().hunt_queue.receive_messages(messages_per_page=10, max_messages=10))
    assert [json.loads(m.content)["schedule"] for m in messages] == ["every-five"]
