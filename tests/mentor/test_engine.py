"""The mentor's engine over a real store: routing, grounding with permissions, templated and LLM answers,
caching, conversations (on SQLite, PostgreSQL and MariaDB), bulk and multi-persona."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clinhub.config import Settings
from clinhub.errors import InvalidInput, NotFound
from clinhub.hl7 import messages
from clinhub.hub import Hub
from clinhub.mentor import conversations
from clinhub.mentor.engine import MAX_BULK, TEMPLATE_LABEL, Ask, Mentor
from clinhub.mentor.llm import OpenAICompatibleChat
from clinhub.mentor.router import route
from clinhub.mentor.vocab import InvalidResonanceKey, ResonanceKey

BROKEN_ORU = "\r".join(
    [
        "MSH|^~\\&|LAB|NORTH|HUB|HOSP|20260301101500||ORU^R01^ORU_R01|E1|P|2.5.1",
        "OBR|1||F1|CBC^Blood count",
        "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|||||F",
    ]
)  # no PID: goes to the error queue
ELRO_KEY = "analytical-burst-problem_solving"


def _hub(tmp_path: Path, url: str) -> Hub:
    hub = Hub(Settings(data_dir=tmp_path, database_url=url, _env_file=None))
    hub.migrate()
    return hub


@pytest.fixture
def hub(tmp_path: Path, sqlite_url: str) -> Iterator[Hub]:
    with _hub(tmp_path, sqlite_url) as hub:
        yield hub


@pytest.fixture
def mentor(hub: Hub) -> Mentor:
    return Mentor(hub.store, hub.cache, hub.settings, backend=None)


def test_a_given_key_routes_and_the_answer_is_labelled_templated(mentor: Mentor) -> None:
    answer = mentor.process(Ask(text="How do I replay the failed messages?", resonance_key=ELRO_KEY))
    expected = route(ResonanceKey.parse(ELRO_KEY))
    assert answer["persona_used"] == expected.primary
    assert answer["routing"]["scores"] == expected.scores
    assert answer["answer_source"] == "template" and answer["label"] == TEMPLATE_LABEL
    assert answer["content"].strip() and answer["metadata"]["key_source"] == "given"
    assert answer["performance"]["cache_hit"] is False


def test_a_bad_key_is_refused_with_the_allowed_values(mentor: Mentor) -> None:
    with pytest.raises(InvalidResonanceKey) as raised:
        mentor.process(Ask(text="hello", resonance_key="sleepy-burst-learning"))
    assert raised.value.http_status == 422 and "frustrated" in raised.value.detail["allowed"]["tone"]


def test_an_inferred_key_comes_with_its_confidences(mentor: Mentor) -> None:
    answer = mentor.process(Ask(text="Ugh!! The lab feed is down AGAIN!\nFix it?!"))
    inference = answer["metadata"]["inference"]
    assert answer["metadata"]["key_source"] == "inferred"
    assert inference["resonance_key"] == answer["resonance_key"]
    assert inference["pace"] == "burst" and set(inference["scores"]) == {"tone", "pace", "intent"}
    again = mentor.process(Ask(text="Ugh!! The lab feed is down AGAIN!\nFix it?!"))
    assert again["metadata"]["inference"] == inference and again["performance"]["cache_hit"]
    cached = [k for k in mentor.cache._memory if k.startswith("mentor:infer:")]
    assert len(cached) == 1  # the text's inference is cached, under a hash, not the text


def test_facts_come_from_the_hub_with_the_askers_permissions(mentor: Mentor, hub: Hub) -> None:
    now = datetime.now(UTC)
    messages.accept(hub.store, [(BROKEN_ORU, now)])
    messages.process_pending(hub.store)
    question = "How many HL7 messages are in the error queue?"
    engineer = mentor.process(Ask(text=question, resonance_key=ELRO_KEY, role="integration_engineer"))
    facts = {f["label"]: f["value"] for f in engineer["facts"]}
    assert facts["HL7 messages in the error queue"] == 1
    assert facts["error queue by message type"] == "ORU^R01: 1"
    assert "1" in engineer["content"]  # the templated answer states the figure
    researcher = mentor.process(Ask(text=question, resonance_key=ELRO_KEY, role="researcher"))
    assert {f["value"] for f in researcher["facts"]} == {"not shown: your role lacks analytics:read"}
    nobody = mentor.process(
        Ask(text="Tell me about the research request workflow", resonance_key=ELRO_KEY, role="researcher")
    )
    assert "not built yet" in nobody["facts"][0]["value"]


def test_answers_and_routes_are_cached(mentor: Mentor) -> None:
    ask = dict(text="What is a FHIR view?", resonance_key="curious-medium-learning")
    first = mentor.process(Ask(**ask))
    second = mentor.process(Ask(**ask))
    assert (first["performance"]["cache_hit"], second["performance"]["cache_hit"]) == (False, True)
    assert second["performance"]["routing_cache_hit"] and second["content"] == first["content"]
    uncached = mentor.process(Ask(**ask, use_cache=False))
    assert uncached["performance"]["cache_hit"] is False
    assert mentor.cache_invalidate("answer:*") >= 1
    assert mentor.process(Ask(**ask))["performance"]["cache_hit"] is False
    assert mentor.cache_clear() >= 2
    with pytest.raises(InvalidInput):
        mentor.cache_invalidate("")


def test_bulk_infers_in_one_batch_and_reports_bad_items(mentor: Mentor) -> None:
    asks = [Ask(text=f"Question number {i}: how do quality scores work?") for i in range(MAX_BULK - 1)]
    asks.append(Ask(text="   "))
    results = mentor.bulk(asks)
    assert len(results) == MAX_BULK and sum(r["ok"] for r in results) == MAX_BULK - 1
    assert results[-1] == {"index": MAX_BULK - 1, "ok": False, "error": "the message is empty"}
    with pytest.raises(InvalidInput, match="at most 100"):
        mentor.bulk([Ask(text="hi")] * (MAX_BULK + 1))


def test_multi_persona_answers_in_score_order(mentor: Mentor) -> None:
    out = mentor.multi(
        Ask(
            text="Let's plan the cut-over of the lab interface",
            resonance_key="collaborative-flowing-planning",
        )
    )
    names = [a["persona_used"] for a in out["answers"]]
    scores = out["routing"]["scores"]
    assert sorted(names) == ["Elro", "Lua", "Nana", "Riri"]
    assert [scores[n] for n in names] == sorted(scores.values(), reverse=True)
    assert len({a["content"] for a in out["answers"]}) == 4  # each in its own voice


def test_recommend_from_a_scenario_or_a_key(mentor: Mentor) -> None:
    by_key = mentor.recommend(resonance_key="anxious-contemplative-reflection")
    assert by_key["persona"] == route(ResonanceKey.parse("anxious-contemplative-reflection")).primary
    by_text = mentor.recommend(scenario="I keep worrying whether I handled the outage well...")
    assert by_text["inference"]["resonance_key"]
    with pytest.raises(InvalidInput):
        mentor.recommend()


def test_the_llm_answers_with_persona_prompt_facts_and_history(hub: Hub, llm) -> None:
    backend = OpenAICompatibleChat(
        llm.base_url, "test-model", name=f"engine-{uuid.uuid4().hex[:8]}", attempts=2, backoff_initial=0.01
    )
    mentor = Mentor(hub.store, hub.cache, hub.settings, backend=backend)
    answer = mentor.process(
        Ask(
            text="How many patients do we have?",
            resonance_key="analytical-medium-validation",
            history=[{"role": "user", "content": "earlier question"}],
            role="analyst",
        )
    )
    assert answer["answer_source"] == "llm" and answer["label"] is None
    assert answer["metadata"]["model"] == "test-model-served"
    sent = llm.bodies[-1]["messages"]
    assert sent[0]["role"] == "system" and "Patient resources" in sent[0]["content"]
    assert [m["content"] for m in sent[1:]] == ["earlier question", "How many patients do we have?"]
    assert answer["content"] == llm.answer_for(sent)
    llm.failing = True
    down = mentor.process(Ask(text="Is the feed ok?", resonance_key=ELRO_KEY, use_cache=False))
    assert down["answer_source"] == "template" and "unavailable" in down["label"]
    backend.close()


def test_conversations_are_per_user_and_summarised(tmp_path: Path, store_url: str) -> None:
    with _hub(tmp_path, store_url) as hub:
        mentor = Mentor(hub.store, hub.cache, hub.settings, backend=None)
        for turn in range(12):
            mentor.process(
                Ask(
                    text=f"Question {turn}. Tell me more.",
                    resonance_key="curious-medium-learning",
                    session_id="s-1",
                    user="ana",
                    use_cache=False,
                )
            )
        summary, recent = conversations.history(hub.store, "s-1", "ana", turns=4)
        assert [t["role"] for t in recent] == ["user", "assistant", "user", "assistant"]
        assert recent[-2]["content"] == "Question 11. Tell me more."
        assert summary and "- asked: Question 0." in summary  # older turns folded into the summary
        listed = conversations.list_conversations(hub.store, "ana")
        assert listed[0]["session_id"] == "s-1" and listed[0]["turns"] == 24
        assert conversations.history(hub.store, "s-1", "bob") == (None, [])  # not bob's
        with pytest.raises(NotFound):
            mentor.process(Ask(text="hi", resonance_key=ELRO_KEY, session_id="s-1", user="bob"))
        with pytest.raises(InvalidInput):
            conversations.check_session_id("bad id with spaces")
        conversations.delete_conversation(hub.store, "s-1", "ana")
        assert conversations.list_conversations(hub.store, "ana") == []


def test_streaming_from_the_llm_keeps_the_conversation(hub: Hub, llm) -> None:
    backend = OpenAICompatibleChat(llm.base_url, "m", name=f"stream-{uuid.uuid4().hex[:8]}", attempts=1)
    mentor = Mentor(hub.store, hub.cache, hub.settings, backend=backend)
    ask = Ask(text="walk me through a replay", resonance_key=ELRO_KEY, session_id="st-1", user="ana")
    head, pieces = mentor.stream(ask)
    assert head["answer_source"] == "llm" and head["persona_used"]
    text = "".join(pieces)
    assert text == "You said: WALK ME THROUGH A REPLAY"
    _, turns = conversations.history(hub.store, "st-1", "ana")
    assert [t["content"] for t in turns] == ["walk me through a replay", text]
    head, pieces = mentor.stream(Ask(text="and then?", resonance_key=ELRO_KEY, session_id="st-1", user="ana"))
    "".join(pieces)
    sent = [m["content"] for m in llm.bodies[-1]["messages"][1:]]
    assert sent == ["walk me through a replay", text, "and then?"]  # the stored turns went with it
    backend.close()
