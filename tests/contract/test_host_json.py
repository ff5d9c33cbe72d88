"""host.json: the queue trigger settings the relay depends on."""

from __future__ import annotations

import json
from pathlib import Path

from shared.core.settings import SETTINGS

HOST = json.loads((Path(__file__).parents[2] / "host.json").read_text())
QUEUES = HOST["extensions"]["queues"]


def test_the_extension_bundle_is_version_4():
    assert HOST["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}


def test_the_trigger_sees_raw_text_so_plain_and_base64_messages_both_arrive():
    assert QUEUES["messageEncoding"] == "none"


def test_polling_is_short_because_playbooks_wait_on_it():
    hours, minutes, seconds = (int(x) for x in QUEUES["maxPollingInterval"].split(":"))
    assert hours == 0 and minutes == 0 and seconds <= 5


def test_concurrency_is_sized_for_memory_and_poison_follows_five_dequeues():
    assert QUEUES["batchSize"] + QUEUES["newBatchThreshold"] <= 8
    assert QUEUES["maxDequeueCount"] == 5
    default = next(s.default for s in SETTINGS if s.name == "HUNT_MAX_DEQUEUE_COUNT")
    assert default == str(QUEUES["maxDequeueCount"])


def test_the_host_exports_opentelemetry():
    """Functions' OpenTelemetry mode, set at host.json's root (the relay's own spans and metrics go through
    azure-monitor-opentelemetry; infra/app/function-app.bicep sets the worker's setting to match)."""
    assert HOST["telemetryMode"] == "OpenTelemetry"
    assert "telemetryMode" not in HOST.get("logging", {})
