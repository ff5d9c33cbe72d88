// Every Azure role assignment of the deployment, each on the narrowest scope that works:
//   relay identity  hunt queue + poison queue  Storage Queue Data Reader, Message Processor, Message Sender
//                   host containers            Storage Blob Data Owner (or the account: hostStorageRoleScope)
//                   queue destinations         Storage Queue Data Message Sender (results as messages)
//                   result/dead-letter/destination containers   Storage Blob Data Contributor
//                   the relay's state container                 Storage Blob Data Contributor (no one else)
//                   storage account            Storage Blob Delegator (user delegation SAS links to results)
//                   quota gate table           Storage Table Data Contributor
//                   Application Insights       Monitoring Metrics Publisher (Entra-only ingestion)
//                   Key Vault                  Key Vault Secrets User (Key Vault references)
//   deployer        hunt queue                 Storage Queue Data Message Sender (send a first hunt)
//                   data containers            Storage Blob Data Reader (read results)
//                   Key Vault                  Key Vault Secrets Officer (set webhook and client secrets)
// The hunting API's app role is not an Azure role: see hunting-permission.bicep and docs/deploy.md.
param storageAccountName string
param identityPrincipalId string
param queueNames array

@description('Queues named by queue destinations in destinations.json: the relay only sends to them.')
param destinationQueueNames array = []
param hostContainerNames array
param dataContainerNames array
@description('The relay\'s own state (its message key): only the relay\'s identity gets a role on it.')
param stateContainerName string
param gateTableName string
param jobsTableName string
param breakerTableName string
param applicationInsightsName string

@allowed(['containers', 'account'])
param hostStorageRoleScope string = 'containers'
param enableResultLinks bool = true

@description('Empty when the deployment has no Key Vault.')
param keyVaultName string = ''

@description('Whoever runs the deployment; empty: no roles for people.')
param userPrincipalId string = ''

@allowed(['User', 'ServicePrincipal'])
param userPrincipalType string = 'User'

// Built-in role definition ids (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  queueReader: '19e7f393-937e-4f77-808e-94535e297925' // Storage Queue Data Reader
  queueMessageProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed' // Storage Queue Data Message Processor
  queueMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a' // Storage Queue Data Message Sender
  blobOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  blobContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  blobReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1' // Storage Blob Data Reader
  blobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a' // Storage Blob Delegator
  tableContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  metricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
  secretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
  secretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // Key Vault Secrets Officer
}
var withUser = !empty(userPrincipalId)
var withVault = !empty(keyVaultName)
var hostOnContainers = hostStorageRoleScope == 'containers'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for queue in queueNames: {
  parent: queueService
  name: queue
}]

resource destinationQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for queue in destinationQueueNames: {
  parent: queueService
  name: queue
}]

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource hostContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for container in hostContainerNames: {
  parent: blobService
  name: container
}]

resource dataContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for container in dataContainerNames: {
  parent: blobService
  name: container
}]

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: stateContainerName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource gateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: gateTableName
}

resource jobsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: jobsTableName
}

resource breakerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: breakerTableName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = if (withVault) {
  name: keyVaultName
}

// --- the relay's identity: queues -------------------------------------------------------------------------

// Storage Queue Data Reader: the trigger peeks and reads queue metadata (the scale controller's queue length).
resource queueReaderGrants 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, length(queueNames)): {
  name: guid(queues[i].id, identityPrincipalId, roles.queueReader)
  scope: queues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueReader)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Storage Queue Data Message Processor: the trigger dequeues and deletes (completes) messages.
resource queueProcessorGrants 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, length(queueNames)): {
  name: guid(queues[i].id, identityPrincipalId, roles.queueMessageProcessor)
  scope: queues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueMessageProcessor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Storage Queue Data Message Sender: the relay re-enqueues throttled hunts with a delay; the host moves a
// message that failed maxDequeueCount times to the poison queue.
resource queueSenderGrants 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, length(queueNames)): {
  name: guid(queues[i].id, identityPrincipalId, roles.queueMessageSender)
  scope: queues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueMessageSender)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Storage Queue Data Message Sender: results delivered to queue destinations.
resource destinationQueueGrants 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, length(destinationQueueNames)): {
  name: guid(destinationQueues[i].id, identityPrincipalId, roles.queueMessageSender)
  scope: destinationQueues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueMessageSender)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// --- the relay's identity: blobs and the table ------------------------------------------------------------

// Storage Blob Data Owner: the Functions host's leases and keys, and the deployment package.
resource hostContainerGrants 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, length(hostContainerNames)): if (hostOnContainers) {
  name: guid(hostContainers[i].id, identityPrincipalId, roles.blobOwner)
  scope: hostContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobOwner)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Storage Blob Data Owner on the whole account, when hostStorageRoleScope is 'account'.
resource hostAccountGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!hostOnContainers) {
  name: guid(storage.id, identityPrincipalId, roles.blobOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobOwner)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Data Contributor: results (create-only writes), dead-letter records, blob destinations.
resource dataContainerGrants 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, length(dataContainerNames)): {
  name: guid(dataContainers[i].id, identityPrincipalId, roles.blobContributor)
  scope: dataContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

// Storage Blob Data Contributor: the relay creates and reads its message key (shared/adapters/message_keys.py).
resource stateContainerGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateContainer.id, identityPrincipalId, roles.blobContributor)
  scope: stateContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Blob Delegator: a user delegation key is an account-level operation; the SAS it signs is still
// limited by the identity's container roles.
resource delegatorGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableResultLinks) {
  name: guid(storage.id, identityPrincipalId, roles.blobDelegator)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDelegator)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: the quota gate's shared counters and pauses.
resource gateTableGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(gateTable.id, identityPrincipalId, roles.tableContributor)
  scope: gateTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: the destinations' circuit breakers, shared by every instance.
resource breakerTableGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(breakerTable.id, identityPrincipalId, roles.tableContributor)
  scope: breakerTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: the job ledger (every hunt's state; the HTTP API reads it).
resource jobsTableGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(jobsTable.id, identityPrincipalId, roles.tableContributor)
  scope: jobsTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableContributor)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- the relay's identity: telemetry and secrets ----------------------------------------------------------

// Monitoring Metrics Publisher: telemetry ingestion with an Entra token (local auth is disabled).
resource telemetryGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, identityPrincipalId, roles.metricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.metricsPublisher)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault Secrets User: resolve the app settings' Key Vault references.
resource vaultReaderGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withVault) {
  name: guid(vault.id, identityPrincipalId, roles.secretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.secretsUser)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// --- the deployer -----------------------------------------------------------------------------------------

// Storage Queue Data Message Sender: send a first hunt with `az storage message put --auth-mode login`.
resource userQueueGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withUser) {
  name: guid(queues[0].id, userPrincipalId, roles.queueMessageSender)
  scope: queues[0]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueMessageSender)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// Storage Blob Data Reader: read results and dead-letter records.
resource userDataGrants 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for i in range(0, length(dataContainerNames)): if (withUser) {
  name: guid(dataContainers[i].id, userPrincipalId, roles.blobReader)
  scope: dataContainers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobReader)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}]

// Key Vault Secrets Officer: set the webhook and client secrets the references point at.
resource userVaultGrant 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withUser && withVault) {
  name: guid(vault.id, userPrincipalId, roles.secretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.secretsOfficer)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}
