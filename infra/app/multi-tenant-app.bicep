// An optional multi-tenant app registration for hunting in customer tenants (HUNT_TENANTS, auth "federated"), with
// the federated credential that lets the relay's managed identity sign in as it: no secret anywhere. Each customer's
// admin then consents the app in their tenant (`python -m shared grant-permission --tenant NAME` prints the URL).
// The deployer needs Application.ReadWrite.All (or the Application Administrator role) in this tenant.
extension microsoftGraphV1

@description('A name unique in this tenant: the app is found by it on the next deployment.')
param uniqueName string

@description('The display name customers see on the consent page.')
param displayName string

@description('Object (principal) id of the relay\'s managed identity, the subject of the federated credential.')
param identityPrincipalId string

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000' // Microsoft Graph
}

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMultipleOrgs'
  requiredResourceAccess: [
    {
      resourceAppId: graph.appId
      resourceAccess: [
        // the role is found by its value, never by a hard-coded id
        { id: filter(graph.appRoles, role => role.value == 'ThreatHunting.Read.All')[0].id, type: 'Role' }
      ]
    }
  ]

  resource relayIdentity 'federatedIdentityCredentials@v1.0' = {
    name: '${app.uniqueName}/hunt-relay-identity'
    description: 'Hunt Relay\'s managed identity signs in as this app in the customer tenants that consented it'
    audiences: ['api://AzureADTokenExchange']
    issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
    subject: identityPrincipalId
  }
}

output appId string = app.appId
