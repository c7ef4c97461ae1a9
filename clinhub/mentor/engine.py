"""The mentor's one engine, behind API v1, API v2 and the CLI.

`process` runs: resonance key (the caller's, validated, or inferred from the text) -> routing (affinity
matrix) -> grounding (the hub's facts the question needs, with the asker's permissions) -> prompt ->
answer (the LLM server when configured, else the persona's templated answer, labelled as such), with the
conversation's history and the routing and answer caches of the platform cache.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from prometheus_client import Counter, Histogram
from sqlalchemy import Engine

from clinhub.config import Settings
from clinhub.errors import ClinhubError, InvalidInput
from clinhub.mentor import conversations, grounding
from clinhub.mentor.personas import get_persona, load_personas
from clinhub.mentor.prompts import build_messages, detect_language, templated_answer
from clinhub.mentor.resonance import Inference, check_text, model_ready, shared_model
from clinhub.mentor.router import AffinityMatrix, Routing, recommend, route
from clinhub.mentor.vocab import LANGUAGES, PERSONAS, Fact, ResonanceKey
from clinhub.platform.cache import Cache
from clinhub.platform.logging import get_logger

log = get_logger(__name__)

PROCESSED = Counter(
    "clinhub_mentor_processed_total", "Mentor answers, by persona and source", ["persona", "source"]
)
PROCESS_SECONDS = Histogram(
    "clinhub_mentor_process_seconds",
    "Time to answer one mentor request",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CACHE = Counter("clinhub_mentor_cache_total", "Mentor cache lookups", ["cache", "result"])
ROUTED = Counter("clinhub_mentor_routed_total", "Mentor routing decisions, by primary persona", ["persona"])
LLM_FAILURES = Counter("clinhub_mentor_llm_failures_total", "LLM calls that failed (templated answer sent)")

MAX_BULK = 100
TEMPLATE_LABEL = "templated answer: no language model is configured"
FALLBACK_LABEL = "templated answer: the language model is unavailable"
ROUTE_TTL = 3600.0
ANSWER_TTL = 600.0


@dataclass
class Ask:
    """One question to the mentor."""

    text: str
    resonance_key: str | None = None
    session_id: str | None = None
    history: list[dict] | None = None
    include_metadata: bool = True
    use_cache: bool = True
    prompt_mode: str = "full"
    language: str | None = None
    persona: str | None = None  # answer as this persona instead of the routed one
    user: str | None = None
    role: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Mentor:
    def __init__(self, store: Engine, cache: Cache, settings: Settings, backend=None) -> None:
        self.store = store
        self.cache = cache
        self.settings = settings
        if backend is None:
            from clinhub.mentor.llm import backend_from_settings

            backend = backend_from_settings(settings)
        self.backend = backend
        self.matrix = AffinityMatrix.load()
        self.personas = load_personas()

    # ----------------------------------------------------------------------------- the steps
    def infer(self, text: str, use_cache: bool = True) -> Inference:
        """The text's key and confidences; the same text again comes from the cache."""
        check_text(text)
        cache_key = "mentor:infer:" + hashlib.sha256(text.encode()).hexdigest()[:32]
        if use_cache:
            found = self.cache.get(cache_key)
            if found is not None:
                CACHE.labels("inference", "hit").inc()
                key = ResonanceKey(found["tone"], found["pace"], found["intent"])
                return Inference(key, found["scores"], found["method"])
            CACHE.labels("inference", "miss").inc()
        inference = shared_model(self.settings.data_dir).infer(text)
        if use_cache:
            self.cache.set(cache_key, inference.as_dict(), ttl=ROUTE_TTL)
        return inference

    def infer_many(self, texts: list[str]) -> list[Inference]:
        return shared_model(self.settings.data_dir).infer_many(texts) if texts else []

    def route(self, key: ResonanceKey, use_cache: bool = True) -> tuple[Routing, bool]:
        cache_key = f"mentor:route:{key}"
        if use_cache:
            found = self.cache.get(cache_key)
            if found is not None:
                CACHE.labels("route", "hit").inc()
                return _routing_from(found, key), True
            CACHE.labels("route", "miss").inc()
        routing = route(key, self.matrix)
        if use_cache:
            self.cache.set(cache_key, routing.as_dict(), ttl=ROUTE_TTL)
        return routing, False

    def key_for(self, ask: Ask, inference: Inference | None = None) -> tuple[ResonanceKey, Inference | None]:
        if ask.resonance_key:
            return ResonanceKey.parse(ask.resonance_key), None
        inference = inference or self.infer(ask.text, ask.use_cache)
        return inference.key, inference

    # ------------------------------------------------------------------------------ process
    def process(self, ask: Ask, inference: Inference | None = None) -> dict:
        start = time.perf_counter()
        check_text(ask.text)
        if ask.prompt_mode not in ("full", "summary_light"):
            raise InvalidInput("prompt_mode must be 'full' or 'summary_light'")
        language = ask.language or detect_language(ask.text)
        if language not in LANGUAGES:
            raise InvalidInput(f"language must be one of {', '.join(LANGUAGES)}")
        key, inference = self.key_for(ask, inference)
        inferred_at = time.perf_counter()
        routing, route_hit = self.route(key, ask.use_cache)
        persona = get_persona(ask.persona) if ask.persona else self.personas[routing.primary]
        ROUTED.labels(routing.primary).inc()
        facts = grounding.gather(self.store, ask.text, persona.name, ask.role)
        history = self._history(ask)
        answer_key = self._answer_key(ask, persona.name, key, language, facts, history)
        cached = self.cache.get(answer_key) if ask.use_cache else None
        if ask.use_cache:
            CACHE.labels("answer", "hit" if cached else "miss").inc()
        if cached:
            content, source, label, model = (
                cached["content"],
                cached["source"],
                cached["label"],
                cached["model"],
            )
        else:
            content, source, label, model = self._answer(ask, persona, key, language, history, facts)
            if ask.use_cache and source != "fallback":
                self.cache.set(
                    answer_key,
                    {"content": content, "source": source, "label": label, "model": model},
                    ttl=ANSWER_TTL,
                )
        self._remember(ask, content, persona.name, key)
        seconds = time.perf_counter() - start
        PROCESSED.labels(persona.name, source).inc()
        PROCESS_SECONDS.labels(source).observe(seconds)
        log.info(
            "mentor_processed",
            request_id=ask.request_id,
            persona=persona.name,
            key=str(key),
            source=source,
            cache_hit=bool(cached),
            ms=round(seconds * 1000, 2),
        )  # never the question or the answer: they may carry health data
        response = {
            "request_id": ask.request_id,
            "content": content,
            "persona_used": persona.name,
            "resonance_key": str(key),
            "language": language,
            "answer_source": "llm" if source == "llm" else "template",
            "label": label,
            "routing": routing.as_dict(),
            "facts": [fact.as_dict() for fact in facts],
            "performance": {
                "seconds": round(seconds, 6),
                "inference_ms": round((inferred_at - start) * 1000, 3) if inference else 0.0,
                "cache_hit": bool(cached),
                "routing_cache_hit": route_hit,
            },
        }
        if ask.session_id:
            response["session_id"] = ask.session_id
        if ask.include_metadata:
            response["metadata"] = {
                "key_source": "inferred" if inference else "given",
                "inference": inference.as_dict() if inference else None,
                "model": model,
                "prompt_mode": ask.prompt_mode,
                "persona": persona.as_dict(summary=True),
            }
        return response

    def _history(self, ask: Ask) -> list[dict]:
        """The conversation's stored turns (and the summary of older ones), then the caller's."""
        summary, history = None, list(ask.history or [])
        if ask.session_id and ask.user:
            summary, stored = conversations.history(
                self.store, ask.session_id, ask.user, turns=self.settings.mentor_history_turns
            )
            history = stored + history
        if summary:
            history = [
                {"role": "assistant", "content": f"(Summary of our earlier conversation)\n{summary}"},
                *history,
            ]
        return history

    def _remember(self, ask: Ask, answer: str, persona: str, key: ResonanceKey) -> None:
        if ask.session_id and ask.user:
            conversations.append(
                self.store,
                ask.session_id,
                ask.user,
                ask.text,
                answer,
                persona=persona,
                resonance_key=str(key),
                summarize=self._summarizer(),
            )

    def stream(self, ask: Ask) -> tuple[dict, Iterator[str]]:
        """The routing head of an answer and an iterator over its text (the LLM's pieces as they come,
        or the templated answer in one piece)."""
        check_text(ask.text)
        language = ask.language or detect_language(ask.text)
        key, _ = self.key_for(ask)
        routing, _ = self.route(key, ask.use_cache)
        persona = get_persona(ask.persona) if ask.persona else self.personas[routing.primary]
        facts = grounding.gather(self.store, ask.text, persona.name, ask.role)
        head = {
            "request_id": ask.request_id,
            "persona_used": persona.name,
            "resonance_key": str(key),
            "routing": routing.as_dict(),
            "facts": [fact.as_dict() for fact in facts],
            "answer_source": "llm" if self.backend else "template",
        }
        if self.backend is None:
            head["label"] = TEMPLATE_LABEL
            pieces: Iterator[str] = iter(
                [templated_answer(persona, ask.text, key, language=language, facts=facts)]
            )
        else:
            pieces = self.backend.stream(self._prompt(ask, persona, key, language, self._history(ask), facts))

        def remembered() -> Iterator[str]:
            said = []
            for piece in pieces:
                said.append(piece)
                yield piece
            self._remember(ask, "".join(said), persona.name, key)  # only a whole answer is kept

        return head, remembered()

    def _prompt(self, ask, persona, key, language, history, facts) -> list[dict]:
        """The chat messages for the LLM: the persona's prompt, the facts, the history (one extra turn
        for the summary of older ones), the question."""
        return build_messages(
            persona,
            ask.text,
            key,
            language=language,
            mode=ask.prompt_mode,
            history=history,
            facts=facts,
            max_history=self.settings.mentor_history_turns + 1,
        )

    def _answer(self, ask, persona, key, language, history, facts) -> tuple[str, str, str | None, str | None]:
        if self.backend is None:
            text = templated_answer(persona, ask.text, key, language=language, facts=facts)
            return text, "template", TEMPLATE_LABEL, None
        try:
            result = self.backend.complete(self._prompt(ask, persona, key, language, history, facts))
        except ClinhubError as exc:  # unavailable, or the server refused our key: answer anyway
            LLM_FAILURES.inc()
            log.warning("mentor_llm_unavailable", request_id=ask.request_id, error=exc.message)
            text = templated_answer(persona, ask.text, key, language=language, facts=facts)
            return text, "fallback", FALLBACK_LABEL, None
        return result.content, "llm", None, result.model

    def _summarizer(self):
        if self.backend is None:
            return None

        def summarize(previous: str | None, turns: list[dict]) -> str:
            lines = [f"{t['role']}: {t['content'][:500]}" for t in turns]
            prompt = [
                {
                    "role": "system",
                    "content": "Summarise this conversation in at most five short bullet points. "
                    "Keep decisions, open questions and figures; leave out names and identifiers.",
                },
                {"role": "user", "content": ((previous or "") + "\n" + "\n".join(lines)).strip()},
            ]
            try:
                return self.backend.complete(prompt, max_tokens=300).content
            except ClinhubError:
                return conversations.extractive_summary(previous, turns)

        return summarize

    def _answer_key(self, ask, persona, key, language, facts, history) -> str:
        material = orjson.dumps(
            [ask.text, persona, str(key), language, ask.prompt_mode, [f.as_dict() for f in facts], history],
            default=str,
        )
        return "mentor:answer:" + hashlib.sha256(material).hexdigest()[:32]

    # ------------------------------------------------------------------------- the other calls
    def multi(self, ask: Ask, personas: list[str] | None = None) -> dict:
        """The same question answered by several personas (all four by default), routed order first."""
        key, inference = self.key_for(ask)
        routing, _ = self.route(key, ask.use_cache)
        names = (
            [get_persona(n).name for n in personas]
            if personas
            else sorted(PERSONAS, key=lambda n: -routing.scores[n])
        )
        answers = []
        for name in names:
            single = Ask(**{**ask.__dict__, "persona": name, "resonance_key": str(key), "session_id": None})
            answers.append(self.process(single))
        return {
            "request_id": ask.request_id,
            "resonance_key": str(key),
            "routing": routing.as_dict(),
            "inference": inference.as_dict() if inference else None,
            "answers": answers,
        }

    def recommend(self, scenario: str | None = None, resonance_key: str | None = None) -> dict:
        if resonance_key:
            key, inference = ResonanceKey.parse(resonance_key), None
        elif scenario:
            inference = self.infer(scenario)
            key = inference.key
        else:
            raise InvalidInput("give a scenario or a resonance_key")
        out = recommend(key, self.matrix)
        out["inference"] = inference.as_dict() if inference else None
        return out

    def bulk(self, asks: list[Ask]) -> list[dict]:
        """Up to MAX_BULK questions: keys inferred in one batch, answers concurrently; a bad item yields
        an error entry, not a failed batch."""
        if not asks:
            raise InvalidInput("bulk-process needs at least one item")
        if len(asks) > MAX_BULK:
            raise InvalidInput(f"bulk-process takes at most {MAX_BULK} items, not {len(asks)}")
        to_infer = [i for i, a in enumerate(asks) if not a.resonance_key and _valid_text(a.text)]
        inferred = dict(zip(to_infer, self.infer_many([asks[i].text for i in to_infer]), strict=True))

        def one(index: int) -> dict:
            try:
                return {"index": index, "ok": True, **self.process(asks[index], inferred.get(index))}
            except InvalidInput as exc:
                return {"index": index, "ok": False, "error": exc.message}

        workers = 8 if self.backend is not None else 1  # templated answers are CPU work: no gain in threads
        if workers == 1:
            return [one(i) for i in range(len(asks))]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, range(len(asks))))

    def status(self) -> dict:
        from clinhub.mentor.llm import describe
        from clinhub.mentor.resonance import Embedder

        return {
            "personas": list(PERSONAS),
            "llm": describe(self.backend),
            "inference": {
                "embeddings": Embedder.available(),
                "embedding_problem": Embedder.reason(),
                "trained": model_ready(),
            },
            "cache": self.cache.stats(),
            "time": datetime.now(UTC).isoformat(),
        }

    def cache_stats(self) -> dict:
        return self.cache.stats()

    def cache_clear(self) -> int:
        return self.cache.invalidate_pattern("mentor:*")

    def cache_invalidate(self, pattern: str) -> int:
        if not pattern or len(pattern) > 200:
            raise InvalidInput("give a pattern of 1 to 200 characters, e.g. route:* or answer:*")
        return self.cache.invalidate_pattern("mentor:" + pattern.removeprefix("mentor:"))


def _valid_text(text: str) -> bool:
    try:
        check_text(text)
    except InvalidInput:
        return False
    return True


def _routing_from(data: dict, key: ResonanceKey) -> Routing:
    return Routing(
        key=key,
        primary=data["primary"],
        secondary=data["secondary"],
        confidence=data["confidence"],
        scores=data["scores"],
        reasoning=data["reasoning"],
    )


__all__ = ["MAX_BULK", "Ask", "Fact", "Mentor"]
