// The function app: Flex Consumption (FC1), Python 3.11, running as the user-assigned identity, with every
// setting the relay reads (shared/core/settings.py). Settings not set here keep the code's defaults and are listed
// as optional in docs/deploy.md. Storage is reached by identity only (AzureWebJobsStorage__*).
param name string
param planName string
param location string
param tags object = {}
param storageAccountName string
param deploymentContainerName string
param identityId string
param identityClientId string
param applicationInsightsName string
param maximumInstanceCount int = 40
param instanceMemoryMB int = 2048

// The relay's settings.
param queueName string
param resultsContainerName string
param deadLetterContainerName string
param gateTableName string
param jobsTableName string
param breakerTableName string
param huntApi string
param huntCloud string
param apiBaseUrl string = ''
param authMode string = 'managed_identity'
param appClientId string = ''

@description('https://<vault>.vault.azure.net/ when the deployment has a Key Vault, else empty.')
param keyVaultUri string = ''
param clientSecretName string = 'hunt-client-secret'

@description('HUNT_DESTINATIONS as JSON text; empty: the built-in destination (HUNT_RESULTS_CONTAINER).')
param destinations string = ''
param defaultDestination string = ''
param webhookAllowedHosts string = ''

@description('Names of the settings that hold webhook signing secrets: each becomes a Key Vault reference.')
param webhookSecretSettings array = []
param allowRawQueries bool = true
param callsPerMinute int = 45
param callsPerHour int = 1500

@description('Entra ID for the HTTP API instead of function keys: the API app registration\'s app ID URI (HUNT_API_AUDIENCE) and client id. Empty: function keys.')
param apiAudience string = ''
param apiAppClientId string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'relay' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId // Key Vault references resolve as the user-assigned identity
    siteConfig: {
      minTlsVersion: '1.2'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Deployments and tools sign in with Entra ID; publishing passwords stay off.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: { allow: false }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: { allow: false }
}

func keyVaultReference(vaultUri string, secretName string) string => '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/${secretName}/)'

// Identity-based connection for the host, the queue trigger and the relay's own storage clients.
var storageSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
}

// host.json's telemetryMode "OpenTelemetry": the host exports its own logs and traces (with the identity, as the
// authentication string says) and forwards the worker's logs. The relay configures azure-monitor-opentelemetry
// itself (shared/adapters/telemetry.py: its spans and metrics, no automatic instrumentation, no log export), so
// the Python worker must not: with PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY 'true' the worker would call
// configure_azure_monitor first, with every instrumentation on (HTTP dependencies carrying URLs) and the root
// logger exported by the worker instead of forwarded by the host.
var telemetrySettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'false'
}

// Defaults as in shared/core/settings.py, written out so that they can be seen and changed in one place.
var relaySettings = {
  HUNT_QUEUE: queueName
  HUNT_API: huntApi
  HUNT_CLOUD: huntCloud
  HUNT_AUTH: authMode
  HUNT_RESULTS_CONTAINER: resultsContainerName
  HUNT_DEADLETTER_CONTAINER: deadLetterContainerName
  HUNT_MAX_DEQUEUE_COUNT: '5' // keep equal to host.json extensions.queues.maxDequeueCount
  HUNT_MAX_ATTEMPTS: '50'
  HUNT_MAX_AGE: '24h'
  HUNT_WEBHOOK_ALLOWED_HOSTS: webhookAllowedHosts
  HUNT_ALLOW_LOOPBACK_HTTP: 'false' // plain http to loopback is for the local stack only
  HUNT_ALLOW_RAW_QUERIES: string(allowRawQueries)
  HUNT_QUOTA_GATE: 'true'
  HUNT_GATE_TABLE: gateTableName
  HUNT_JOBS_TABLE: jobsTableName
  HUNT_BREAKER_TABLE: breakerTableName
  HUNT_CALLS_PER_MINUTE: string(callsPerMinute)
  HUNT_CALLS_PER_HOUR: string(callsPerHour)
}

var signInSettings = authMode == 'managed_identity' ? {
  AZURE_CLIENT_ID: identityClientId
} : {
  AZURE_CLIENT_ID: appClientId
  AZURE_TENANT_ID: tenant().tenantId
  AZURE_CLIENT_SECRET: keyVaultReference(keyVaultUri, clientSecretName)
}

var optionalSettings = union(
  empty(apiBaseUrl) ? {} : { HUNT_API_BASE_URL: apiBaseUrl },
  empty(destinations) ? {} : { HUNT_DESTINATIONS: destinations },
  empty(defaultDestination) ? {} : { HUNT_DEFAULT_DESTINATION: defaultDestination },
  // Entra ID for the HTTP API: the platform checks the token (authsettingsV2 below), and so does the relay.
  empty(apiAudience) ? {} : { HUNT_API_AUDIENCE: apiAudience, HUNT_API_AUTH_LEVEL: 'anonymous', AZURE_TENANT_ID: tenant().tenantId }
)

// Each webhook destination's secret_setting, read from Key Vault (secret name: the setting's, in kebab case).
var webhookSecretReferences = toObject(webhookSecretSettings, setting => setting, setting => keyVaultReference(keyVaultUri, toLower(replace(setting, '_', '-'))))

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(storageSettings, telemetrySettings, relaySettings, signInSettings, optionalSettings, webhookSecretReferences)
}

// App Service authentication in front of the HTTP API: a request without a valid Entra ID token for the API's
// audience is answered 401 by the platform before it reaches the function.
resource apiAuthentication 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(apiAudience)) {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
          clientId: apiAppClientId
        }
        validation: {
          allowedAudiences: [apiAudience]
        }
      }
    }
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
