"""The resonance vocabulary (PRODUCT.md): 9 tones, 4 paces, 6 intents, and the key that joins them."""

from __future__ import annotations

from dataclasses import dataclass

from clinhub.errors import InvalidInput

TONES: tuple[str, ...] = (
    "frustrated",
    "playful",
    "anxious",
    "analytical",
    "calm",
    "curious",
    "urgent",
    "confused",
    "collaborative",
)
PACES: tuple[str, ...] = ("burst", "flowing", "contemplative", "medium")
INTENTS: tuple[str, ...] = (
    "seek_advice",
    "problem_solving",
    "learning",
    "validation",
    "planning",
    "reflection",
)


class InvalidResonanceKey(InvalidInput):
    """A resonance key with a value outside the vocabulary (HTTP 422, with the allowed values)."""

    http_status = 422


PERSONAS: tuple[str, ...] = ("Lua", "Elro", "Riri", "Nana")
LANGUAGES: tuple[str, ...] = ("en", "ko")


@dataclass(frozen=True, slots=True)
class ResonanceKey:
    """tone-pace-intent, e.g. `frustrated-burst-problem_solving`."""

    tone: str
    pace: str
    intent: str

    def __post_init__(self) -> None:
        problems = [
            f"{part} {value!r} is not one of {', '.join(allowed)}"
            for part, value, allowed in (
                ("tone", self.tone, TONES),
                ("pace", self.pace, PACES),
                ("intent", self.intent, INTENTS),
            )
            if value not in allowed
        ]
        if problems:
            raise InvalidResonanceKey(
                "invalid resonance key: " + "; ".join(problems),
                detail={"allowed": allowed_values()},
            )

    @classmethod
    def parse(cls, text: str) -> ResonanceKey:
        """A key from `tone-pace-intent` (InvalidInput naming the allowed values otherwise)."""
        parts = str(text).strip().split("-")
        if len(parts) != 3:
            raise InvalidResonanceKey(
                f"invalid resonance key {text!r}: expected tone-pace-intent, e.g. 'curious-flowing-learning'",
                detail={"allowed": allowed_values()},
            )
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.tone}-{self.pace}-{self.intent}"


def allowed_values() -> dict[str, list[str]]:
    return {"tone": list(TONES), "pace": list(PACES), "intent": list(INTENTS)}


@dataclass(frozen=True, slots=True)
class Fact:
    """One of the hub's own facts a persona grounds its answer in (returned with the answer)."""

    source: str  # the domain it came from: quality, analytics, hl7, research, platform
    label: str  # what it is, for a person: "HL7 messages in the error queue"
    value: object  # the figure or short text
    detail: str | None = None  # where to look next, e.g. "clinhub hl7 errors"

    def as_dict(self) -> dict:
        return {"source": self.source, "label": self.label, "value": self.value, "detail": self.detail}
