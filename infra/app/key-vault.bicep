// Optional Key Vault in RBAC mode for the app-secret mode and webhook signing secrets. The function app reads
// them as Key Vault references (@Microsoft.KeyVault(SecretUri=...)) with its identity (Key Vault Secrets User,
// rbac.bicep). Webhook secret values are set by an operator (docs/deploy.md), never passed through deployments.
param name string
param location string
param tags object = {}
param clientSecretName string

@secure()
@description('The app registration\'s client secret; empty: the operator sets it in the vault later.')
param clientSecret string = ''

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true // no access policies: roles only
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
  }
}

resource appClientSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(clientSecret)) {
  parent: vault
  name: clientSecretName
  properties: {
    value: clientSecret
    contentType: 'client secret of the app registration Hunt Relay signs in as'
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
