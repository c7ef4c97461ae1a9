"""The persona router: scores the four personas for a resonance key with the affinity matrix."""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from clinhub.errors import InvalidInput
from clinhub.mentor.personas import get_persona
from clinhub.mentor.vocab import INTENTS, PACES, PERSONAS, TONES, ResonanceKey

WEIGHTS: dict[str, float] = {"tone": 0.5, "pace": 0.3, "intent": 0.2}
#: The margin between the top two scores at which the router is fully sure of its choice.
FULL_MARGIN = 0.25

_PACKAGED = "affinity.yaml"
_PARTS: dict[str, tuple[str, ...]] = {"tone": TONES, "pace": PACES, "intent": INTENTS}


@dataclass(frozen=True)
class Routing:
    """The router's choice for one key, with every persona's score and a one-line reason."""

    key: ResonanceKey
    primary: str
    secondary: str
    confidence: float
    scores: dict[str, float]
    reasoning: str

    def as_dict(self) -> dict:
        return {
            "primary": self.primary,
            "secondary": self.secondary,
            "confidence": self.confidence,
            "scores": dict(self.scores),
            "reasoning": self.reasoning,
            "resonance_key": str(self.key),
        }


@dataclass(frozen=True)
class AffinityMatrix:
    """How well each persona suits each tone, pace and intent (values in [0, 1]; 76 in all).

    Every key's routing is computed once, when the matrix is made, so routing is a dictionary look-up.
    """

    tone: dict[str, dict[str, float]]
    pace: dict[str, dict[str, float]]
    intent: dict[str, dict[str, float]]
    _routings: dict[tuple[str, str, str], Routing] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate({"tone": self.tone, "pace": self.pace, "intent": self.intent}, "affinity matrix")
        routings = {
            (tone, pace, intent): _score(self, ResonanceKey(tone, pace, intent))
            for tone, pace, intent in itertools.product(TONES, PACES, INTENTS)
        }
        object.__setattr__(self, "_routings", routings)

    @classmethod
    def load(cls, path: str | Path | None = None) -> AffinityMatrix:
        """The matrix in `path`, or the packaged affinity.yaml (read once, then cached).

        InvalidInput names what is missing or wrong: a value, a persona, an unknown key, a number
        outside [0, 1].
        """
        if path is None:
            return _packaged_matrix()
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"cannot read affinity matrix {path}: {exc.strerror}") from exc
        return _parse(text, path.name)

    def value_count(self) -> int:
        """How many affinity values the matrix holds (76 for the full vocabulary)."""
        return sum(len(row) for part in (self.tone, self.pace, self.intent) for row in part.values())

    def routing(self, key: ResonanceKey) -> Routing:
        return self._routings[(key.tone, key.pace, key.intent)]


def route(key: ResonanceKey, matrix: AffinityMatrix | None = None) -> Routing:
    """The persona that fits `key` best, the runner-up, the scores and the confidence.

    score(persona) = 0.5 * tone + 0.3 * pace + 0.2 * intent affinity, rounded to 4 decimals; equal
    scores are ranked by the order of PERSONAS (Lua, Elro, Riri, Nana).

    confidence = top * (0.5 + 0.5 * min(1, margin / 0.25)), rounded to 3 decimals, where top is the
    best score and margin the gap to the second. It rises with both: a weak best fit or a near tie
    halves it at most, and a margin of 0.25 or more leaves the top score as it is.
    """
    return (matrix or _packaged_matrix()).routing(key)


def confidence(top: float, margin: float) -> float:
    """The router's confidence from the best score and its margin to the second (see route)."""
    return round(top * (0.5 + 0.5 * min(1.0, max(0.0, margin) / FULL_MARGIN)), 3)


def recommend(key: ResonanceKey, matrix: AffinityMatrix | None = None) -> dict:
    """The best persona for `key` with what it is good at, for POST /recommend.

    The routing (as in Routing.as_dict) plus `persona` (the name), its title, traits, style and
    `capabilities` (its strengths).
    """
    routing = route(key, matrix)
    persona = get_persona(routing.primary)
    return {
        **routing.as_dict(),
        "persona": persona.name,
        "title": persona.title,
        "traits": list(persona.traits),
        "style": persona.style,
        "capabilities": list(persona.strengths),
    }


@functools.cache
def _packaged_matrix() -> AffinityMatrix:
    text = (resources.files("clinhub.mentor") / "data" / _PACKAGED).read_text(encoding="utf-8")
    return _parse(text, _PACKAGED)


def _parse(text: str, source: str) -> AffinityMatrix:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML: {exc}") from exc
    _validate(data, source)
    return AffinityMatrix(
        **{part: {value: dict(data[part][value]) for value in values} for part, values in _PARTS.items()}
    )


def _validate(data: object, source: str) -> None:
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: expected a mapping with tone, pace and intent")
    unknown = [str(part) for part in data if part not in _PARTS]
    if unknown:
        raise InvalidInput(f"{source}: unknown section {', '.join(unknown)} (expected tone, pace, intent)")
    for part, values in _PARTS.items():
        rows = data.get(part)
        if not isinstance(rows, dict):
            raise InvalidInput(f"{source}: no {part} section (a mapping of {part} to persona affinities)")
        unknown = [str(value) for value in rows if value not in values]
        if unknown:
            raise InvalidInput(f"{source}: unknown {part} {', '.join(map(repr, unknown))}")
        for value in values:
            _validate_row(rows.get(value), f"{source}: {part} {value!r}")


def _validate_row(row: object, where: str) -> None:
    if row is None:
        raise InvalidInput(f"{where} is missing")
    if not isinstance(row, dict):
        raise InvalidInput(f"{where}: expected a mapping of persona to affinity")
    unknown = [str(name) for name in row if name not in PERSONAS]
    if unknown:
        raise InvalidInput(f"{where}: unknown persona {', '.join(unknown)}")
    for persona in PERSONAS:
        if persona not in row:
            raise InvalidInput(f"{where} has no value for {persona}")
        value = row[persona]
        is_number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not is_number or not 0 <= value <= 1:
            raise InvalidInput(f"{where}: {persona} is {value!r}, expected a number from 0 to 1")


def _score(matrix: AffinityMatrix, key: ResonanceKey) -> Routing:
    rows = {"tone": matrix.tone[key.tone], "pace": matrix.pace[key.pace], "intent": matrix.intent[key.intent]}
    scores = {
        persona: round(sum(weight * rows[part][persona] for part, weight in WEIGHTS.items()), 4)
        for persona in PERSONAS
    }
    primary, secondary = sorted(PERSONAS, key=lambda persona: (-scores[persona], PERSONAS.index(persona)))[:2]
    margin = round(scores[primary] - scores[secondary], 4)
    return Routing(
        key=key,
        primary=primary,
        secondary=secondary,
        confidence=confidence(scores[primary], margin),
        scores=scores,
        reasoning=_reasoning(key, rows, primary, secondary, margin),
    )


def _reasoning(
    key: ResonanceKey, rows: dict[str, dict[str, float]], primary: str, secondary: str, margin: float
) -> str:
    fit = (
        f"{key.tone} tone ({rows['tone'][primary]:.2f}), {key.pace} pace ({rows['pace'][primary]:.2f}) "
        f"and {key.intent} intent ({rows['intent'][primary]:.2f}) fit best"
    )
    if margin == 0:
        return f"{primary}: {fit}; {secondary} ties on score and comes second by persona order"
    return f"{primary}: {fit}; {secondary} second, {round(margin, 3):g} behind"
