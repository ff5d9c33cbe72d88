"""One credential per process, chosen by HUNT_AUTH; azure-identity caches and refreshes the tokens.

    managed_identity   ManagedIdentityCredential (system-assigned, or user-assigned with AZURE_CLIENT_ID)
    client_secret      ClientSecretCredential (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)
    certificate        CertificateCredential (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_CERTIFICATE_PATH)

The authority is AZURE_AUTHORITY_HOST when set, else the cloud's sign-in host. Instance discovery (a call to
Microsoft's public cloud) is skipped for an authority that is not one of Microsoft's hosts, such as the sandbox.
"""

from __future__ import annotations

from azure.core.credentials import TokenCredential
from azure.identity import (
    CertificateCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)

from shared.core.apis import AUTHORITY_HOSTS
from shared.core.settings import Settings


def authority_for(settings: Settings) -> str:
    host = settings.authority_host or AUTHORITY_HOSTS[settings.cloud]
    return host if host.startswith("https://") else "https://" + host


def api_credential(settings: Settings) -> TokenCredential:
    if settings.auth == "managed_identity":
        return ManagedIdentityCredential(client_id=settings.client_id) if settings.client_id \
            else ManagedIdentityCredential()
    authority = authority_for(settings)
    custom_authority = authority.removeprefix("https://").split("/")[0] not in AUTHORITY_HOSTS.values()
    assert settings.tenant_id and settings.client_id  # checked by load_settings
    if settings.auth == "client_secret":
        assert settings.client_secret
        return ClientSecretCredential(settings.tenant_id, settings.client_id, settings.client_secret,
                                      authority=authority, disable_instance_discovery=custom_authority)
    assert settings.certificate_path
    return CertificateCredential(settings.tenant_id, settings.client_id, settings.certificate_path,
                                 authority=authority, disable_instance_discovery=custom_authority)


def storage_credential(settings: Settings) -> TokenCredential:
    """The identity for identity-based storage connections (AzureWebJobsStorage__clientId when user-assigned).
    Outside Azure (no managed identity endpoint: a laptop running `enqueue`), the developer's own sign-in."""
    storage = settings.storage
    if settings.identity_endpoint:
        return ManagedIdentityCredential(client_id=storage.client_id) if storage.client_id \
            else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=storage.client_id)
