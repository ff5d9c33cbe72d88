// Hunt Relay in one resource group: a Flex Consumption function app running as a user-assigned identity,
// keyless storage (queues, result containers, the quota gate's, job ledger's and circuit breakers' tables),
// Application Insights with Entra-only ingestion and a workbook over the relay's metrics, an optional Key Vault for
// the app-secret mode and webhook secrets, and an optional grant of the hunting app role through the Microsoft Graph
// Bicep extension. `azd up` deploys it (see docs/deploy.md).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment: names the resource group and seeds the unique token in resource names.')
param environmentName string

@minLength(1)
@description('Region of every resource: one that offers the Flex Consumption plan.')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of whoever runs azd (AZURE_PRINCIPAL_ID): may send hunts, read results and set vault secrets. Empty: nobody.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal'])
param principalType string = 'User'

@allowed(['mde', 'm365d', 'graph'])
@description('HUNT_API: the API a hunt uses when it names none, and the role granted when grantHuntingPermission is true.')
param huntApi string = 'graph'

@allowed(['public', 'gcc', 'gcchigh', 'dod'])
@description('HUNT_CLOUD: picks the sign-in authority, API hosts and token audiences.')
param huntCloud string = 'public'

@description('HUNT_API_BASE_URL: a regional or sovereign API host (https). Empty: the API\'s global host in huntCloud.')
param apiBaseUrl string = ''

@allowed(['managed_identity', 'client_secret'])
@description('HUNT_AUTH: how the relay signs in to the hunting API. Storage always uses the managed identity.')
param authMode string = 'managed_identity'

@description('client_secret mode: the app registration\'s client (application) id.')
param appClientId string = ''

@secure()
@description('client_secret mode: the app\'s secret, stored in Key Vault. Empty: set it in the vault after deployment (keeps it out of deployment history).')
param appClientSecret string = ''

@description('Grant the hunting app role to the identity with the Microsoft Graph extension (the deployer needs the rights; see docs/deploy.md).')
param grantHuntingPermission bool = false

@description('Create a multi-tenant app with a federated credential for the relay\'s identity, for hunting in customer tenants (HUNT_TENANTS, auth "federated"; the deployer needs Application.ReadWrite.All; see docs/deploy.md).')
param enableMultiTenantApp bool = false

@description('The multi-tenant app\'s display name, shown to customer admins on the consent page.')
param multiTenantAppName string = 'Hunt Relay'

@description('Entra ID for the HTTP API instead of function keys: the API app registration\'s app ID URI, e.g. api://hunt-relay (empty: function keys; see docs/deploy.md).')
param apiAudience string = ''

@description('With apiAudience: the API app registration\'s client id.')
param apiAppClientId string = ''

@description('Deploy the Key Vault even when no secret needs it yet.')
param enableKeyVault bool = false

@description('HUNT_WEBHOOK_ALLOWED_HOSTS: comma-separated hosts an inline webhook URL in a message may use.')
param webhookAllowedHosts string = ''

@description('HUNT_DEFAULT_DESTINATION: the destination (a name in destinations.json) used when a message names none.')
param defaultDestination string = ''

@description('HUNT_ALLOW_RAW_QUERIES: false restricts the relay to hunt templates (no raw KQL in messages).')
param allowRawQueries bool = true

@minValue(1)
@description('HUNT_CALLS_PER_MINUTE: the tenant\'s hunting calls per minute that the relay allows itself.')
param callsPerMinute int = 45

@minValue(1)
@description('HUNT_CALLS_PER_HOUR: the tenant\'s hunting calls per hour that the relay allows itself.')
param callsPerHour int = 1500

@minValue(1)
@maxValue(1000)
@description('Most Flex Consumption instances: the tenant quota, not compute, bounds throughput.')
param maximumInstanceCount int = 40

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@allowed(['containers', 'account'])
@description('Where Storage Blob Data Owner for the Functions host applies: its own containers only, or the whole account.')
param hostStorageRoleScope string = 'containers'

@description('Let the identity sign user delegation SAS links to results (Storage Blob Delegator on the account).')
param enableResultLinks bool = true

@minValue(0)
@description('Days before result blobs are deleted (0: keep them).')
param resultRetentionDays int = 30

@minValue(0)
@description('Days before dead-letter records are deleted (0: keep them).')
param deadLetterRetentionDays int = 90

// Names the relay's code defaults to (shared/core/settings.py SETTINGS): the contract tests keep them equal.
param queueName string = 'hunts'
param resultsContainerName string = 'hunt-results'
param deadLetterContainerName string = 'hunt-deadletter'
param gateTableName string = 'huntquotagate'
param jobsTableName string = 'huntjobs'
param breakerTableName string = 'huntbreakers'

// The hunting APIs' resource apps and their application roles (shared/core/apis.py); roles are looked up by value.
var huntingApis = {
  mde: { appId: 'fc780465-2017-40d4-a0c5-307022471b92', role: 'AdvancedQuery.Read.All' } // WindowsDefenderATP
  m365d: { appId: '8ee8fdad-f234-4243-8f3b-15c294843740', role: 'AdvancedHunting.Read.All' } // Microsoft Threat Protection
  graph: { appId: '00000003-0000-0000-c000-000000000000', role: 'ThreatHunting.Read.All' } // Microsoft Graph
}

// Named destinations (HUNT_DESTINATIONS): URLs and secret setting names, never secret values.
var destinations = any(loadJsonContent('destinations.json'))
var destinationList = items(destinations)
var blobDestinationContainers = map(filter(destinationList, d => d.value.type == 'blob'), d => d.value.container)
var destinationQueueNames = union(map(filter(destinationList, d => d.value.type == 'queue'), d => d.value.queue), [])
var webhookSecretSettings = union(map(filter(destinationList, d => d.value.type == 'webhook' && contains(d.value, 'secret_setting')), d => d.value.secret_setting), [])

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = 'func-hunt-relay-${resourceToken}'
var deploymentContainerName = 'app-package'
var hostContainerNames = ['azure-webjobs-hosts', 'azure-webjobs-secrets', deploymentContainerName]
var dataContainerNames = union([resultsContainerName, deadLetterContainerName], blobDestinationContainers)
// The relay's own state (the key that marks its queue copies): the relay's identity only, never the deployer's reader.
var stateContainerName = 'hunt-relay-state'

var queueNames = [queueName, '${queueName}-poison']
var useKeyVault = enableKeyVault || authMode == 'client_secret' || !empty(webhookSecretSettings)
var keyVaultName = 'kv-${resourceToken}'
var keyVaultUri = 'https://${keyVaultName}${environment().suffixes.keyvaultDns}/'
var clientSecretName = 'hunt-client-secret'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-hunt-relay-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    queueNames: union(queueNames, destinationQueueNames)
    containerNames: union(hostContainerNames, dataContainerNames, [stateContainerName])
    tableNames: [gateTableName, jobsTableName, breakerTableName]
    retention: union(
      resultRetentionDays > 0 ? [{ container: resultsContainerName, days: resultRetentionDays }] : [],
      deadLetterRetentionDays > 0 ? [{ container: deadLetterContainerName, days: deadLetterRetentionDays }] : []
    )
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

// The workbook over the relay's OpenTelemetry metrics and spans, attached to the Application Insights component.
module workbook 'app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    location: location
    tags: tags
  }
}

module keyVault 'app/key-vault.bicep' = if (useKeyVault) {
  name: 'key-vault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    clientSecretName: clientSecretName
    clientSecret: appClientSecret
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    identityPrincipalId: identity.outputs.principalId
    queueNames: queueNames
    destinationQueueNames: destinationQueueNames
    hostContainerNames: hostContainerNames
    dataContainerNames: dataContainerNames
    stateContainerName: stateContainerName
    gateTableName: gateTableName
    jobsTableName: jobsTableName
    breakerTableName: breakerTableName
    hostStorageRoleScope: hostStorageRoleScope
    enableResultLinks: enableResultLinks
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: useKeyVault ? keyVaultName : ''
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
  dependsOn: [keyVault]
}

module functionApp 'app/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    queueName: queueName
    resultsContainerName: resultsContainerName
    deadLetterContainerName: deadLetterContainerName
    gateTableName: gateTableName
    jobsTableName: jobsTableName
    breakerTableName: breakerTableName
    apiAudience: apiAudience
    apiAppClientId: apiAppClientId
    huntApi: huntApi
    huntCloud: huntCloud
    apiBaseUrl: apiBaseUrl
    authMode: authMode
    appClientId: appClientId
    keyVaultUri: useKeyVault ? keyVaultUri : ''
    clientSecretName: clientSecretName
    destinations: empty(destinations) ? '' : string(destinations)
    defaultDestination: defaultDestination
    webhookAllowedHosts: webhookAllowedHosts
    webhookSecretSettings: webhookSecretSettings
    allowRawQueries: allowRawQueries
    callsPerMinute: callsPerMinute
    callsPerHour: callsPerHour
  }
  dependsOn: [rbac]
}

module huntingPermission 'app/hunting-permission.bicep' = if (grantHuntingPermission && authMode == 'managed_identity') {
  name: 'hunting-permission'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    resourceAppId: huntingApis[huntApi].appId
    appRoleValue: huntingApis[huntApi].role
  }
}

module multiTenantApp 'app/multi-tenant-app.bicep' = if (enableMultiTenantApp) {
  name: 'multi-tenant-app'
  scope: rg
  params: {
    uniqueName: 'hunt-relay-${resourceToken}'
    displayName: multiTenantAppName
    identityPrincipalId: identity.outputs.principalId
  }
}

// What a user needs next: where to send hunts, who to grant the hunting role to, where results land.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = useKeyVault ? keyVaultName : ''
output HUNT_QUEUE_URL string = '${storage.outputs.queueEndpoint}${queueName}'
output HUNT_POISON_QUEUE_URL string = '${storage.outputs.queueEndpoint}${queueName}-poison'
output HUNT_RESULTS_URL string = '${storage.outputs.blobEndpoint}${resultsContainerName}'
output HUNT_IDENTITY_NAME string = identity.outputs.name
output HUNT_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output HUNT_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output HUNT_HUNTING_ROLE string = huntingApis[huntApi].role
output HUNT_MULTI_TENANT_APP_ID string = enableMultiTenantApp ? multiTenantApp.outputs.appId : ''

