"""Settings: read once, validated all at once, every problem naming the setting and the fix."""

from __future__ import annotations

import base64
import json
import os

import pytest

from shared.app.config import load_settings
from shared.core.errors import SettingsError
from shared.core.settings import SETTINGS

STORAGE = {"AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;"
                                  "QueueEndpoint=http://127.0.0.1:1/a"}


def test_defaults_give_a_working_relay_with_a_blob_destination():
    settings = load_settings(STORAGE)
    assert (settings.queue, settings.api, settings.cloud) == ("hunts", "graph", "public")
    assert settings.auth == "managed_identity"
    assert settings.poison_queue == "hunts-poison"
    assert settings.default_destination == "default"
    assert settings.destinations["default"].container == "hunt-results"


def test_all_problems_are_reported_together_each_naming_its_setting():
    with pytest.raises(SettingsError) as error:
        load_settings({"HUNT_API": "sentinel", "HUNT_CLOUD": "mars", "HUNT_AUTH": "client_secret",
                       "HUNT_MAX_AGE": "forever"})
    text = str(error.value)
    for name in ("AzureWebJobsStorage", "HUNT_API", "HUNT_CLOUD", "AZURE_TENANT_ID", "AZURE_CLIENT_ID",
                 "AZURE_CLIENT_SECRET", "HUNT_MAX_AGE"):
        assert name in text


def test_an_unresolved_key_vault_reference_is_a_missing_secret():
    env = {**STORAGE, "HUNT_AUTH": "client_secret", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c",
           "AZURE_CLIENT_SECRET": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/app/)"}
    with pytest.raises(SettingsError, match="AZURE_CLIENT_SECRET is an unresolved Key Vault reference"):
        load_settings(env)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")


def test_named_destinations_are_parsed_and_webhook_secrets_come_from_their_setting():
    destinations = {"soc": {"type": "webhook", "url": "https://soc.example/hook", "secret_setting": "SOC_SECRET"},
                    "archive": {"type": "blob", "container": "archive", "prefix": "hunts/"}}
    first, second = new_secret(), new_secret()
    settings = load_settings({**STORAGE, "HUNT_DESTINATIONS": json.dumps(destinations),
                              "HUNT_DEFAULT_DESTINATION": "archive", "SOC_SECRET": f"{first} {second}"})
    assert settings.destinations["soc"].secrets == (first, second)
    assert settings.destinations["archive"].prefix == "hunts/"
    assert settings.default_destination == "archive"


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", "HUNT_DESTINATIONS is not valid JSON"),
    ('["a"]', "must be a JSON object"),
    ('{"x": {"type": "ftp"}}', "'type' must be one of 'blob', 'queue', 'webhook'"),
    ('{"x": {"type": "blob", "container": "Bad_Name"}}', "valid blob container name"),
    ('{"x": {"type": "webhook", "url": "https://a.example", "secret_setting": "MISSING"}}', "MISSING is not set"),
])
def test_malformed_destinations_are_explained(value, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({**STORAGE, "HUNT_DESTINATIONS": value})


def test_plain_http_api_base_url_needs_loopback_and_the_loopback_setting():
    with pytest.raises(SettingsError, match="HUNT_API_BASE_URL"):
        load_settings({**STORAGE, "HUNT_API_BASE_URL": "http://127.0.0.1:8080"})
    with pytest.raises(SettingsError, match="HUNT_API_BASE_URL"):
        load_settings({**STORAGE, "HUNT_API_BASE_URL": "http://api.example", "HUNT_ALLOW_LOOPBACK_HTTP": "true"})
    ok = load_settings({**STORAGE, "HUNT_API_BASE_URL": "http://127.0.0.1:8080/", "HUNT_ALLOW_LOOPBACK_HTTP": "true"})
    assert ok.api_base_url == "http://127.0.0.1:8080"


def test_identity_based_storage_needs_no_connection_string():
    settings = load_settings({"AzureWebJobsStorage__accountName": "huntrelay", "AzureWebJobsStorage__clientId": "c1",
                              "AzureWebJobsStorage__credential": "managedidentity"})
    assert settings.storage.queue_url == "https://huntrelay.queue.core.windows.net"
    assert settings.storage.client_id == "c1"


def test_a_webhook_secret_that_is_not_a_whsec_secret_is_a_settings_error_naming_it():
    destinations = {"soc": {"type": "webhook", "url": "https://soc.example/hook", "secret_setting": "SOC_SECRET"}}
    with pytest.raises(SettingsError, match=r"SOC_SECRET: secret #2: webhook secret must start with 'whsec_'"):
        load_settings({**STORAGE, "HUNT_DESTINATIONS": json.dumps(destinations), "SOC_SECRET": new_secret() + " x"})
    with pytest.raises(SettingsError, match=r"HUNT_INLINE_WEBHOOK_SECRETS: secret #1: .*base64"):
        load_settings({**STORAGE, "HUNT_INLINE_WEBHOOK_SECRETS": "whsec_***"})


def test_inline_webhook_secrets_sign_inline_urls():
    secret = new_secret()
    settings = load_settings({**STORAGE, "HUNT_INLINE_WEBHOOK_SECRETS": secret,
                              "HUNT_WEBHOOK_ALLOWED_HOSTS": "hooks.example.com"})
    assert settings.inline_webhook_secrets == (secret,)
    assert secret not in repr(settings)


@pytest.mark.parametrize(("value", "message"), [
    ("not-base64!", "key #1 is not standard base64"),
    (base64.b64encode(b"short").decode(), "key #1 decodes to 5 bytes"),
    (base64.b64encode(os.urandom(32)).decode() + " %%%", "key #2 is not standard base64"),
])
def test_message_keys_must_be_long_random_base64_keys(value, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({**STORAGE, "HUNT_MESSAGE_KEYS": value})


def test_message_keys_are_read_in_order_the_signing_key_first():
    first, second = os.urandom(32), os.urandom(48)
    text = " ".join(base64.b64encode(k).decode() for k in (first, second))
    assert load_settings({**STORAGE, "HUNT_MESSAGE_KEYS": text}).message_keys == (first, second)


def test_a_destination_name_or_queue_with_a_trailing_newline_is_refused():
    with pytest.raises(SettingsError, match=r"HUNT_DESTINATIONS\['soc\\n'\]: a name of letters"):
        load_settings({**STORAGE, "HUNT_DESTINATIONS": json.dumps({"soc\n": {"type": "blob", "container": "abc"}})})
    with pytest.raises(SettingsError, match="'queue' must be a valid queue name"):
        load_settings({**STORAGE, "HUNT_DESTINATIONS": json.dumps({"q": {"type": "queue", "queue": "out\n"}})})


BOOLEANS = ["HUNT_QUOTA_GATE", "HUNT_ALLOW_RAW_QUERIES", "HUNT_ALLOW_LOOPBACK_HTTP"]


@pytest.mark.parametrize("name", BOOLEANS)
@pytest.mark.parametrize(("value", "expected"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("On", True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("OFF", False),
])
def test_every_boolean_setting_takes_the_same_words_in_any_case(name, value, expected):
    assert getattr(load_settings({**STORAGE, name: value}), name.removeprefix("HUNT_").lower()) is expected


@pytest.mark.parametrize("name", BOOLEANS)
@pytest.mark.parametrize("value", ["flase", "truee", "2", "enabled"])
def test_a_boolean_setting_with_a_typo_is_an_error_naming_it_never_a_default(name, value):
    with pytest.raises(SettingsError, match=f"{name}='{value}' is not a boolean"):
        load_settings({**STORAGE, name: value})


def test_use_development_storage_means_azurite_on_its_default_ports():
    settings = load_settings({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    connection = settings.storage.connection_string or ""
    assert "AccountName=devstoreaccount1" in connection
    assert all(f"127.0.0.1:{port}/devstoreaccount1" in connection for port in (10000, 10001, 10002))


def test_the_platform_identity_endpoint_is_read_with_the_settings():
    assert load_settings({**STORAGE, "IDENTITY_ENDPOINT": "http://127.0.0.1:41234/msi"}).identity_endpoint == \
        "http://127.0.0.1:41234/msi"
    assert load_settings({**STORAGE, "MSI_ENDPOINT": "http://127.0.0.1:1/x"}).identity_endpoint == "http://127.0.0.1:1/x"
    assert load_settings(STORAGE).identity_endpoint is None


def test_every_default_lives_in_the_settings_table():
    settings = load_settings(STORAGE)
    defaults = {s.name: s.default for s in SETTINGS}
    assert (settings.queue, settings.results_container, settings.gate_table, str(settings.max_attempts),
            settings.log_level) == (defaults["HUNT_QUEUE"], defaults["HUNT_RESULTS_CONTAINER"],
                                    defaults["HUNT_GATE_TABLE"], defaults["HUNT_MAX_ATTEMPTS"],
                                    defaults["HUNT_LOG_LEVEL"])


def test_graph_is_the_default_api_and_legacy_hunts_are_routed_automatically():
    settings = load_settings(STORAGE)
    assert (settings.api, settings.legacy_apis) == ("graph", "auto")


@pytest.mark.parametrize("value", ["auto", "graph", "legacy"])
def test_the_legacy_api_mode_is_one_of_three(value):
    assert load_settings({**STORAGE, "HUNT_LEGACY_APIS": value}).legacy_apis == value


def test_a_legacy_api_mode_with_a_typo_is_an_error():
    with pytest.raises(SettingsError, match="HUNT_LEGACY_APIS='grpah' is not allowed"):
        load_settings({**STORAGE, "HUNT_LEGACY_APIS": "grpah"})


def test_the_running_time_budget_and_the_breaker_settings_are_read_and_typos_refused():
    settings = load_settings(STORAGE)
    assert settings.runtime_budget == ((600.0, 3600), (10800.0, 86400))   # mde's documented quota
    assert (settings.breaker, settings.breaker_failures, settings.breaker_window_seconds,
            settings.breaker_cool_off_seconds) == (True, 5, 300.0, 60.0)
    assert load_settings({**STORAGE, "HUNT_RUNTIME_BUDGET": "15m/15m"}).runtime_budget == ((900.0, 900),)
    assert load_settings({**STORAGE, "HUNT_RUNTIME_BUDGET": "off"}).runtime_budget == ()
    # Queries run in parallel: a budget may exceed its window.
    assert load_settings({**STORAGE, "HUNT_RUNTIME_BUDGET": "2h/1h"}).runtime_budget == ((7200.0, 3600),)
    for bad in ("10m", "10x/1h", "0s/1h", "1h/0s"):
        with pytest.raises(SettingsError, match="HUNT_RUNTIME_BUDGET"):
            load_settings({**STORAGE, "HUNT_RUNTIME_BUDGET": bad})
    with pytest.raises(SettingsError, match="HUNT_BREAKER_FAILURES"):
        load_settings({**STORAGE, "HUNT_BREAKER_FAILURES": "five"})
    with pytest.raises(SettingsError, match="HUNT_BREAKER"):
        load_settings({**STORAGE, "HUNT_BREAKER": "maybe"})


def test_a_tenants_runtime_budget_is_its_own():
    tenants = {"contoso": {"tenant_id": "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", "auth": "federated",
                           "client_id": "a1b2c3d4-0000-4000-8000-00000000abcd", "destinations": ["default"],
                           "runtime_budget": "15s/30s"}}
    settings = load_settings({**STORAGE, "HUNT_TENANTS": json.dumps(tenants)})
    assert settings.tenants["contoso"].runtime_budget == ((15.0, 30),)
    tenants["contoso"]["runtime_budget"] = "lots"
    with pytest.raises(SettingsError, match=r"contoso.*runtime_budget"):
        load_settings({**STORAGE, "HUNT_TENANTS": json.dumps(tenants)})
