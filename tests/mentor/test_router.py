"""The persona router: the packaged affinity matrix, its validation, scores, confidence and reasons."""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path

import pytest
import yaml

from clinhub.errors import InvalidInput
from clinhub.mentor.personas import get_persona
from clinhub.mentor.router import WEIGHTS, AffinityMatrix, confidence, recommend, route
from clinhub.mentor.vocab import (
    INTENTS,
    PACES,
    PERSONAS,
    TONES,
    InvalidResonanceKey,
    ResonanceKey,
)


def packaged_data() -> dict:
    text = (resources.files("clinhub.mentor") / "data" / "affinity.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def write_matrix(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "affinity.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def flat_matrix(value: float = 0.5) -> dict[str, dict[str, dict[str, float]]]:
    return {
        part: {name: dict.fromkeys(PERSONAS, value) for name in names}
        for part, names in (("tone", TONES), ("pace", PACES), ("intent", INTENTS))
    }


def key(text: str) -> ResonanceKey:
    return ResonanceKey.parse(text)


# --- the matrix -------------------------------------------------------------------------------------


def test_packaged_matrix_has_76_values_in_range():
    matrix = AffinityMatrix.load()
    assert matrix.value_count() == 76 == (9 + 4 + 6) * 4
    assert set(matrix.tone) == set(TONES)
    assert set(matrix.pace) == set(PACES)
    assert set(matrix.intent) == set(INTENTS)
    for part in (matrix.tone, matrix.pace, matrix.intent):
        for row in part.values():
            assert set(row) == set(PERSONAS)
            assert all(0 <= value <= 1 for value in row.values())


def test_packaged_matrix_is_loaded_once():
    assert AffinityMatrix.load() is AffinityMatrix.load()


def test_matrix_file_loads_from_a_path(tmp_path):
    matrix = AffinityMatrix.load(write_matrix(tmp_path, packaged_data()))
    assert matrix == AffinityMatrix.load()


def test_missing_value_is_named(tmp_path):
    data = packaged_data()
    del data["tone"]["urgent"]["Nana"]
    with pytest.raises(InvalidInput) as caught:
        AffinityMatrix.load(write_matrix(tmp_path, data))
    assert caught.value.message == "affinity.yaml: tone 'urgent' has no value for Nana"


def test_missing_row_is_named(tmp_path):
    data = packaged_data()
    del data["intent"]["reflection"]
    with pytest.raises(InvalidInput, match="intent 'reflection' is missing"):
        AffinityMatrix.load(write_matrix(tmp_path, data))


def test_missing_section_is_named(tmp_path):
    data = packaged_data()
    del data["pace"]
    with pytest.raises(InvalidInput, match="no pace section"):
        AffinityMatrix.load(write_matrix(tmp_path, data))


@pytest.mark.parametrize("bad", [1.5, -0.1, "high", True, None])
def test_value_out_of_range_or_not_a_number_is_refused(tmp_path, bad):
    data = packaged_data()
    data["pace"]["burst"]["Riri"] = bad
    with pytest.raises(InvalidInput, match=r"pace 'burst': Riri is .*expected a number from 0 to 1"):
        AffinityMatrix.load(write_matrix(tmp_path, data))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["tone"].__setitem__("sleepy", dict.fromkeys(PERSONAS, 0.5)), "unknown tone 'sleepy'"),
        (lambda d: d["intent"]["learning"].__setitem__("Zed", 0.5), "intent 'learning': unknown persona Zed"),
        (lambda d: d.__setitem__("mood", {}), "unknown section mood"),
    ],
)
def test_unknown_keys_are_refused(tmp_path, change, expected):
    data = packaged_data()
    change(data)
    with pytest.raises(InvalidInput, match=expected):
        AffinityMatrix.load(write_matrix(tmp_path, data))


def test_unreadable_or_malformed_file(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read"):
        AffinityMatrix.load(tmp_path / "absent.yaml")
    path = tmp_path / "affinity.yaml"
    path.write_text("tone: [unclosed", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        AffinityMatrix.load(path)


# --- routing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "primary"),
    [
        ("frustrated-contemplative-reflection", "Lua"),
        ("anxious-flowing-seek_advice", "Lua"),
        ("analytical-burst-problem_solving", "Elro"),
        ("urgent-burst-problem_solving", "Elro"),
        ("analytical-medium-validation", "Riri"),
        ("curious-medium-learning", "Riri"),
        ("collaborative-flowing-planning", "Nana"),
        ("calm-flowing-planning", "Nana"),
    ],
)
def test_expected_primary(text, primary):
    assert route(key(text)).primary == primary


def test_scores_worked_by_hand():
    # analytical-medium-validation, affinities copied by hand from affinity.yaml:
    #   Riri: tone 0.90, pace 0.75, intent 0.90 -> 0.45 + 0.225 + 0.18 = 0.855
    #   Elro: tone 0.85, pace 0.70, intent 0.50 -> 0.425 + 0.21 + 0.10 = 0.735
    #   Nana: tone 0.40, pace 0.60, intent 0.45 -> 0.20 + 0.18 + 0.09 = 0.47
    #   Lua:  tone 0.25, pace 0.55, intent 0.55 -> 0.125 + 0.165 + 0.11 = 0.40
    # margin 0.12 -> confidence 0.855 * (0.5 + 0.5 * 0.12 / 0.25) = 0.855 * 0.74 = 0.6327
    routing = route(key("analytical-medium-validation"))
    assert routing.scores == {"Lua": 0.40, "Elro": 0.735, "Riri": 0.855, "Nana": 0.47}
    assert (routing.primary, routing.secondary) == ("Riri", "Elro")
    assert routing.confidence == 0.633


def test_scores_are_the_weighted_sum_for_every_key():
    matrix = AffinityMatrix.load()
    assert WEIGHTS == {"tone": 0.5, "pace": 0.3, "intent": 0.2}
    for tone, pace, intent in itertools.product(TONES, PACES, INTENTS):
        routing = route(ResonanceKey(tone, pace, intent))
        for persona in PERSONAS:
            expected = (
                0.5 * matrix.tone[tone][persona]
                + 0.3 * matrix.pace[pace][persona]
                + 0.2 * matrix.intent[intent][persona]
            )
            assert routing.scores[persona] == pytest.approx(expected, abs=5e-5)


def test_every_key_routes():
    keys = list(itertools.product(TONES, PACES, INTENTS))
    assert len(keys) == 216
    primaries = set()
    for tone, pace, intent in keys:
        routing = route(ResonanceKey(tone, pace, intent))
        assert set(routing.scores) == set(PERSONAS)
        assert routing.primary != routing.secondary
        assert routing.scores[routing.primary] == max(routing.scores.values())
        others = [s for p, s in routing.scores.items() if p != routing.primary]
        assert routing.scores[routing.secondary] == max(others)
        assert 0 < routing.confidence <= 1
        assert routing.reasoning.startswith(f"{routing.primary}: ")
        assert routing.secondary in routing.reasoning
        assert "\n" not in routing.reasoning
        primaries.add(routing.primary)
    assert primaries == set(PERSONAS)


def test_no_ties_at_the_top_in_the_packaged_matrix():
    ties = [
        (tone, pace, intent)
        for tone, pace, intent in itertools.product(TONES, PACES, INTENTS)
        if len(set(sorted(route(ResonanceKey(tone, pace, intent)).scores.values())[-2:])) == 1
    ]
    assert ties == []


def test_reasoning_names_the_affinities_and_the_margin():
    routing = route(key("analytical-burst-problem_solving"))
    assert routing.reasoning == (
        "Elro: analytical tone (0.85), burst pace (0.85) and problem_solving intent (0.95) fit best; "
        "Riri second, 0.125 behind"
    )


def test_ties_are_broken_by_persona_order():
    routing = route(key("calm-medium-learning"), AffinityMatrix(**flat_matrix()))
    assert (routing.primary, routing.secondary) == ("Lua", "Elro")
    assert "ties" in routing.reasoning
    assert routing.confidence == 0.25  # 0.5 * (0.5 + 0)


def test_confidence_grows_with_the_margin():
    data = flat_matrix(0.4)
    data["tone"]["calm"]["Nana"] = 0.9  # Nana 0.65, the others 0.40: margin 0.25
    data["tone"]["curious"]["Nana"] = 0.9  # Nana 0.65, Riri 0.60: margin 0.05
    data["tone"]["curious"]["Riri"] = 0.8
    matrix = AffinityMatrix(**data)
    wide = route(key("calm-flowing-planning"), matrix)
    narrow = route(key("curious-flowing-planning"), matrix)
    assert wide.scores["Nana"] == narrow.scores["Nana"] == 0.65
    assert (narrow.primary, narrow.secondary) == ("Nana", "Riri")
    assert wide.confidence == 0.65  # 0.65 * (0.5 + 0.5 * 1)
    assert narrow.confidence == 0.39  # 0.65 * (0.5 + 0.5 * 0.2)
    assert wide.confidence > narrow.confidence


def test_confidence_formula_is_monotonic():
    assert confidence(0.8, 0.0) == 0.4
    assert confidence(0.8, 0.25) == 0.8
    assert confidence(0.8, 1.0) == 0.8
    margins = [0.0, 0.02, 0.05, 0.1, 0.2, 0.25]
    assert [confidence(0.8, m) for m in margins] == sorted(confidence(0.8, m) for m in margins)
    assert confidence(0.9, 0.1) > confidence(0.7, 0.1)


def test_as_dict():
    routing = route(key("anxious-contemplative-reflection"))
    data = routing.as_dict()
    assert data["resonance_key"] == "anxious-contemplative-reflection"
    assert data["primary"] == "Lua"
    assert set(data) == {"primary", "secondary", "confidence", "scores", "reasoning", "resonance_key"}
    data["scores"]["Lua"] = 0  # a copy: the cached routing stays as it was
    assert route(key("anxious-contemplative-reflection")).scores["Lua"] > 0


def test_recommend_gives_the_persona_and_its_capabilities():
    result = recommend(key("collaborative-flowing-planning"))
    assert result["persona"] == result["primary"] == "Nana"
    assert result["title"] == "Coordinator"
    assert result["capabilities"] == list(get_persona("Nana").strengths)
    assert result["capabilities"] and all(isinstance(c, str) for c in result["capabilities"])
    assert result["resonance_key"] == "collaborative-flowing-planning"
    assert result["confidence"] == route(key("collaborative-flowing-planning")).confidence


# --- keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "analytical",
        "analytical-burst",
        "sleepy-burst-learning",
        "calm-slow-learning",
        "calm-burst-gossip",
        "calm-burst-learning-extra",
    ],
)
def test_bad_keys_are_refused(text):
    with pytest.raises(InvalidResonanceKey) as caught:
        ResonanceKey.parse(text)
    assert caught.value.http_status == 422
    assert caught.value.detail["allowed"]["tone"] == list(TONES)


def test_good_key_round_trips():
    assert str(key("curious-flowing-learning")) == "curious-flowing-learning"
