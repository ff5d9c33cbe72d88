"""The suite-wide log audit finds each kind of leak it promises to find (so its clean verdict means something)."""

from __future__ import annotations

import pytest

from sandbox.dataset import KNOWN_DEVICE_ID
from tests.log_audit import find_leaks


@pytest.mark.parametrize("line", [
    "DEBUG msal token request client_secret sandbox-secret",
    "DEBUG x token eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJodHRwcyJ9.c2ln",
    'DEBUG urllib3 "GET /c/b.json?sv=1&sig=AbCdEf HTTP/1.1" 200',
    "INFO hook secret whsec_" + "Zm9vYmFyYmF6" * 2,  # built here: no secret-shaped literal in the repo
    "DEBUG headers {'X-IDENTITY-HEADER': 'sandbox'}",
    "DEBUG Authorization: Bearer abcdefghijklmnop",
    f'INFO row {{"DeviceId": "{KNOWN_DEVICE_ID}"}}',
    'INFO body {"ProcessCommandLine": "cmd.exe /c whoami"}',
])
def test_each_kind_of_leak_is_found(line):
    assert find_leaks(line)


@pytest.mark.parametrize("line", [
    'DEBUG urllib3 "POST /hook?sig=*** HTTP/1.1" 202',
    "INFO shared.app.processor hunt job-1: delivered 2 rows to hunt-results/job-1.json",
    "DEBUG Authorization: Bearer ***",
])
def test_scrubbed_or_harmless_lines_pass(line):
    assert find_leaks(line) == []
