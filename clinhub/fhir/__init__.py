"""FHIR R4: REST API, search index, transactions, bulk NDJSON in and out, pulls from external servers.

The REST routes are in `clinhub.fhir.api`; the client for external servers in `clinhub.fhir.client`
and `clinhub.fhir.pull` (imported on demand: they bring httpx and the resilience layer).
"""

from clinhub.fhir.bulk import import_ndjson
from clinhub.fhir.ndjson import iter_ndjson, load_ndjson

__all__ = ["import_ndjson", "iter_ndjson", "load_ndjson"]
