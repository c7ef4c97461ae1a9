"""Roles and the permission table: the one place that says who may do what."""

from __future__ import annotations

ROLES = (
    "admin",
    "integration_engineer",
    "analyst",
    "data_steward",
    "researcher",
    "reviewer",
    "viewer",
)

_ALL = frozenset(ROLES)

#: permission -> roles that hold it. Admin holds every permission (added below).
PERMISSIONS: dict[str, frozenset[str]] = {
    # health data: FHIR resources, HL7 messages, view results row by row
    "health_data:read": frozenset({"integration_engineer", "analyst", "data_steward"}),
    "health_data:write": frozenset({"integration_engineer"}),
    "hl7:manage": frozenset({"integration_engineer"}),
    "views:run": frozenset({"analyst", "data_steward", "researcher"}),
    "quality:read": frozenset({"data_steward", "analyst", "viewer"}),
    "quality:run": frozenset({"data_steward"}),
    "analytics:read": frozenset({"analyst", "data_steward", "integration_engineer", "viewer"}),
    "concepts:read": frozenset({"analyst", "data_steward", "researcher"}),
    "research:submit": frozenset({"researcher"}),
    "research:read": frozenset({"researcher", "reviewer"}),
    "research:review": frozenset({"reviewer"}),
    "assistant:use": _ALL,
    "jobs:read": _ALL,
    "profile:read": _ALL,
    "audit:read": frozenset({"reviewer"}),
    "cache:read": frozenset({"integration_engineer"}),
    "cache:manage": frozenset(),
    "users:manage": frozenset(),
    "backup:manage": frozenset(),
    "perf:read": frozenset({"integration_engineer"}),
    "perf:manage": frozenset(),
}
PERMISSIONS = {name: roles | {"admin"} for name, roles in PERMISSIONS.items()}


def allows(role: str, permission: str) -> bool:
    """True when `role` holds `permission`; an unknown permission is a programming error."""
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    return role in PERMISSIONS[permission]


def permissions_of(role: str) -> list[str]:
    return sorted(name for name, roles in PERMISSIONS.items() if role in roles)
