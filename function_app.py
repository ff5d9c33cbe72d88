"""Azure Functions entry points (v2 programming model): wiring only; the relay lives in `shared`."""

import os

import azure.functions as func

from shared.app.functions import enqueue_due_slots, handle_http, handle_hunt_message, handle_poison_message

app = func.FunctionApp()


@app.queue_trigger(arg_name="message", queue_name="%HUNT_QUEUE%", connection="AzureWebJobsStorage")
def run_hunt(message: func.QueueMessage) -> None:
    handle_hunt_message(message.get_body(), message_id=message.id, dequeue_count=message.dequeue_count)


@app.queue_trigger(arg_name="message", queue_name="%HUNT_QUEUE%-poison", connection="AzureWebJobsStorage")
def persist_poison(message: func.QueueMessage) -> None:
    handle_poison_message(message.get_body(), message_id=message.id, dequeue_count=message.dequeue_count)


# The HTTP front door (shared.app.http_api): submit, status, result, cancel, with the async request-reply pattern.
# Function keys by default (the host checks them); HUNT_API_KEYS adds the relay's own keys, mapped to tenants.
# HUNT_API_AUTH_LEVEL=anonymous when App Service authentication (Entra ID) guards the app: the relay checks the
# bearer token itself too (HUNT_API_AUDIENCE).
API_AUTH = func.AuthLevel.ANONYMOUS if os.environ.get("HUNT_API_AUTH_LEVEL", "function").lower() == "anonymous" \
    else func.AuthLevel.FUNCTION


@app.route(route="hunts", methods=["GET", "POST"], auth_level=API_AUTH)
def hunts(req: func.HttpRequest) -> func.HttpResponse:
    return handle_http(req)


@app.route(route="hunts/{job_id}", methods=["GET", "DELETE"], auth_level=API_AUTH)
def hunt(req: func.HttpRequest) -> func.HttpResponse:
    return handle_http(req)


# Scheduled hunts (shared.app.scheduler): every minute, the slots of schedules/ that are due, each enqueued once
# however many instances fire.
@app.timer_trigger(schedule="0 * * * * *", arg_name="timer", run_on_startup=False, use_monitor=False)
def run_schedules(timer: func.TimerRequest) -> None:
    enqueue_due_slots()
