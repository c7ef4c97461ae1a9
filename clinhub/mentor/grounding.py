"""The hub's own facts a persona grounds its answer in, fetched with the asking user's permissions.

Which facts a question needs is read from the question (its topics: interfaces, data quality, patient
figures, research requests) and from the persona (Elro knows the interfaces, Riri the quality scores and
figures, Nana the research requests, Lua points to help) when the question asks how things stand. Each
topic is read through its domain's public functions, never its tables, and only when the user's role
holds the topic's permission; a topic the role may not see yields a fact saying so, never the data.
Facts are aggregate figures: no message content, no patient data.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import Engine

from clinhub.mentor.vocab import Fact
from clinhub.platform.logging import get_logger
from clinhub.platform.permissions import allows

log = get_logger(__name__)

_TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "hl7": (
        r"\bhl7\b",
        r"\bmllp\b",
        r"\back",
        r"\bnak\b",
        r"interface",
        r"\bfeeds?\b",
        r"\badt\b",
        r"\boru\b",
        r"message",
        r"error queue",
        r"replay",
        "인터페이스",
        "메시지",
        "연동",
        "피드",
        "에러 큐",
    ),
    "quality": (
        r"quality",
        r"\bscores?\b",
        r"\bchecks?\b",
        r"duplicate",
        r"\bnpi\b",
        r"complete",
        r"plausib",
        "품질",
        "점수",
        "검사",
        "중복",
        "완전성",
    ),
    "analytics": (
        r"patients?\b",
        r"how many",
        r"volume",
        r"statistic",
        r"\bcounts?\b",
        r"observations?",
        r"encounters?",
        "환자",
        "통계",
        "몇 명",
        "건수",
        "규모",
    ),
    "research": (
        r"research",
        r"request",
        r"\birb\b",
        r"cohort",
        r"extract",
        r"de-?identif",
        r"feasib",
        "연구",
        "요청",
        "코호트",
        "추출",
        "비식별",
    ),
}
_TOPIC_PATTERNS = {topic: re.compile("|".join(words), re.I) for topic, words in _TOPIC_WORDS.items()}
_STATUS = re.compile(r"status|how (are|is) (we|it|things)|overview|state of|현황|상태|어때", re.I)
PERSONA_TOPICS: dict[str, tuple[str, ...]] = {
    "Elro": ("hl7",),
    "Riri": ("quality", "analytics"),
    "Nana": ("research",),
    "Lua": (),
}
#: topic -> the permission a role needs to see its facts
TOPIC_PERMISSION = {
    "hl7": "analytics:read",
    "quality": "quality:read",
    "analytics": "analytics:read",
    "research": "research:read",
}


def topics_of(text: str, persona: str) -> list[str]:
    """The topics a question needs facts on, in a fixed order."""
    wanted = {topic for topic, pattern in _TOPIC_PATTERNS.items() if pattern.search(text)}
    if _STATUS.search(text):
        wanted.update(PERSONA_TOPICS.get(persona, ()))
    return [topic for topic in _TOPIC_WORDS if topic in wanted]


def _hl7(store: Engine) -> list[Fact]:
    from clinhub.hl7 import messages

    counts = messages.counts(store)
    facts = [
        Fact("hl7", "HL7 messages stored", sum(counts.values()), "clinhub hl7 messages"),
        Fact("hl7", "waiting to be mapped to FHIR", counts.get("received", 0), None),
        Fact("hl7", "HL7 messages in the error queue", counts.get("error", 0), "clinhub hl7 errors"),
    ]
    worst = messages.error_types(store, limit=3)
    if worst:
        facts.append(
            Fact(
                "hl7",
                "error queue by message type",
                ", ".join(f"{w['type']}: {w['messages']}" for w in worst),
                "clinhub hl7 replay --status error (after the fix)",
            )
        )
    return facts


def _quality(store: Engine) -> list[Fact]:
    from clinhub.quality import history

    runs = history.list_runs(store, limit=20)
    latest: dict[str, dict] = {}
    for run in runs:
        latest.setdefault(run["ruleset"], run)
    if not latest:
        return [Fact("quality", "data quality runs", "none yet", "clinhub quality run RULESET")]
    facts = []
    for ruleset, run in sorted(latest.items()):
        score = "n/a" if run["overall"] is None else f"{run['overall']:.1f} (grade {run['grade']})"
        facts.append(
            Fact(
                "quality",
                f"quality score, rule set {ruleset}, {run['as_of']}",
                score,
                f"{run['failed']} of {run['checks']} checks failed; clinhub quality show {run['id'][:8]}",
            )
        )
    return facts


def _analytics(store: Engine) -> list[Fact]:
    from clinhub.store.resources import count_resources

    counts = count_resources(store)
    return [
        Fact("analytics", f"{kind} resources", counts.get(kind, 0), None)
        for kind in ("Patient", "Encounter", "Observation", "Condition", "MedicationRequest")
        if kind in counts or kind == "Patient"
    ]


def _research(store: Engine) -> list[Fact]:
    return [
        Fact(
            "research",
            "research data requests",
            "not available: the research request workflow is not built yet",
            None,
        )
    ]


_READERS: dict[str, Callable[[Engine], list[Fact]]] = {
    "hl7": _hl7,
    "quality": _quality,
    "analytics": _analytics,
    "research": _research,
}


def gather(store: Engine, text: str, persona: str, role: str | None) -> list[Fact]:
    """The facts `text` needs, as `role` may see them (None: no facts at all)."""
    facts: list[Fact] = []
    for topic in topics_of(text, persona):
        permission = TOPIC_PERMISSION[topic]
        if role is None or not allows(role, permission):
            facts.append(Fact(topic, f"{topic} facts", f"not shown: your role lacks {permission}", None))
            continue
        try:
            facts.extend(_READERS[topic](store))
        except Exception as exc:  # a domain's failure must not fail the answer
            log.warning("mentor_grounding_failed", topic=topic, error=type(exc).__name__)
            facts.append(Fact(topic, f"{topic} facts", "unavailable right now", None))
    return facts
