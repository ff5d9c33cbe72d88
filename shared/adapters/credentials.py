"""One credential per process and tenant; azure-identity caches and refreshes the tokens.

The home tenant's, chosen by HUNT_AUTH:
    managed_identity   ManagedIdentityCredential (system-assigned, or user-assigned with AZURE_CLIENT_ID)
    client_secret      ClientSecretCredential (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET)
    certificate        CertificateCredential (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_CERTIFICATE_PATH)

A customer tenant's (HUNT_TENANTS, shared.core.tenants), built at its first hunt and kept (`TenantCredentials`):
    federated          ClientAssertionCredential for the tenant's app, whose assertion is the relay's managed
                       identity's token for api://AzureADTokenExchange (no secret anywhere)
    client_secret      ClientSecretCredential with the secret from the tenant's `secret_setting`
    certificate        CertificateCredential with the PEM from the tenant's `certificate_setting`

The authority is AZURE_AUTHORITY_HOST when set, else the cloud's sign-in host. Instance discovery (a call to
Microsoft's public cloud) is skipped for an authority that is not one of Microsoft's hosts, such as the sandbox.
"""

from __future__ import annotations

import threading

from azure.core.credentials import TokenCredential
from azure.identity import (
    CertificateCredential,
    ClientAssertionCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)

from shared.core.apis import AUTHORITY_HOSTS
from shared.core.settings import Settings
from shared.core.tenants import TOKEN_EXCHANGE_SCOPE, TenantConfig


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


def _custom(authority: str) -> bool:
    return authority.removeprefix("https://").split("/")[0] not in AUTHORITY_HOSTS.values()


def tenant_credential(settings: Settings, tenant: TenantConfig) -> TokenCredential:
    authority = authority_for(settings)
    if tenant.auth == "federated":
        identity_id = tenant.identity_client_id or (settings.client_id if settings.auth == "managed_identity"
                                                    else None)
        identity = ManagedIdentityCredential(client_id=identity_id) if identity_id else ManagedIdentityCredential()

        def assertion() -> str:
            return str(identity.get_token(TOKEN_EXCHANGE_SCOPE).token)

        return ClientAssertionCredential(tenant.tenant_id, tenant.client_id, assertion, authority=authority)
    if tenant.auth == "client_secret":
        assert tenant.secret  # checked by load_settings
        return ClientSecretCredential(tenant.tenant_id, tenant.client_id, tenant.secret, authority=authority,
                                      disable_instance_discovery=_custom(authority))
    assert tenant.certificate_path
    return CertificateCredential(tenant.tenant_id, tenant.client_id, tenant.certificate_path, authority=authority,
                                 disable_instance_discovery=_custom(authority))


class TenantCredentials:
    """The home tenant's credential, and each customer tenant's, built on first use and kept for the process."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._built: dict[str | None, TokenCredential] = {}

    def __call__(self, tenant: TenantConfig | None) -> TokenCredential:
        key = None if tenant is None else tenant.name
        with self._lock:
            credential = self._built.get(key)
            if credential is None:
                credential = api_credential(self._settings) if tenant is None \
                    else tenant_credential(self._settings, tenant)
                self._built[key] = credential
            return credential


def storage_credential(settings: Settings) -> TokenCredential:
    """The identity for identity-based storage connections (AzureWebJobsStorage__clientId when user-assigned).
    Outside Azure (no managed identity endpoint: a laptop running `enqueue`), the developer's own sign-in."""
    storage = settings.storage
    if settings.identity_endpoint:
        return ManagedIdentityCredential(client_id=storage.client_id) if storage.client_id \
            else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=storage.client_id)
