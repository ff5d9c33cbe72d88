"""`grant-permission --tenant` and `check-tenant` against the sandbox, with the relay's real settings and the real
azure-identity (no query is run by either)."""

from __future__ import annotations

import argparse
import json

import pytest

from sandbox.identity import SYSTEM_IDENTITY_CLIENT_ID
from sandbox.tokens import object_id_for
from shared.app.tenant_commands import run_check, run_grant
from tests.relay.conftest import RelayStack
from tests.relay.test_tenants import APP, TENANTS, WOODGROVE_SECRET, Tenancy

ADMIN_APP, ADMIN_SECRET = "mssp-admin-app", "mssp-admin-secret"


@pytest.fixture
def configured(relay_stack: RelayStack, webhook_receiver, monkeypatch: pytest.MonkeyPatch) -> Tenancy:
    tenancy = Tenancy(relay_stack, webhook_receiver)
    env = relay_stack.env(HUNT_API="graph", HUNT_DESTINATIONS=json.dumps(tenancy.destinations()),
                          HUNT_TENANTS=json.dumps(tenancy.tenants()), WOODGROVE_SECRET=WOODGROVE_SECRET,
                          AZURE_AUTHORITY_HOST=relay_stack.sandbox.authority, AZURE_TENANT_ID="sandbox-tenant")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return tenancy


def test_check_tenant_reports_the_roles_of_a_federated_sign_in_without_a_query(configured: Tenancy, capsys):
    assert run_check(argparse.Namespace(name="contoso")) == 0

    out = capsys.readouterr().out
    assert TENANTS["contoso"][0] in out and "ThreatHunting.Read.All" in out and "ok:" in out
    assert configured.stack.sandbox.counters.calls_by_tenant() == {}   # no hunting call, no quota


def test_check_tenant_names_the_fix_when_the_consent_is_revoked(configured: Tenancy, capsys):
    configured.stack.sandbox.directory.revoke_app(TENANTS["fabrikam"][0], APP)

    assert run_check(argparse.Namespace(name="fabrikam")) == 2

    err = capsys.readouterr().err
    assert "AADSTS700016" in err and "grant-permission --tenant fabrikam" in err


def test_check_tenant_says_which_role_is_missing(configured: Tenancy, capsys):
    configured.stack.sandbox.add_app(TENANTS["woodgrove"][0], APP, WOODGROVE_SECRET, ["Machine.Read.All"])

    assert run_check(argparse.Namespace(name="woodgrove")) == 1
    assert "missing: ThreatHunting.Read.All" in capsys.readouterr().out


def test_grant_permission_prints_the_consent_url_and_creates_the_federated_credential(configured: Tenancy, capsys):
    from azure.identity import ClientSecretCredential

    sandbox = configured.stack.sandbox
    sandbox.directory.federated.clear()
    sandbox.add_app("sandbox-tenant", ADMIN_APP, ADMIN_SECRET, ["Application.ReadWrite.All"])
    admin = ClientSecretCredential("sandbox-tenant", ADMIN_APP, ADMIN_SECRET, authority=sandbox.authority,
                                   disable_instance_discovery=True)
    principal = object_id_for(SYSTEM_IDENTITY_CLIENT_ID)
    args = argparse.Namespace(tenant="contoso", create_federated_credential=True, principal_id=principal,
                              issuer="https://sts.windows.net/sandbox-tenant/", graph_url=sandbox.api_url)

    assert run_check(argparse.Namespace(name="contoso")) == 2   # no federated credential yet
    assert run_grant(args, credential=admin) == 0
    assert run_grant(args, credential=admin) == 0               # idempotent

    out = capsys.readouterr().out
    assert f"{sandbox.authority}/{TENANTS['contoso'][0]}/adminconsent?client_id={APP}" in out
    assert "now trusts" in out and "already trusts" in out
    assert run_check(argparse.Namespace(name="contoso")) == 0   # the relay's identity signs in as the app now
