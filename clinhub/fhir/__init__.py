"""FHIR R4: resource store access and bulk NDJSON loading (the REST API is issue #6)."""

from clinhub.fhir.ndjson import iter_ndjson, load_ndjson

__all__ = ["iter_ndjson", "load_ndjson"]
