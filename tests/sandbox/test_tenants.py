"""The sandbox plays several tenants: each with its own data and quota, a multi-tenant app consented in some and not
others, and workload identity federation (a managed identity's token as the app's client assertion), driven by the
real azure-identity."""

from __future__ import annotations

import json

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientAssertionCredential, ManagedIdentityCredential

from sandbox.identity import SYSTEM_IDENTITY_CLIENT_ID
from sandbox.server import Sandbox
from sandbox.tokens import object_id_for

CONTOSO, FABRIKAM = "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7001", "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7002"
MULTI_TENANT_APP = "a1b2c3d4-0000-4000-8000-00000000abcd"
GRAPH = "https://graph.microsoft.com"
QUERY = "DeviceProcessEvents | project ReportId, DeviceName, SHA256 | take 20"


@pytest.fixture
def tenants(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sandbox.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "sandbox")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sandbox.ca_path)
    monkeypatch.setenv("SSL_CERT_FILE", sandbox.ca_path)
    for tenant, seed in ((CONTOSO, 101), (FABRIKAM, 202)):
        sandbox.add_tenant(tenant, seed=seed)
        sandbox.add_app(tenant, MULTI_TENANT_APP, None, ["ThreatHunting.Read.All"])
    sandbox.directory.add_federated_credential(MULTI_TENANT_APP, "https://sts.windows.net/sandbox-tenant/",
                                               object_id_for(SYSTEM_IDENTITY_CLIENT_ID))
    return sandbox


def federated(sandbox: Sandbox, tenant: str) -> ClientAssertionCredential:
    identity = ManagedIdentityCredential()
    return ClientAssertionCredential(
        tenant, MULTI_TENANT_APP, lambda: identity.get_token("api://AzureADTokenExchange/.default").token,
        authority=sandbox.authority)


def hunt_with(sandbox: Sandbox, token: str) -> requests.Response:
    return requests.post(sandbox.api_url + "/v1.0/security/runHuntingQuery", json={"Query": QUERY}, timeout=30,
                         headers={"Authorization": "Bearer " + token})


def test_a_federated_sign_in_gets_a_token_of_the_customer_tenant_and_that_tenant_s_data(tenants: Sandbox):
    rows = {}
    for tenant in (CONTOSO, FABRIKAM):
        token = federated(tenants, tenant).get_token(GRAPH + "/.default").token
        reply = hunt_with(tenants, token)
        assert reply.status_code == 200, reply.text
        rows[tenant] = reply.json()["results"]
    assert rows[CONTOSO] != rows[FABRIKAM]   # another seed: other rows
    assert rows[CONTOSO] == [json.loads(r) for r in tenants.engine_for(CONTOSO).run(QUERY, "graph").rows]
    assert tenants.counters.calls_by_tenant("graph") == {CONTOSO: 1, FABRIKAM: 1}


def test_a_revoked_consent_fails_that_tenant_s_sign_in_and_no_other(tenants: Sandbox):
    tenants.directory.revoke_app(FABRIKAM, MULTI_TENANT_APP)

    with pytest.raises(ClientAuthenticationError) as refused:
        federated(tenants, FABRIKAM).get_token(GRAPH + "/.default")
    assert "AADSTS700016" in str(refused.value)
    assert federated(tenants, CONTOSO).get_token(GRAPH + "/.default").token


def test_an_assertion_without_a_matching_federated_credential_is_refused(tenants: Sandbox):
    tenants.directory.federated.clear()

    with pytest.raises(ClientAuthenticationError) as refused:
        federated(tenants, CONTOSO).get_token(GRAPH + "/.default")
    assert "AADSTS70021" in str(refused.value)


def test_an_assertion_for_another_audience_is_refused(tenants: Sandbox):
    identity = ManagedIdentityCredential()
    credential = ClientAssertionCredential(CONTOSO, MULTI_TENANT_APP,
                                           lambda: identity.get_token(GRAPH + "/.default").token,
                                           authority=tenants.authority)
    with pytest.raises(ClientAuthenticationError) as refused:
        credential.get_token(GRAPH + "/.default")
    assert "AADSTS700212" in str(refused.value)


def test_each_tenant_has_its_own_quota(tenants: Sandbox):
    tenants.knobs.tenant_quotas[CONTOSO] = type(tenants.knobs.quota)(calls_per_window=1, window_seconds=60)
    contoso = federated(tenants, CONTOSO).get_token(GRAPH + "/.default").token
    fabrikam = federated(tenants, FABRIKAM).get_token(GRAPH + "/.default").token

    assert [hunt_with(tenants, contoso).status_code for _ in range(2)] == [200, 429]
    assert [hunt_with(tenants, fabrikam).status_code for _ in range(3)] == [200, 200, 200]


def test_a_tenant_the_sandbox_does_not_serve_is_refused(tenants: Sandbox):
    stranger = "3d6f1a52-0c1e-4a8e-9a61-2f0b5a0c7999"
    token, _ = tenants.issuer.mint(audience=GRAPH, tenant=stranger, client_id=MULTI_TENANT_APP,
                                   roles=["ThreatHunting.Read.All"], lifetime_seconds=60)
    reply = hunt_with(tenants, token)
    assert reply.status_code == 401 and stranger in reply.json()["error"]["message"]


def test_tenants_federated_credentials_and_revocation_over_the_admin_path(sandbox: Sandbox):
    admin = sandbox.api_url + "/_sandbox/"
    assert requests.post(admin + "tenants", json={"tenant_id": CONTOSO, "seed": 5}, timeout=30).status_code == 200
    assert requests.post(admin + "apps", json={"tenant": CONTOSO, "client_id": MULTI_TENANT_APP,
                                               "roles": ["ThreatHunting.Read.All"]}, timeout=30).status_code == 200
    assert requests.post(admin + "federated", json={"client_id": MULTI_TENANT_APP, "issuer": "i", "subject": "s"},
                         timeout=30).status_code == 200
    state = requests.get(admin + "state", timeout=30).json()
    assert CONTOSO in state["tenants"] and state["federated_credentials"][MULTI_TENANT_APP] == [
        {"issuer": "i", "subject": "s"}]
    requests.post(admin + "revoke", json={"tenant": CONTOSO, "client_id": MULTI_TENANT_APP}, timeout=30)
    assert not [a for a in requests.get(admin + "state", timeout=30).json()["apps"] if a["tenant"] == CONTOSO]
    assert requests.post(admin + "knobs", json={"tenant_quotas": {CONTOSO: {"calls_per_window": 2}}},
                         timeout=30).json()["tenant_quotas"][CONTOSO]["calls_per_window"] == 2
