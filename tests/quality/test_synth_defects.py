"""On clinhub.synth data, every injected directory defect is found by the check meant for it."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date

import pytest

from clinhub.engine import AnalyticEngine
from clinhub.quality import failing_rows, load_ruleset, run_checks
from clinhub.store import create_store_engine, upgrade
from clinhub.store.directory import load_directory
from clinhub.synth import generate

REFERENCE_DATE = date(2025, 6, 30)  # synth's fixed "today"


@pytest.fixture(scope="module")
def hospital(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality-synth")
    # enough providers (one per 50 patients) at a high defect rate for every directory defect kind
    generate(tmp / "synth", patients=2500, seed=11, defect_rate=0.2)
    url = f"sqlite:///{tmp / 'store.db'}"
    store = create_store_engine(url)
    upgrade(store)
    load_directory(store, tmp / "synth" / "directory")
    store.dispose()
    defects = [json.loads(line) for line in (tmp / "synth" / "defects.ndjson").read_text().splitlines()]
    with AnalyticEngine(url) as engine:
        yield engine, [d for d in defects if d["file"].startswith("directory/")]


def _expected(defects: list[dict]) -> dict[str, set[str]]:
    """Defect kind -> ids of the records that carry it. Ids are unique across the directory's files (P, F,
    A prefixes); a provider's affiliation anomaly is recorded under the provider's id."""
    expected: dict[str, set[str]] = defaultdict(set)
    for d in defects:
        expected[d["kind"]].add(d["id"])
        if d["kind"] == "npi_duplicate":  # every provider of a shared NPI is a finding
            expected[d["kind"]].add(d["related"])
    return expected


def test_every_directory_defect_kind_has_a_check(hospital) -> None:
    _, defects = hospital
    meant = {kind for check in load_ruleset("directory").checks for kind in check.defects}
    assert {d["kind"] for d in defects} <= meant


def test_each_defect_is_found_by_its_check(hospital) -> None:
    engine, defects = hospital
    ruleset = load_ruleset("directory")
    found: dict[str, set[str]] = defaultdict(set)
    for check in ruleset.checks:
        if not check.defects:
            continue
        relation = failing_rows(engine, check, as_of=REFERENCE_DATE, macros=ruleset.macros)
        keys = {row[0] for row in relation.select(check.key[0]).fetchall()}
        for kind in check.defects:
            found[kind] |= keys
    expected = _expected(defects)
    assert len(expected) >= 15, sorted(expected)
    for kind, truth in expected.items():
        hits = found[kind] & truth
        recall, precision = len(hits) / len(truth), len(hits) / max(1, len(found[kind]))
        assert recall >= 0.99 and precision >= 0.99, (kind, recall, precision, truth ^ found[kind])


def test_a_run_over_synth_scores_and_grades(hospital) -> None:
    engine, _ = hospital
    result = run_checks(engine, load_ruleset("directory"), as_of=REFERENCE_DATE)
    assert result.counts()["error"] == 0
    assert result.counts()["failed"] > 5
    scores = result.scores
    assert 0 < scores.overall < 100 and scores.grade in "ABCDF"
    assert set(scores.categories) == {"conformance", "completeness", "plausibility"}
    failed = result.result("provider.npi.format")
    assert failed.status == "failed" and failed.sample and "provider_id" in failed.sample[0]
