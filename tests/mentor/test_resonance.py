"""Resonance inference: rhythm features, the labelled sets, the quality bars on the held-out set, the
keyword baseline, and the n-gram fallback without the embedding model."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinhub.errors import InvalidInput
from clinhub.mentor import resonance
from clinhub.mentor.resonance import (
    PACE_FEATURES,
    Embedder,
    evaluate,
    keyword_key,
    load_examples,
    rhythm,
    train,
)
from clinhub.mentor.vocab import INTENTS, PACES, TONES

HELDOUT = Path(__file__).parent / "data" / "heldout.jsonl"


@pytest.fixture(scope="module")
def model(trained_model):
    return trained_model


@pytest.fixture(scope="module")
def heldout():
    return load_examples(HELDOUT)


def test_the_labelled_sets_cover_every_label_in_both_languages(heldout) -> None:
    training = load_examples()
    assert len(training) >= 400 and len(heldout) >= 150
    for examples in (training, heldout):
        for part, labels in (("tone", TONES), ("pace", PACES), ("intent", INTENTS)):
            for lang in ("en", "ko"):
                seen = {getattr(e, part) for e in examples if e.lang == lang}
                assert seen == set(labels), (part, lang, set(labels) - seen)
    assert not {e.text for e in training} & {e.text for e in heldout}  # held out for real


def test_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"text": "hi", "lang": "en", "tone": "calm", "pace": "medium", "intent": "learning"}\n'
        '{"text": "hi", "lang": "en", "tone": "sleepy", "pace": "medium", "intent": "learning"}\n'
    )
    with pytest.raises(InvalidInput, match=r"bad.jsonl line 2: .*tone 'sleepy'"):
        load_examples(path)


def test_rhythm_tells_bursts_from_flowing_text() -> None:
    burst = rhythm("Feed down!\nAll ACKs failing!!\nNow what?")
    flowing = rhythm(
        "I was looking at the admissions feed this morning and noticed that the messages from the north "
        "campus arrive a little later than the others, so I wonder whether we should compare their timings"
    )
    index = {name: i for i, name in enumerate(PACE_FEATURES)}
    assert len(burst) == len(PACE_FEATURES)
    assert burst[index["short_fragment_share"]] > flowing[index["short_fragment_share"]]
    assert burst[index["exclamations_per_sentence"]] > 0 == flowing[index["exclamations_per_sentence"]]
    assert flowing[index["words_per_sentence"]] > 3 * burst[index["words_per_sentence"]]
    korean = rhythm("급해요!\n지금 안 돼요!!\n도와주세요")
    assert korean[index["hangul_share"]] > 0.9 and korean[index["short_lines_in_a_row"]] == 3


def test_inference_meets_the_quality_bars_on_the_held_out_set(model, heldout) -> None:
    report = evaluate(model, heldout)
    ours, baseline = report["model"]["all"], report["baseline"]["all"]
    assert model.use_embeddings, Embedder.reason()  # CI installs the model: the bars are for it
    assert ours["tone"] >= 0.85, report
    assert ours["intent"] >= 0.85, report
    assert ours["pace"] >= 0.95, report
    for part in ("tone", "pace", "intent"):
        assert ours[part] >= baseline[part] + 0.15, (part, report)  # a clear margin over keywords
    for lang in ("en", "ko"):
        assert min(report["model"][lang].values()) >= 0.75, (lang, report)


def test_inference_gives_ranked_confidences(model) -> None:
    found = model.infer("Why do our ADT feeds keep failing with AE acks?! Fix it now!")
    assert set(found.confidence) == {"tone", "pace", "intent"}
    for part, scores in found.confidence.items():
        values = list(scores.values())
        assert values == sorted(values, reverse=True) and abs(sum(values) - 1) < 0.01, part
        assert next(iter(scores)) == getattr(found.key, part)
    assert found.method == "embeddings+ngrams"
    assert found.as_dict()["resonance_key"] == str(found.key)


def test_infer_rejects_empty_and_huge_text(model) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        model.infer("   ")
    with pytest.raises(InvalidInput, match="limit is 8,000"):
        model.infer("x" * 8001)


def test_embeddings_are_cached_between_trainings(tmp_path: Path) -> None:
    examples = load_examples()[:40]
    train(examples, cache_dir=tmp_path)
    cached = list(tmp_path.glob("mentor-embeddings-*.npy"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    again = train(examples, cache_dir=tmp_path)
    assert cached[0].stat().st_mtime_ns == before and again.use_embeddings


def test_without_the_embedding_model_ngrams_still_classify(heldout) -> None:
    fallback = train(use_embeddings=False)
    assert fallback.method.startswith("ngrams")
    report = evaluate(fallback, heldout)
    assert report["model"]["all"]["tone"] > report["baseline"]["all"]["tone"]


def test_keyword_baseline_reads_obvious_keywords() -> None:
    key = keyword_key("I'm so worried about the plan for next quarter")
    assert (key.tone, key.intent) == ("anxious", "planning")
    assert keyword_key("급해요! 당장 오류 고쳐야 해요!").tone == "urgent"
    assert keyword_key("hello").tone == "calm"  # no hit: the default


def test_the_process_model_is_trained_once(embeddings_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(resonance, "_shared", None)
    first = resonance.shared_model(embeddings_dir)
    assert resonance.shared_model(embeddings_dir) is first and first.use_embeddings
