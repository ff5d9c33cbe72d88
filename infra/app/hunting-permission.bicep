// Grants the hunting API's application role (AdvancedQuery.Read.All, AdvancedHunting.Read.All or
// ThreatHunting.Read.All) to the relay's identity: the step the portal cannot do for a managed identity.
// The deployer needs AppRoleAssignment.ReadWrite.All and Application.Read.All, or the Privileged Role
// Administrator role; without them leave grantHuntingPermission false and run
// `python -m shared grant-permission` (docs/deploy.md) as someone who has them.
extension microsoftGraphV1

@description('Object id of the identity that receives the role.')
param principalId string

@description('App id of the API that owns the role (shared/core/apis.py).')
param resourceAppId string

@description('The role\'s value: roles are found by value, never by a hard-coded id.')
param appRoleValue string

resource huntingApi 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: resourceAppId
}

resource huntingRole 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  principalId: principalId
  resourceId: huntingApi.id
  appRoleId: filter(huntingApi.appRoles, role => role.value == appRoleValue)[0].id
}

output assignmentId string = huntingRole.id
