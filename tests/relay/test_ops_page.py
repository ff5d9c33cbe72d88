"""The ops page in headless Chromium (Debian's chromium and chromium-driver, driven by Selenium) over a running
stack that has delivered, throttled and failed hunts, a webhook whose circuit is open and a kept delivery: what
it shows is read from the rendered page, and a screenshot is saved under the test's temporary folder. Also: the
page is behind the API's auth, shows a tenant's key only its tenant, and holds no row, query or secret.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from sandbox.dataset import KNOWN_DEVICE_ID
from sandbox.webhook_receiver import WebhookReceiver
from shared.app.http_api import HuntApi
from shared.app.http_server import ApiServer
from tests.relay.conftest import RelayStack

KEY = "ops-page-key-" + uuid.uuid4().hex
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
QUERY = "DeviceProcessEvents | where DeviceId == '" + KNOWN_DEVICE_ID + "' | take 2"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("Chromium and ChromeDriver are missing: `make setup` installs Debian's chromium and "
                    "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                 "--window-size=1280,1400", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def hunt(relay, job: str, **fields) -> None:  # type: ignore[no-untyped-def]
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, **fields}))


def handle_visible(relay) -> None:  # type: ignore[no-untyped-def]
    """Handles the queue's visible messages, one at a time, until none is visible (delayed copies stay)."""
    while True:
        messages = list(relay.hunt_queue.receive_messages(max_messages=1, visibility_timeout=60))
        if not messages:
            return
        for message in messages:
            relay.handle(str(message.content).encode(), message_id=message.id, dequeue_count=1)
            relay.hunt_queue.delete_message(message)


def test_the_ops_page_shows_queues_states_quota_failures_kept_results_and_open_circuits(
        relay_stack: RelayStack, webhook_receiver: WebhookReceiver, browser: webdriver.Chrome, tmp_path: Path):
    sandbox = relay_stack.sandbox
    relay = relay_stack.make(
        HUNT_API_KEYS="OPS_KEY", OPS_KEY=KEY, HUNT_QUOTA_WINDOWS="10/60s", HUNT_BREAKER_FAILURES="1",
        HUNT_BREAKER_COOL_OFF="1h", HUNT_MAX_ATTEMPTS="2",
        HUNT_DESTINATIONS=json.dumps({"archive": {"type": "blob", "container": relay_stack.results_container},
                                      "hook": {"type": "webhook", "url": webhook_receiver.url + "/hook"}}),
        HUNT_DEFAULT_DESTINATION="archive")
    tag = uuid.uuid4().hex[:6]
    for n in range(3):
        hunt(relay, f"ok-{tag}-{n}")
    hunt(relay, f"bad-{tag}", query="NoSuchTable | take 1")
    webhook_receiver.default_status = 503
    hunt(relay, f"hook-{tag}", destination="hook")   # the webhook fails once: its circuit opens, the body is kept
    handle_visible(relay)   # (a drain would wait an hour for the held delivery's copy)
    sandbox.knobs.quota.calls_per_window = 0        # the next hunt is throttled: the gate pauses
    hunt(relay, f"slow-{tag}")
    [message] = relay.hunt_queue.receive_messages(max_messages=1)
    assert relay.handle(str(message.content).encode(), message_id=message.id, dequeue_count=1).cause == "throttled"
    relay.hunt_queue.delete_message(message)
    relay.poison_queue.send_message("a message the host gave up on")

    server = ApiServer(HuntApi(relay), port=0).start()
    try:
        assert requests.get(server.url + "/ops", timeout=10).status_code == 401
        assert requests.get(server.url + "/ops?code=wrong", timeout=10).status_code == 401
        reply = requests.get(server.url + f"/ops?code={KEY}", timeout=10)
        assert reply.status_code == 200 and reply.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in reply.headers["Content-Security-Policy"]
        for text in (QUERY, KNOWN_DEVICE_ID, "NoSuchTable", KEY, webhook_receiver.url):
            assert text not in reply.text
        assert "<script" not in reply.text and "http://" not in reply.text.replace(server.url, "")

        browser.get(server.url + f"/ops?code={KEY}")
        assert browser.title == "Hunt Relay: operations"

        def text(css: str) -> str:
            return browser.find_element(By.CSS_SELECTOR, css).text

        assert text(f'[data-queue="{relay_stack.queue}"]') == "2"   # the throttled copy and the held delivery
        assert text(f'[data-queue="{relay_stack.queue}-poison"]') == "1"
        assert text('[data-state="delivered"]') == "3"
        assert text('[data-state="failed"]') == "1"
        assert text('[data-state="throttled"]') == "1"
        assert text('[data-state="retrying"]') == "1"                         # the held webhook delivery
        gate = browser.find_element(By.CSS_SELECTOR, '[data-gate="home/mde/60s"]')
        assert gate.get_attribute("data-used") == "6" and gate.get_attribute("data-left") == "4"
        assert "paused until" in text('[data-paused="home/mde"]')
        assert text(f'[data-code="bad-{tag}"]') != ""
        assert browser.find_element(By.CSS_SELECTOR, f'[data-kept="hook-{tag}"]').is_displayed()
        breaker = text('[data-breaker="home.hook"]')
        assert "open" in breaker and "503" in breaker
        svg_bars = browser.find_elements(By.CSS_SELECTOR, "#quota svg")
        assert svg_bars and all(bar.size["width"] > 0 for bar in svg_bars)
        shot = tmp_path / "ops-page.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        server.stop()


def test_a_tenants_key_sees_its_tenant_only(relay_stack: RelayStack):
    app = "a1b2c3d4-0000-4000-8000-00000000abcd"
    tenants = {name: {"tenant_id": f"3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c700{n}", "auth": "federated", "client_id": app,
                      "api": "graph", "destinations": [f"{name}-out"]}
               for n, name in enumerate(("contoso", "fabrikam"), start=1)}
    own_key, every_key = "key-c-" + uuid.uuid4().hex, "key-a-" + uuid.uuid4().hex
    relay = relay_stack.make(
        HUNT_TENANTS=json.dumps(tenants), HUNT_API="graph",
        HUNT_DESTINATIONS=json.dumps({f"{name}-out": {"type": "blob", "container": relay_stack.results_container}
                                      for name in tenants}),
        HUNT_API_KEYS="KEY_C:contoso KEY_ALL:*", KEY_C=own_key, KEY_ALL=every_key)
    assert relay.breakers is not None
    relay.breakers.gone("fabrikam.fabrikam-out", "webhook fabrikam-out answered 410 Gone")
    server = ApiServer(HuntApi(relay), port=0).start()
    try:
        own = requests.get(server.url + "/ops", headers={"x-functions-key": own_key}, timeout=10).text
        every = requests.get(server.url + "/ops", headers={"x-functions-key": every_key}, timeout=10).text
    finally:
        server.stop()
    assert "tenants: contoso ·" in own and "fabrikam" not in own
    assert 'data-breaker="fabrikam.fabrikam-out"' in every and 'data-gate="contoso/graph/' in every
