// Application Insights on a Log Analytics workspace, with local (instrumentation key) auth disabled: the
// function app sends telemetry as its identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING), which needs
// Monitoring Metrics Publisher on the component (rbac.bicep).
param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object = {}

@minValue(30)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: retentionInDays
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

output applicationInsightsName string = applicationInsights.name
output logAnalyticsName string = workspace.name
