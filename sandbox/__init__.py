"""The local stand-in for Microsoft's side of Hunt Relay (dev only, never deployed).

`sandbox.server.Sandbox` (or `python -m sandbox`) serves the three Defender hunting APIs, the App Service
managed-identity endpoint and an https token authority; `sandbox.hunting` runs the KQL over a synthetic dataset;
`sandbox.azurite` runs the storage emulator; `sandbox.webhook_receiver` records webhook deliveries.
"""
