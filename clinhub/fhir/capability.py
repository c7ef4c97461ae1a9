"""The CapabilityStatement: what this server implements, and nothing it does not."""

from __future__ import annotations

from functools import cache

from clinhub import __version__
from clinhub.fhir.index import PARAMS, REFERENCE
from clinhub.fhir.validation import resource_types

_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
_COMMON = [
    {
        "name": "_id",
        "type": "token",
        "documentation": "The resource id (also :not and comma-separated alternatives)",
    },
    {
        "name": "_lastUpdated",
        "type": "date",
        "documentation": "When the current version was stored (prefixes eq ne gt lt ge le sa eb ap)",
    },
]
_MODIFIERS = {
    "token": "modifiers :missing, :not; forms code, system|code, |code, system|",
    "string": "starts-with ignoring case and accents; modifiers :exact, :contains, :missing",
    "date": "prefixes eq ne gt lt ge le sa eb ap over the value's implicit range; modifier :missing",
    "reference": "id, Type/id or an absolute URL; modifiers :missing, :[type]",
    "quantity": "[prefix]number[|system|code]; eq and ne use the precision's range; modifier :missing",
}


@cache
def _resources() -> tuple[dict, ...]:
    entries = []
    for resource_type in resource_types():
        params = PARAMS.get(resource_type, {})
        entry: dict = {
            "type": resource_type,
            "interaction": [{"code": code} for code in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": True,
            "conditionalDelete": "not-supported",
            "searchParam": [
                {
                    "name": param.name,
                    "type": param.kind,
                    "documentation": f"{resource_type}.{param.expression}: {_MODIFIERS[param.kind]}",
                }
                for param in params.values()
            ],
        }
        includes = [f"{resource_type}:{p.name}" for p in params.values() if p.kind == REFERENCE]
        if includes:
            entry["searchInclude"] = includes
        entries.append(entry)
    return tuple(entries)


def capability_statement(base: str, published: str) -> dict:
    """The CapabilityStatement of this server at `base` (published: the server's start, ISO 8601)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "clinhub",
        "kind": "instance",
        "software": {"name": "clinhub", "version": __version__},
        "implementation": {"description": "clinhub FHIR R4 server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Search pages are ordered by id unless _sort says otherwise; _count (default 20, at most "
                    "1000) and next links page through them. Bundle.total is given with _summary=count, "
                    "_total=accurate, or when a page holds the whole result. Resources are checked against "
                    "FHIR R4 structure on create and update."
                ),
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "OAuth",
                                }
                            ]
                        }
                    ],
                    "description": "Authorization: Bearer with a token from /auth/login, or an API key",
                },
                "resource": list(_resources()),
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "searchParam": _COMMON,
                "operation": [
                    {
                        "name": "export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                    },
                    {
                        "name": "patient-export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
                    },
                    {
                        "name": "group-export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
                    },
                ],
            }
        ],
    }
