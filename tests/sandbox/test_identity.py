"""The real azure-identity credentials against the sandbox's managed-identity endpoint and token authority."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential, ManagedIdentityCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from sandbox.identity import SYSTEM_IDENTITY_CLIENT_ID, USER_IDENTITY_CLIENT_ID
from sandbox.server import Sandbox
from tests.sandbox.sandbox_client import secret_credential

MDE_SCOPE = "https://api.securitycenter.microsoft.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def app_service_env(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sandbox.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "sandbox")
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)
    return sandbox


def test_the_system_assigned_identity_gets_a_token_for_the_requested_api(app_service_env: Sandbox) -> None:
    token = ManagedIdentityCredential().get_token(MDE_SCOPE).token

    claims = claims_of(token)
    assert claims["aud"] == "https://api.securitycenter.microsoft.com"
    assert claims["roles"] == ["AdvancedQuery.Read.All"]
    assert claims["tid"] == "sandbox-tenant"
    assert claims["appid"] == SYSTEM_IDENTITY_CLIENT_ID
    assert app_service_env.counters.tokens_issued[SYSTEM_IDENTITY_CLIENT_ID] == 1


def test_the_user_assigned_identity_is_chosen_by_its_client_id(app_service_env: Sandbox) -> None:
    token = ManagedIdentityCredential(client_id=USER_IDENTITY_CLIENT_ID).get_token(GRAPH_SCOPE).token

    assert claims_of(token)["appid"] == USER_IDENTITY_CLIENT_ID
    assert claims_of(token)["roles"] == ["ThreatHunting.Read.All"]
    assert app_service_env.counters.tokens_issued == {USER_IDENTITY_CLIENT_ID: 1}


def test_a_second_managed_identity_token_comes_from_the_credentials_cache(app_service_env: Sandbox) -> None:
    credential = ManagedIdentityCredential()
    first = credential.get_token(MDE_SCOPE)
    second = credential.get_token(MDE_SCOPE)

    assert second.token == first.token
    assert app_service_env.counters.tokens_issued[SYSTEM_IDENTITY_CLIENT_ID] == 1


def test_a_short_lived_managed_identity_token_is_renewed(app_service_env: Sandbox) -> None:
    # msal treats a token with under five minutes left as expired, so a 60 s lifetime forces a renewal.
    app_service_env.knobs.token_lifetime_seconds = 60
    credential = ManagedIdentityCredential()
    first = credential.get_token(MDE_SCOPE)
    second = credential.get_token(MDE_SCOPE)

    assert second.token != first.token
    assert app_service_env.counters.tokens_issued[SYSTEM_IDENTITY_CLIENT_ID] == 2


def test_an_unknown_user_assigned_identity_is_reported_by_the_credential(app_service_env: Sandbox) -> None:
    with pytest.raises(ClientAuthenticationError, match="Unable to load the proper Managed Identity"):
        ManagedIdentityCredential(client_id="not-assigned").get_token(MDE_SCOPE)
    assert app_service_env.counters.calls_to("msi", 400) == 1


def test_a_wrong_identity_header_is_reported_by_the_credential(
    app_service_env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    with pytest.raises(ClientAuthenticationError, match="X-IDENTITY-HEADER"):
        ManagedIdentityCredential().get_token(MDE_SCOPE)
    assert app_service_env.counters.tokens_issued == {}


def test_the_client_secret_credential_gets_a_token_from_the_https_authority(sandbox: Sandbox) -> None:
    token = secret_credential(sandbox).get_token(GRAPH_SCOPE).token

    claims = claims_of(token)
    assert (claims["aud"], claims["tid"], claims["appid"]) == ("https://graph.microsoft.com", "sandbox-tenant",
                                                               "sandbox-client")
    assert claims["roles"] == ["ThreatHunting.Read.All"]
    assert claims["exp"] - claims["iat"] == 3600
    assert sandbox.counters.calls_to("openid", 200) == 1


def test_the_authority_is_trusted_through_requests_ca_bundle(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.identity import ClientSecretCredential

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sandbox.ca_path)
    credential = ClientSecretCredential("sandbox-tenant", "sandbox-client", "sandbox-secret",
                                        authority=sandbox.authority, disable_instance_discovery=True)
    assert credential.get_token(MDE_SCOPE).token
    assert sandbox.counters.tokens_issued["sandbox-client"] == 1


def test_a_second_client_secret_token_comes_from_the_credentials_cache(sandbox: Sandbox) -> None:
    credential = secret_credential(sandbox)
    first = credential.get_token(MDE_SCOPE)
    second = credential.get_token(MDE_SCOPE)

    assert second.token == first.token
    assert sandbox.counters.tokens_issued["sandbox-client"] == 1


def test_an_expired_client_secret_token_is_renewed(sandbox: Sandbox) -> None:
    sandbox.knobs.token_lifetime_seconds = 60
    credential = secret_credential(sandbox)
    first = credential.get_token(MDE_SCOPE)
    second = credential.get_token(MDE_SCOPE)

    assert second.token != first.token
    assert sandbox.counters.tokens_issued["sandbox-client"] == 2


@pytest.mark.parametrize(
    ("tenant", "client_id", "secret", "aadsts"),
    [
        ("sandbox-tenant", "sandbox-client", "wrong-secret", "AADSTS7000215"),
        ("sandbox-tenant", "unknown-client", "sandbox-secret", "AADSTS700016"),
    ],
)
def test_a_wrong_secret_or_unknown_client_is_refused_with_an_aadsts_error(
    sandbox: Sandbox, tenant: str, client_id: str, secret: str, aadsts: str
) -> None:
    with pytest.raises(ClientAuthenticationError, match=aadsts):
        secret_credential(sandbox, tenant, client_id, secret).get_token(MDE_SCOPE)
    assert sandbox.counters.tokens_issued == {}


def test_an_unknown_tenant_is_refused_at_discovery_with_aadsts90002(sandbox: Sandbox) -> None:
    with pytest.raises(ClientAuthenticationError, match="tenant name or GUID"):
        secret_credential(sandbox, tenant="unknown-tenant").get_token(MDE_SCOPE)
    response_text = _discovery_text(sandbox, "unknown-tenant")
    assert "AADSTS90002" in response_text


def _discovery_text(sandbox: Sandbox, tenant: str) -> str:
    import requests

    url = f"{sandbox.authority}/{tenant}/v2.0/.well-known/openid-configuration"
    return requests.get(url, verify=sandbox.ca_path, timeout=10).text


def test_an_app_added_with_fewer_roles_gets_only_those_roles(sandbox: Sandbox) -> None:
    sandbox.add_app("sandbox-tenant", "mde-only", "s3cret", ["AdvancedQuery.Read.All"])

    credential = secret_credential(sandbox, client_id="mde-only", secret="s3cret")
    assert claims_of(credential.get_token(MDE_SCOPE).token)["roles"] == ["AdvancedQuery.Read.All"]
    assert claims_of(credential.get_token(GRAPH_SCOPE).token)["roles"] == []


def _certificate() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sandbox app certificate")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def test_the_certificate_credential_signs_in_with_the_registered_certificate(sandbox: Sandbox) -> None:
    key_pem, cert_pem = _certificate()
    other_key, other_cert = _certificate()
    sandbox.add_app("sandbox-tenant", "cert-app", None, ["ThreatHunting.Read.All"], certificate_pem=cert_pem)

    def credential(pem: bytes) -> CertificateCredential:
        return CertificateCredential("sandbox-tenant", "cert-app", certificate_data=pem, authority=sandbox.authority,
                                     disable_instance_discovery=True, connection_verify=sandbox.ca_path)

    assert claims_of(credential(key_pem + cert_pem).get_token(GRAPH_SCOPE).token)["appid"] == "cert-app"
    with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
        credential(other_key + other_cert).get_token(GRAPH_SCOPE)
    assert sandbox.counters.tokens_issued == {"cert-app": 1}
