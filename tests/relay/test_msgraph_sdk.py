"""The real Microsoft Graph SDK (msgraph-sdk), unmodified, against the sandbox: its runHuntingQuery call (the
namespaced action, camelCase body, an azure-identity credential from the sandbox's authority) gets the same rows the
relay delivers for the same query."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from typing import Any

import httpx
from azure.identity.aio import ClientSecretCredential
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.security.microsoft_graph_security_run_hunting_query.run_hunting_query_post_request_body import (
    RunHuntingQueryPostRequestBody,
)
from msgraph_core import GraphClientFactory

from sandbox.server import Sandbox
from tests.relay.conftest import RelayStack, drain

QUERY = "DeviceInfo | project DeviceName, OSPlatform | order by DeviceName asc | take 4"


async def sdk_rows(sandbox: Sandbox, query: str, timespan: str | None = None) -> list[dict[str, Any]]:
    credential = ClientSecretCredential("sandbox-tenant", "sandbox-client", "sandbox-secret",
                                        authority=sandbox.authority, disable_instance_discovery=True,
                                        connection_verify=sandbox.ca_path)
    async with credential, httpx.AsyncClient(verify=ssl.create_default_context(cafile=sandbox.ca_path)) as http:
        auth = AzureIdentityAuthenticationProvider(credential, scopes=["https://graph.microsoft.com/.default"],
                                                   allowed_hosts=["127.0.0.1"])
        adapter = GraphRequestAdapter(auth, client=GraphClientFactory.create_with_default_middleware(client=http))
        adapter.base_url = sandbox.api_tls_url + "/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        body = RunHuntingQueryPostRequestBody(query=query, timespan=timespan)
        result = await client.security.microsoft_graph_security_run_hunting_query.post(body)
        assert result is not None and result.results is not None
        return [dict(row.additional_data) for row in result.results]


def test_the_graph_sdk_gets_the_rows_the_relay_delivers(relay_stack: RelayStack):
    sandbox = relay_stack.sandbox
    rows = asyncio.run(sdk_rows(sandbox, QUERY, "P30D"))
    assert len(rows) == 4
    sent = [json.loads(body) for body in sandbox.counters.bodies_for("graph")]
    assert sent == [{"query": QUERY, "timespan": "P30D"}]   # the SDK's own camelCase body, read as Graph reads it
    relay = relay_stack.make(HUNT_API="graph")
    job = "sdk-" + uuid.uuid4().hex[:8]
    relay.hunt_queue.send_message(json.dumps({"id": job, "query": QUERY, "timespan": "P30D"}))
    assert [o.status for o in drain(relay).outcomes] == ["delivered"]
    assert relay_stack.read_json(relay_stack.results_container, f"{job}.json")["results"] == rows
