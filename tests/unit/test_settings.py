"""Settings: read once, validated all at once, every problem naming the setting and the fix."""

from __future__ import annotations

import json

import pytest

from shared.errors import SettingsError
from shared.settings import load_settings

STORAGE = {"AzureWebJobsStorage": "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;"
                                  "QueueEndpoint=http://127.0.0.1:1/a"}


def test_defaults_give_a_working_relay_with_a_blob_destination():
    settings = load_settings(STORAGE)
    assert (settings.queue, settings.api, settings.cloud) == ("hunts", "mde", "public")
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


def test_named_destinations_are_parsed_and_webhook_secrets_come_from_their_setting():
    destinations = {"soc": {"type": "webhook", "url": "https://soc.example/hook", "secret_setting": "SOC_SECRET"},
                    "archive": {"type": "blob", "container": "archive", "prefix": "hunts/"}}
    settings = load_settings({**STORAGE, "HUNT_DESTINATIONS": json.dumps(destinations),
                              "HUNT_DEFAULT_DESTINATION": "archive", "SOC_SECRET": "whsec_a whsec_b"})
    assert settings.destinations["soc"].secrets == ("whsec_a", "whsec_b")
    assert settings.destinations["archive"].prefix == "hunts/"
    assert settings.default_destination == "archive"


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", "HUNT_DESTINATIONS is not valid JSON"),
    ('["a"]', "must be a JSON object"),
    ('{"x": {"type": "ftp"}}', "'type' must be 'blob' or 'webhook'"),
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
