"""The prompt builder: a persona's chat messages for an LLM, or its templated answer when there is none."""

from __future__ import annotations

import functools

from clinhub.errors import InvalidInput
from clinhub.mentor.personas import Persona
from clinhub.mentor.vocab import LANGUAGES, Fact, ResonanceKey

MODES: tuple[str, ...] = ("full", "summary_light")
MAX_TEXT = 8_000
HISTORY_ROLES: tuple[str, ...] = ("user", "assistant")
#: The share of letters that must be Hangul for a message to count as Korean.
HANGUL_SHARE = 0.2
_TOPIC_CHARS = 80

# How the LLM should adapt to each part of the user's resonance key.
TONE_GUIDANCE: dict[str, str] = {
    "frustrated": "acknowledge the frustration briefly, then get to what helps",
    "playful": "a light touch is welcome, but keep the substance accurate",
    "anxious": "be calm and reassuring; say clearly what is known and what is not",
    "analytical": "be precise; show the figures and the reasoning",
    "calm": "a steady, complete answer suits them",
    "curious": "explain the why as well as the what",
    "urgent": "lead with the one action that matters most right now",
    "confused": "use plain words, define terms, one idea at a time",
    "collaborative": "treat it as shared work and suggest who to involve",
}
PACE_GUIDANCE: dict[str, str] = {
    "burst": "give the short answer first, in a sentence or two, then details only if needed",
    "flowing": "a conversational, connected answer suits them",
    "contemplative": "take room for a considered, unhurried answer",
    "medium": "make the point first, then the main supporting detail",
}
INTENT_GUIDANCE: dict[str, str] = {
    "seek_advice": "they want advice: give a recommendation, not only options",
    "problem_solving": "they want a problem solved: focus on the cause and the fix",
    "learning": "they want to understand: explain with an example",
    "validation": "they want their thinking checked: say plainly what holds and what does not",
    "planning": "they want a plan: order, owners and checkpoints",
    "reflection": "they want to reflect: end with one good question back",
}


def build_messages(
    persona: Persona,
    text: str,
    key: ResonanceKey,
    *,
    language: str = "en",
    mode: str = "full",
    history: list[dict] | None = None,
    facts: list[Fact] | None = None,
    max_history: int = 10,
) -> list[dict]:
    """OpenAI chat messages: the persona's system message, the last `max_history` turns, then `text`.

    The system message is the persona's prompt for `language` and `mode` (full: system_prompt;
    summary_light: summary_prompt), a line on the user's resonance and how to adapt to it, and the
    "Hub facts" the answer may quote. History turns keep only role and content.
    """
    _check_text(text)
    _check_language(language)
    if mode not in MODES:
        raise InvalidInput(f"mode {mode!r} is not one of {', '.join(MODES)}")
    prompts = persona.prompts[language]
    prompt = prompts["system_prompt"] if mode == "full" else prompts["summary_prompt"]
    system = f"{prompt}\n\n{_resonance_line(key)}\n\n{_facts_block(facts or [])}"
    return [
        {"role": "system", "content": system},
        *_history(history or [], max_history),
        {"role": "user", "content": text},
    ]


def templated_answer(
    persona: Persona,
    text: str,
    key: ResonanceKey,
    *,
    language: str = "en",
    facts: list[Fact] | None = None,
) -> str:
    """The persona's deterministic answer, without an LLM, from its templates for `language`.

    Opening, then the facts in the persona's structure (or its plain statement that the hub gave
    none), then a closing, which a burst pace leaves out. Same input, same output.
    """
    _check_text(text)
    _check_language(language)
    templates = persona.prompts[language]["templates"]
    facts = list(facts or [])
    context = {
        "topic": _topic(text),
        "tone": key.tone,
        "pace": key.pace,
        "intent": key.intent.replace("_", " "),
        "facts": "\n".join(_fact_line(templates, n, fact) for n, fact in enumerate(facts, 1)),
        "sources": ", ".join(dict.fromkeys(_one_line(fact.source) for fact in facts)),
    }
    sections = [templates["opening"], templates["facts_body"] if facts else templates["no_facts"]]
    if key.pace != "burst":
        sections.append(templates["closing"])
    rendered = (section.format(**context).strip() for section in sections)
    return "\n\n".join(section for section in rendered if section)


def detect_language(text: str) -> str:
    """ "ko" when Hangul makes up at least 20% of the letters in `text`, else "en"."""
    letters = [char for char in str(text) if char.isalpha()]
    if not letters:
        return "en"
    hangul = sum(1 for char in letters if _is_hangul(char))
    return "ko" if hangul / len(letters) >= HANGUL_SHARE else "en"


def _is_hangul(char: str) -> bool:
    code = ord(char)
    return (
        0xAC00 <= code <= 0xD7A3  # syllables
        or 0x1100 <= code <= 0x11FF  # jamo
        or 0x3130 <= code <= 0x318F  # compatibility jamo
        or 0xA960 <= code <= 0xA97F  # jamo extended-A
        or 0xD7B0 <= code <= 0xD7FF  # jamo extended-B
    )


def _check_text(text: object) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("the message is empty")
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"the message has {len(text):,} characters; the limit is {MAX_TEXT:,}")


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise InvalidInput(f"language {language!r} is not one of {', '.join(LANGUAGES)}")


@functools.cache
def _resonance_line(key: ResonanceKey) -> str:
    return (
        f"User resonance: tone {key.tone}, pace {key.pace}, intent {key.intent}. "
        f"Adapt: {TONE_GUIDANCE[key.tone]}; {PACE_GUIDANCE[key.pace]}; {INTENT_GUIDANCE[key.intent]}."
    )


def _facts_block(facts: list[Fact]) -> str:
    if not facts:
        return "Hub facts: none available"
    lines = []
    for fact in facts:
        line = f"- {_one_line(fact.label)}: {_format_value(fact.value, 'not available')}"
        if fact.detail:
            line += f" ({_one_line(fact.detail)})"
        lines.append(line)
    return "Hub facts:\n" + "\n".join(lines)


def _history(history: list[dict], max_history: int) -> list[dict]:
    if max_history < 0:
        raise InvalidInput(f"max_history must be 0 or more, not {max_history}")
    turns = []
    for n, turn in enumerate(history):
        if not isinstance(turn, dict):
            raise InvalidInput(f"history[{n}]: expected a mapping with role and content")
        role = turn.get("role")
        if role not in HISTORY_ROLES:
            raise InvalidInput(f"history[{n}]: role {role!r} is not one of {', '.join(HISTORY_ROLES)}")
        content = turn.get("content")
        if not isinstance(content, str):
            raise InvalidInput(f"history[{n}]: content must be text")
        turns.append({"role": role, "content": content})
    return turns[len(turns) - max_history :] if max_history else []


def _fact_line(templates: dict[str, str], n: int, fact: Fact) -> str:
    detail = templates["fact_detail"].format(detail=_one_line(fact.detail)) if fact.detail else ""
    return templates["fact_line"].format(
        n=n,
        label=_one_line(fact.label),
        value=_format_value(fact.value, templates["missing_value"]),
        detail=detail,
        source=_one_line(fact.source),
    )


def _format_value(value: object, missing: str) -> str:
    if value is None or value == "":
        return missing
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer():
            return f"{int(value):,}"
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    return _one_line(value)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _topic(text: str) -> str:
    topic = _one_line(text)
    if len(topic) <= _TOPIC_CHARS:
        return topic
    cut = topic[:_TOPIC_CHARS].rsplit(" ", 1)[0] or topic[:_TOPIC_CHARS]
    return cut.rstrip(" ,.;:") + "…"
