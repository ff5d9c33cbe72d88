"""`python -m shared grant-permission` against the sandbox's Microsoft Graph directory, with real tokens from the
sandbox's authority (the real ClientSecretCredential) and real HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.identity import ClientSecretCredential

from sandbox import graph_directory
from sandbox.server import Sandbox
from shared.app.grant_permission import grant_permission, main
from shared.core.apis import APIS
from shared.core.errors import GrantNotAllowed, PrincipalNotFound, ResourceNotFound, SignInFailed

TENANT = "sandbox-tenant"
GRANT_ROLES = ["AppRoleAssignment.ReadWrite.All", "Application.Read.All"]


def credential(sandbox: Sandbox, client_id: str, secret: str) -> ClientSecretCredential:
    return ClientSecretCredential(TENANT, client_id, secret, authority=sandbox.authority,
                                  disable_instance_discovery=True, connection_verify=sandbox.ca_path)


@pytest.fixture
def directory(sandbox: Sandbox) -> Iterator[Sandbox]:
    graph_directory.reset()
    yield sandbox
    graph_directory.reset()


@pytest.fixture
def admin(directory: Sandbox) -> ClientSecretCredential:
    """An app holding exactly the least-privileged Graph permissions for granting app roles."""
    directory.add_app(TENANT, "grant-admin", "admin-secret", GRANT_ROLES)
    return credential(directory, "grant-admin", "admin-secret")


@pytest.fixture
def relay_identity(directory: Sandbox) -> str:
    """A new user-assigned identity holding no roles yet; returns its principal (object) id."""
    directory.add_identity("relay-identity", [])
    return graph_directory.register_principal("relay-identity")


def held_roles(principal_id: str) -> set[tuple[str, str]]:
    return {(a["resourceId"], a["appRoleId"]) for a in graph_directory.assignments_of(principal_id)}


def expected_role(api: str) -> tuple[str, str]:
    spec = APIS[api]
    return graph_directory.resource_id_for(spec.resource_app_id), graph_directory.role_id_for(spec.role)


@pytest.mark.parametrize("api", ["mde", "m365d", "graph"])
def test_each_api_s_hunting_role_is_granted_to_the_identity(
        directory: Sandbox, admin: ClientSecretCredential, relay_identity: str, api: str) -> None:
    result = grant_permission(relay_identity, api, credential=admin, graph_url=directory.api_url)

    assert result.created
    assert result.role == APIS[api].role
    assert held_roles(relay_identity) == {expected_role(api)}
    posted = [json.loads(body) for body in directory.counters.bodies_for("directory") if body]
    resource_id, role_id = expected_role(api)
    assert posted == [{"principalId": relay_identity, "resourceId": resource_id, "appRoleId": role_id}]


def test_a_second_run_is_a_successful_no_op(
        directory: Sandbox, admin: ClientSecretCredential, relay_identity: str) -> None:
    first = grant_permission(relay_identity, "mde", credential=admin, graph_url=directory.api_url)
    second = grant_permission(relay_identity, "mde", credential=admin, graph_url=directory.api_url)

    assert (first.created, second.created) == (True, False)
    assert second.assignment_id == first.assignment_id
    assert len(graph_directory.assignments_of(relay_identity)) == 1
    assert directory.counters.calls_to("directory", 201) == 1


def test_a_role_granted_by_someone_else_meanwhile_is_a_success(
        directory: Sandbox, admin: ClientSecretCredential, relay_identity: str) -> None:
    class ConcurrentAdmin(requests.Session):
        """Another administrator's identical grant lands just before ours."""

        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
            if method == "POST":
                super().request(method, url, *args, **kwargs)
            return super().request(method, url, *args, **kwargs)

    result = grant_permission(relay_identity, "graph", credential=admin, graph_url=directory.api_url,
                              session=ConcurrentAdmin())

    assert not result.created
    assert directory.counters.calls_to("directory", 400) == 1   # "Permission being assigned already exists"
    assert held_roles(relay_identity) == {expected_role("graph")}


def test_a_caller_without_the_assignment_permission_gets_the_rights_it_needs(
        directory: Sandbox, relay_identity: str) -> None:
    directory.add_app(TENANT, "reader", "reader-secret", ["Application.Read.All"])

    with pytest.raises(GrantNotAllowed) as refused:
        grant_permission(relay_identity, "mde", credential=credential(directory, "reader", "reader-secret"),
                         graph_url=directory.api_url)

    message = str(refused.value)
    assert "403" in message and "Authorization_RequestDenied" in message
    assert "AppRoleAssignment.ReadWrite.All" in message and "Application.Read.All" in message
    assert "Privileged Role Administrator" in message
    assert graph_directory.assignments_of(relay_identity) == []


def test_a_caller_with_no_directory_rights_is_refused_at_the_first_lookup(
        directory: Sandbox, relay_identity: str) -> None:
    hunting_only = credential(directory, "sandbox-client", "sandbox-secret")   # holds the hunting roles only

    with pytest.raises(GrantNotAllowed, match="look up the WindowsDefenderATP service principal"):
        grant_permission(relay_identity, "mde", credential=hunting_only, graph_url=directory.api_url)

    assert directory.counters.calls_to("directory", 403) == 1


def test_a_token_for_another_cloud_s_graph_is_refused_as_the_wrong_audience(
        directory: Sandbox, admin: ClientSecretCredential, relay_identity: str) -> None:
    with pytest.raises(GrantNotAllowed, match="Invalid audience"):
        grant_permission(relay_identity, "mde", credential=admin, cloud="gcchigh", graph_url=directory.api_url)


def test_an_unknown_principal_is_reported_with_the_id_to_give_instead(
        directory: Sandbox, admin: ClientSecretCredential) -> None:
    unknown = str(uuid.uuid4())

    with pytest.raises(PrincipalNotFound, match=f"no service principal has the object id {unknown}") as missing:
        grant_permission(unknown, "mde", credential=admin, graph_url=directory.api_url)

    assert "not its client id" in str(missing.value)
    assert directory.counters.calls_to("directory", 201) == 0


def test_a_principal_id_that_is_not_an_object_id_is_refused_before_any_call(
        directory: Sandbox, admin: ClientSecretCredential) -> None:
    with pytest.raises(PrincipalNotFound, match="not an object id"):
        grant_permission("relay-identity", "mde", credential=admin, graph_url=directory.api_url)

    assert directory.counters.calls_to("directory") == 0


def test_an_api_not_provisioned_in_the_tenant_says_how_to_add_it(
        directory: Sandbox, admin: ClientSecretCredential, relay_identity: str) -> None:
    graph_directory.remove_resource(APIS["m365d"].resource_app_id)

    with pytest.raises(ResourceNotFound, match="az ad sp create --id 8ee8fdad-f234-4243-8f3b-15c294843740"):
        grant_permission(relay_identity, "m365d", credential=admin, graph_url=directory.api_url)


def test_a_caller_that_cannot_sign_in_is_told_how(directory: Sandbox, relay_identity: str) -> None:
    directory.add_app(TENANT, "grant-admin", "admin-secret", GRANT_ROLES)

    with pytest.raises(SignInFailed, match="az login"):
        grant_permission(relay_identity, "mde", credential=credential(directory, "grant-admin", "wrong"),
                         graph_url=directory.api_url)


def test_the_command_prints_what_it_did_and_succeeds_twice(
        directory: Sandbox, admin: ClientSecretCredential, relay_identity: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--principal-id", relay_identity, "--api", "m365d", "--graph-url", directory.api_url]

    assert main(argv, credential=admin) == 0
    first = capsys.readouterr().out
    assert main(argv, credential=admin) == 0
    second = capsys.readouterr().out

    assert f"granted AdvancedHunting.Read.All on Microsoft Threat Protection to principal {relay_identity}" in first
    assert "24 hours" in first
    assert second.startswith("already granted: AdvancedHunting.Read.All")


def test_the_command_reports_a_failure_on_stderr_with_exit_status_2(
        directory: Sandbox, admin: ClientSecretCredential, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--principal-id", str(uuid.uuid4()), "--graph-url", directory.api_url], credential=admin)

    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert captured.err.startswith("error: no service principal has the object id")


def test_the_sandbox_directory_refuses_a_call_without_a_token(directory: Sandbox) -> None:
    response = requests.get(directory.api_url + "/v1.0/servicePrincipals", timeout=10)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
