"""The naive relay, for comparison in bench/large_result.py: the whole response parsed at once
(`response.json()`), the envelope serialized at once (`json.dumps`), then one `upload_blob`. Run as its own
process so that its peak RSS is measured like the worker's.

Run: .venv/bin/python bench/naive_large_result.py --api URL --msi URL --query KQL --container C --blob NAME
     (the storage connection string in AzureWebJobsStorage, as for the relay)
"""

from __future__ import annotations

import argparse
import json
import os

import requests
from azure.storage.blob import BlobServiceClient

RESOURCE = "https://api.securitycenter.microsoft.com"


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("--api", "--msi", "--query", "--container", "--blob"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    token = requests.get(args.msi, params={"api-version": "2019-08-01", "resource": RESOURCE},
                         headers={"X-IDENTITY-HEADER": "sandbox"}, timeout=30).json()["access_token"]
    result = requests.post(args.api + "/api/advancedqueries/run", json={"Query": args.query},
                           headers={"Authorization": "Bearer " + token}, timeout=600).json()
    envelope = {"id": args.blob, "status": "succeeded", "row_count": len(result["Results"]),
                "schema": result["Schema"], "results": result["Results"]}
    data = json.dumps(envelope, ensure_ascii=False).encode("utf-8")
    service = BlobServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])  # noqa: SIM112 (its name)
    service.get_blob_client(args.container, args.blob).upload_blob(data, overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
