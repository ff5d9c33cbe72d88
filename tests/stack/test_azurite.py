"""Azurite behaves as Azure Storage for the operations the relay depends on, through the real SDKs."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from sandbox.azurite import Azurite


def test_a_message_sent_with_a_visibility_timeout_stays_invisible_until_then(azurite: Azurite, unique_name: str):
    queue = QueueClient.from_connection_string(azurite.connection_string, unique_name)
    queue.create_queue()
    queue.send_message("later", visibility_timeout=2)
    assert list(queue.receive_messages()) == []
    assert queue.get_queue_properties().approximate_message_count == 1
    deadline = time.monotonic() + 10
    received = []
    while not received and time.monotonic() < deadline:
        received = list(queue.receive_messages())
        time.sleep(0.2)
    assert [m.content for m in received] == ["later"]


def test_dequeue_count_rises_each_time_a_message_is_received_again(azurite: Azurite, unique_name: str):
    queue = QueueClient.from_connection_string(azurite.connection_string, unique_name)
    queue.create_queue()
    queue.send_message("again")
    counts = []
    for _ in range(3):
        [message] = list(queue.receive_messages(visibility_timeout=1))
        counts.append(message.dequeue_count)
        queue.update_message(message, visibility_timeout=0)
    assert counts == [1, 2, 3]


def test_a_second_create_only_upload_raises_resource_exists(azurite: Azurite, unique_name: str):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(unique_name)
    container.upload_blob("job.json", b"{}", overwrite=False)
    with pytest.raises(ResourceExistsError):
        container.upload_blob("job.json", b"{}", overwrite=False)


def test_data_survives_a_restart_with_on_disk_persistence(tmp_path, unique_name: str):
    with Azurite(location=tmp_path / "data") as emulator:
        queue = QueueClient.from_connection_string(emulator.connection_string, unique_name)
        queue.create_queue()
        queue.send_message("durable")
        emulator.restart()
        queue = QueueClient.from_connection_string(emulator.connection_string, unique_name)
        assert [m.content for m in queue.receive_messages()] == ["durable"]
