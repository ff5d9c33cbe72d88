"""Azure Functions entry points (v2 programming model): wiring only; the relay lives in `shared`."""

import azure.functions as func

from shared.app.functions import handle_hunt_message, handle_poison_message

app = func.FunctionApp()


@app.queue_trigger(arg_name="message", queue_name="%HUNT_QUEUE%", connection="AzureWebJobsStorage")
def run_hunt(message: func.QueueMessage) -> None:
    handle_hunt_message(message.get_body(), message_id=message.id, dequeue_count=message.dequeue_count)


@app.queue_trigger(arg_name="message", queue_name="%HUNT_QUEUE%-poison", connection="AzureWebJobsStorage")
def persist_poison(message: func.QueueMessage) -> None:
    handle_poison_message(message.get_body(), message_id=message.id, dequeue_count=message.dequeue_count)
