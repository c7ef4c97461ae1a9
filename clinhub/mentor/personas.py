"""The four mentor personas (Lua, Elro, Riri, Nana), loaded and checked from mentor/data/personas.yaml."""

from __future__ import annotations

import copy
import functools
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from clinhub.errors import InvalidInput, NotFound
from clinhub.mentor.vocab import LANGUAGES, PERSONAS

_PACKAGED = "personas.yaml"
_FIELDS = ("title", "traits", "strengths", "style")
_PROMPTS = ("system_prompt", "summary_prompt")

#: The placeholders each template may use (prompts.templated_answer fills exactly these).
SECTION_FIELDS = frozenset({"topic", "tone", "pace", "intent", "facts", "sources"})
TEMPLATE_FIELDS: dict[str, frozenset[str]] = {
    "opening": SECTION_FIELDS,
    "facts_body": SECTION_FIELDS,
    "no_facts": SECTION_FIELDS,
    "closing": SECTION_FIELDS,
    "fact_line": frozenset({"n", "label", "value", "detail", "source"}),
    "fact_detail": frozenset({"detail"}),
    "missing_value": frozenset(),
}


@dataclass(frozen=True)
class Persona:
    """One persona: who it is, what it is good at, and its prompts and answer templates per language."""

    name: str
    title: str
    traits: tuple[str, ...]
    strengths: tuple[str, ...]
    style: str
    #: language -> {"system_prompt": str, "summary_prompt": str, "templates": {name: str}}
    prompts: dict[str, dict]

    def as_dict(self, summary: bool = False) -> dict:
        """The persona for the API; `summary` leaves out the prompts and templates."""
        data = {
            "name": self.name,
            "title": self.title,
            "traits": list(self.traits),
            "strengths": list(self.strengths),
            "style": self.style,
        }
        if not summary:
            data["prompts"] = copy.deepcopy(self.prompts)
        return data


def load_personas(path: str | Path | None = None) -> dict[str, Persona]:
    """The personas by name, from `path` or the packaged personas.yaml (read once, then cached)."""
    if path is None:
        return dict(_packaged_personas())
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read personas file {path}: {exc.strerror}") from exc
    return _parse(text, path.name)


def get_persona(name: str) -> Persona:
    """A persona by name, in any letter case (NotFound listing the four otherwise)."""
    personas = _packaged_personas()
    wanted = str(name).strip().lower()
    for persona_name, persona in personas.items():
        if persona_name.lower() == wanted:
            return persona
    raise NotFound(
        f"no persona {name!r}; the personas are {', '.join(PERSONAS)}",
        detail={"personas": list(PERSONAS)},
    )


@functools.cache
def _packaged_personas() -> dict[str, Persona]:
    text = (resources.files("clinhub.mentor") / "data" / _PACKAGED).read_text(encoding="utf-8")
    return _parse(text, _PACKAGED)


def _parse(text: str, source: str) -> dict[str, Persona]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: expected a mapping of persona name to persona")
    unknown = [str(name) for name in data if name not in PERSONAS]
    if unknown:
        raise InvalidInput(f"{source}: unknown persona {', '.join(unknown)} (expected {', '.join(PERSONAS)})")
    missing = [name for name in PERSONAS if name not in data]
    if missing:
        raise InvalidInput(f"{source}: persona {', '.join(missing)} missing")
    return {name: _persona(name, data[name], source) for name in PERSONAS}


def _persona(name: str, raw: object, source: str) -> Persona:
    where = f"{source}: {name}"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: expected a mapping")
    for field in (*_FIELDS, *LANGUAGES):
        if field not in raw:
            raise InvalidInput(f"{where} has no {field}")
    for field in ("title", "style"):
        _require_text(raw[field], f"{where}.{field}")
    for field in ("traits", "strengths"):
        if not isinstance(raw[field], list) or not raw[field]:
            raise InvalidInput(f"{where}.{field}: expected a non-empty list")
        for n, item in enumerate(raw[field]):
            _require_text(item, f"{where}.{field}[{n}]")
    return Persona(
        name=name,
        title=raw["title"].strip(),
        traits=tuple(raw["traits"]),
        strengths=tuple(raw["strengths"]),
        style=raw["style"].strip(),
        prompts={lang: _language(raw[lang], f"{where}.{lang}") for lang in LANGUAGES},
    )


def _language(raw: object, where: str) -> dict:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: expected a mapping with system_prompt, summary_prompt and templates")
    for field in (*_PROMPTS, "templates"):
        if field not in raw:
            raise InvalidInput(f"{where} has no {field}")
    for field in _PROMPTS:
        _require_text(raw[field], f"{where}.{field}")
    templates = raw["templates"]
    if not isinstance(templates, dict):
        raise InvalidInput(f"{where}.templates: expected a mapping of template name to text")
    for template in TEMPLATE_FIELDS:
        if template not in templates:
            raise InvalidInput(f"{where}.templates has no {template}")
    unknown = sorted(set(templates) - set(TEMPLATE_FIELDS))
    if unknown:
        raise InvalidInput(f"{where}.templates: unknown template {', '.join(map(str, unknown))}")
    for template, allowed in TEMPLATE_FIELDS.items():
        _check_placeholders(templates[template], allowed, f"{where}.templates.{template}")
    return {
        "system_prompt": raw["system_prompt"].strip(),
        "summary_prompt": raw["summary_prompt"].strip(),
        "templates": {template: templates[template] for template in TEMPLATE_FIELDS},
    }


def _check_placeholders(text: object, allowed: frozenset[str], where: str) -> None:
    _require_text(text, where, allow_blank=True)
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from exc
    unknown = sorted(used - allowed)
    if unknown:
        unknown_text = ", ".join("{" + field + "}" for field in unknown)
        allowed_text = ", ".join("{" + field + "}" for field in sorted(allowed)) or "none"
        raise InvalidInput(f"{where}: unknown placeholder {unknown_text} (allowed: {allowed_text})")


def _require_text(value: object, where: str, *, allow_blank: bool = False) -> None:
    if not isinstance(value, str) or (not allow_blank and not value.strip()):
        raise InvalidInput(f"{where}: expected text")
