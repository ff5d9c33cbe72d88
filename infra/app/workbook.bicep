// The relay's Azure Monitor workbook (workbook.json): hunts by outcome and cause, 429s and gate waits, time to the end
// of a hunt, API latency, rows and bytes, calls left, queue depth, open circuit breakers and recent failed hunts,
// from the OpenTelemetry metrics (customMetrics) and spans (requests) the relay exports to Application Insights
// (shared/adapters/telemetry.py). Attached to the component: it opens from its Workbooks blade.
param applicationInsightsName string
param location string
param tags object = {}

@description('The name the workbook is listed under (unique per resource group and component).')
param displayName string = 'Hunt Relay'

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'hunt-relay-workbook') // a workbook's name must be a GUID
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: applicationInsights.id
    // The component is also the fallback resource, so the queries work when the workbook is opened from Azure Monitor.
    serializedData: string(union(loadJsonContent('workbook.json'), { fallbackResourceIds: [applicationInsights.id] }))
  }
}

output id string = workbook.id
output name string = workbook.name
