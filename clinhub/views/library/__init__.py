"""The view library: ViewDefinitions shipped with clinhub that other domains build on, by name."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from clinhub.errors import NotFound
from clinhub.views.model import parse_view


@cache
def _definitions() -> dict[str, dict[str, Any]]:
    found = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".json"):
            definition = json.loads(entry.read_text(encoding="utf-8"))
            parse_view(definition)  # a broken library file fails at first use, naming itself
            found[definition["name"]] = definition
    return dict(sorted(found.items()))


def list_views() -> list[dict[str, str]]:
    """Name, resource type, title and description of every library view, sorted by name."""
    return [
        {
            "name": name,
            "resource": definition["resource"],
            "title": definition.get("title", name),
            "description": definition.get("description", ""),
        }
        for name, definition in _definitions().items()
    ]


def has_view(name: str) -> bool:
    return name in _definitions()


def get_view(name: str) -> dict[str, Any]:
    """A copy of the library's ViewDefinition `name` (callers may change it freely)."""
    definitions = _definitions()
    if name not in definitions:
        raise NotFound(f"no library view {name!r}; the library has {', '.join(definitions)}")
    return json.loads(json.dumps(definitions[name]))
