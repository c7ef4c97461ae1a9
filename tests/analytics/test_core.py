"""Patient, message and clinical analytics and the risk score, each checked against plain Python over the
synthetic hospital's NDJSON files and the stored message rows."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from clinhub.analytics.clinical import clinical_insights, co_occurrences
from clinhub.analytics.messages import message_analytics
from clinhub.analytics.patients import patient_statistics
from clinhub.analytics.risk import patient_risk, risk_distribution, risk_scores
from clinhub.analytics.sources import Sources
from clinhub.config import Settings
from clinhub.engine import AnalyticEngine
from clinhub.errors import NotFound
from clinhub.fhir import load_ndjson
from clinhub.hl7 import messages
from clinhub.hub import Hub
from clinhub.store import put_resources
from clinhub.store.schema import hl7_message
from clinhub.synth import generate

AS_OF = date(2025, 6, 20)
MESSAGES = 300
START = datetime(2025, 3, 1, tzinfo=UTC)
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _hub(tmp: Path, name: str) -> Hub:
    hub = Hub(Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / name}", _env_file=None))
    hub.migrate()
    return hub


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory):
    """The FHIR resources (by type) of a 300-patient hospital, a store holding them, and a second store
    holding a few hundred of its HL7 messages, accepted and processed (processing maps messages to
    FHIR, which would change the first store's population)."""
    tmp = tmp_path_factory.mktemp("analytics")
    generate(tmp / "out", patients=300, seed=3)
    resources = {
        path.stem: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for path in (tmp / "out" / "fhir").glob("*.ndjson")
    }
    fhir = _hub(tmp, "fhir.db")
    load_ndjson(fhir.store, tmp / "out" / "fhir")
    feed = _hub(tmp, "messages.db")
    text = (tmp / "out" / "hl7" / "messages.hl7").read_bytes().decode("utf-8")
    received = [m for m in text.split("\n") if m.strip()][:MESSAGES]
    messages.accept(feed.store, [(m, START + timedelta(minutes=37 * i)) for i, m in enumerate(received)])
    messages.accept(feed.store, [("not an HL7 message", START)])  # stored as an error, acknowledged AR
    messages.process_pending(feed.store)
    yield resources, fhir, feed
    fhir.close()
    feed.close()


@pytest.fixture
def fhir_src(hospital):
    with AnalyticEngine(hospital[1].settings.store_url) as engine, Sources(engine) as src:
        yield src


@pytest.fixture
def message_src(hospital):
    with AnalyticEngine(hospital[2].settings.store_url) as engine, Sources(engine) as src:
        yield src


# ---------------------------------------------------------------------- plain Python oracles
def _day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def _age(patient: dict, at: date) -> int | None:
    born = _day(patient.get("birthDate")) if len(patient.get("birthDate") or "") == 10 else None
    died = _day(patient.get("deceasedDateTime"))
    if died and died < at:
        at = died
    if born is None or born > at:
        return None
    return at.year - born.year - ((at.month, at.day) < (born.month, born.day))


def _band(age: int | None) -> str:
    if age is None:
        return "unknown"
    for label, high in (("0-17", 17), ("18-34", 34), ("35-49", 49), ("50-64", 64), ("65-79", 79)):
        if age <= high:
            return label
    return "80+"


def _patient_key(reference: str) -> str:
    return reference.removeprefix("Patient/")


def _code(resource: dict, element: str, system: str) -> str | None:
    codings = (resource.get(element) or {}).get("coding", [])
    return next((c.get("code") for c in codings if c.get("system") == system), None)


def _condition_sets(resources) -> dict[str, set[str]]:
    known = {p["id"] for p in resources["Patient"]}
    out: dict[str, set[str]] = defaultdict(set)
    for c in resources["Condition"]:
        patient, code = _patient_key(c["subject"]["reference"]), _code(c, "code", SNOMED)
        if patient in known and code:
            out[patient].add(code)
    return out


def _medication_sets(resources) -> dict[str, set[str]]:
    known = {p["id"] for p in resources["Patient"]}
    out: dict[str, set[str]] = defaultdict(set)
    for m in resources["MedicationRequest"]:
        patient, code = _patient_key(m["subject"]["reference"]), _code(m, "medicationCodeableConcept", RXNORM)
        if patient in known and code:
            out[patient].add(code)
    return out


def _message_rows(feed: Hub) -> list:
    with feed.store.connect() as conn:
        return conn.execute(select(hl7_message)).all()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# ---------------------------------------------------------------------- patients
def test_patient_totals_sex_and_age_bands_match_the_files(hospital, fhir_src) -> None:
    patients = hospital[0]["Patient"]
    stats = patient_statistics(fhir_src, as_of=AS_OF)
    deceased = sum(
        1
        for p in patients
        if (_day(p.get("deceasedDateTime")) or date.max) <= AS_OF or p.get("deceasedBoolean") is True
    )
    assert stats["total"] == len(patients) == 300
    assert (stats["living"], stats["deceased"]) == (300 - deceased, deceased)
    assert stats["by_gender"] == dict(Counter(p.get("gender") or "unknown" for p in patients))
    bands = Counter(_band(_age(p, AS_OF)) for p in patients)
    assert {b["band"]: b["count"] for b in stats["age_bands"]} == {
        label: bands.get(label, 0) for label in ("0-17", "18-34", "35-49", "50-64", "65-79", "80+", "unknown")
    }
    home = [next((a for a in p.get("address", []) if a.get("use") == "home"), {}) for p in patients]
    states = Counter(a["state"] for a in home if a.get("state"))
    top = stats["geography"]["states"][0]
    assert (top["state"], top["count"]) == states.most_common(1)[0]
    assert (
        stats["geography"]["cities"][0]["count"]
        == Counter(a["city"] for a in home if a.get("city")).most_common(1)[0][1]
    )


def test_new_patients_come_from_first_encounters(hospital, fhir_src) -> None:
    resources = hospital[0]
    known = {p["id"] for p in resources["Patient"]}
    first: dict[str, date] = {}
    for e in resources["Encounter"]:
        patient, start = _patient_key(e["subject"]["reference"]), _day(e.get("period", {}).get("start"))
        if patient in known and start:
            first[patient] = min(first.get(patient, start), start)
    new = patient_statistics(fhir_src, as_of=AS_OF)["new_patients"]
    per_day = Counter(first.values())
    assert len(new["per_day"]) == 90 and new["per_day"][-1]["date"] == AS_OF.isoformat()
    assert all(d["count"] == per_day.get(date.fromisoformat(d["date"]), 0) for d in new["per_day"])
    assert len(new["per_week"]) == 26
    assert sum(w["count"] for w in new["per_week"]) == sum(
        1 for d in first.values() if date.fromisoformat(new["per_week"][0]["week_start"]) <= d <= AS_OF
    )
    last = sum(1 for d in first.values() if AS_OF - timedelta(days=29) <= d <= AS_OF)
    previous = sum(1 for d in first.values() if AS_OF - timedelta(days=59) <= d <= AS_OF - timedelta(days=30))
    assert (new["last_30_days"], new["previous_30_days"]) == (last, previous)
    assert new["growth_rate_percent"] == round(100 * (last - previous) / previous, 2)


# ---------------------------------------------------------------------- messages
def test_message_volumes_errors_acks_and_latency_match_the_rows(hospital, message_src) -> None:
    rows = _message_rows(hospital[2])
    result = message_analytics(message_src)
    assert result["total"] == len(rows) == MESSAGES + 1
    kinds = Counter(f"{r.message_type}^{r.trigger_event}" if r.message_type else "unparsed" for r in rows)
    assert {t["type"]: t["count"] for t in result["by_type"]} == dict(kinds)
    errors = Counter(
        f"{r.message_type}^{r.trigger_event}" if r.message_type else "unparsed"
        for r in rows
        if r.status == "error"
    )
    assert {t["type"]: t["error_rate"] for t in result["by_type"]} == {
        k: errors[k] / n for k, n in kinds.items()
    }
    assert result["errors"] == sum(errors.values()) >= 1
    assert result["ack_codes"] == dict(Counter(r.ack_code for r in rows))
    assert {h["hour"]: h["count"] for h in result["by_hour"] if h["count"]} == dict(
        Counter(r.received_at.hour for r in rows)
    )
    senders = Counter((r.sending_application or "", r.sending_facility or "") for r in rows)
    assert {(s["application"], s["facility"]): s["count"] for s in result["by_sender"]} == dict(senders)
    latencies = [
        (r.processed_at - r.received_at).total_seconds() * 1000
        for r in rows
        if r.status in ("processed", "replayed") and r.processed_at
    ]
    assert result["latency_ms"]["count"] == len(latencies) == MESSAGES
    for p in (50, 95, 99):
        assert result["latency_ms"][f"p{p}"] == pytest.approx(_percentile(latencies, p / 100), abs=1)


def test_message_analytics_since_counts_only_later_messages(hospital, message_src) -> None:
    since = START + timedelta(days=3)
    later = [r for r in _message_rows(hospital[2]) if r.received_at >= since.replace(tzinfo=None)]
    assert 0 < message_analytics(message_src, since=since)["total"] == len(later) < MESSAGES


# ---------------------------------------------------------------------- clinical
def test_top_diagnoses_and_medications_count_patients(hospital, fhir_src) -> None:
    resources = hospital[0]
    insights = clinical_insights(fhir_src, top=5)
    snomed = [d for d in insights["diagnoses"] if d["system"] == SNOMED]
    assert len(snomed) == 5
    patients_with = defaultdict(set)
    for c in resources["Condition"]:
        patients_with[_code(c, "code", SNOMED)].add(c["subject"]["reference"])
    assert snomed[0]["patients"] == max(len(v) for k, v in patients_with.items() if k)
    assert snomed[0]["patients"] == len(patients_with[snomed[0]["code"]])
    medication = insights["medications"][0]
    assert medication["patients"] == len(
        {
            m["subject"]["reference"]
            for m in resources["MedicationRequest"]
            if _code(m, "medicationCodeableConcept", RXNORM) == medication["code"]
        }
    )
    assert medication["display"]


def test_co_occurrence_support_confidence_and_lift_by_hand(hospital, fhir_src) -> None:
    resources = hospital[0]
    conditions, medications = _condition_sets(resources), _medication_sets(resources)
    n = len(resources["Patient"])
    pairs = co_occurrences(fhir_src, top=5, min_patients=5)
    assert pairs["condition-condition"] and pairs["condition-medication"]
    for kind, b_sets in (("condition-condition", conditions), ("condition-medication", medications)):
        best = pairs[kind][0]
        a = {p for p, codes in conditions.items() if best["a_code"] in codes}
        b = {p for p, codes in b_sets.items() if best["b_code"] in codes}
        both = a & b
        assert best["both_patients"] == len(both) >= 5
        assert best["support"] == pytest.approx(len(both) / n)
        assert best["confidence"] == pytest.approx(len(both) / len(a))
        assert best["lift"] == pytest.approx((len(both) / n) / ((len(a) / n) * (len(b) / n)))
        assert [p["lift"] for p in pairs[kind]] == sorted((p["lift"] for p in pairs[kind]), reverse=True)
    assert all(
        p["both_patients"] >= 20 for p in co_occurrences(fhir_src, min_patients=20)["condition-medication"]
    )


def test_abnormal_lab_rates_use_the_interpretation(hospital, fhir_src) -> None:
    labs = clinical_insights(fhir_src)["abnormal_labs"]
    assert labs
    first = labs[0]
    judged = abnormal = 0
    for o in hospital[0]["Observation"]:
        lab = any(
            c.get("code") == "laboratory" for cat in o.get("category", []) for c in cat.get("coding", [])
        )
        if not lab or _code(o, "code", "http://loinc.org") != first["code"]:
            continue
        interpretation = next(
            (c["code"] for i in o.get("interpretation", []) for c in i.get("coding", [])), None
        )
        if interpretation is not None:
            judged += 1
            abnormal += interpretation in ("H", "L", "HH", "LL", "A", "AA", "HU", "LU")
    assert first["by_interpretation"] == judged == first["judged"]
    assert first["abnormal"] == abnormal and first["rate"] == pytest.approx(abnormal / judged)


# ---------------------------------------------------------------------- risk
def _hand_score(resources, patient_id: str) -> tuple[float, str]:
    patient = next(p for p in resources["Patient"] if p["id"] == patient_id)
    age = _age(patient, AS_OF) or 0
    diagnoses = {
        _code(c, "code", SNOMED) or c["id"]
        for c in resources["Condition"]
        if _patient_key(c["subject"]["reference"]) == patient_id
        and (c.get("clinicalStatus") or {}).get("coding", [{}])[0].get("code")
        in ("active", "recurrence", "relapse")
    }
    medications = {
        _code(m, "medicationCodeableConcept", RXNORM) or m["id"]
        for m in resources["MedicationRequest"]
        if _patient_key(m["subject"]["reference"]) == patient_id and m.get("status") == "active"
    }
    score = 0.3 * min(age, 100) + 0.4 * min(10 * len(diagnoses), 100) + 0.3 * min(8 * len(medications), 100)
    return score, "low" if score < 30 else "medium" if score < 60 else "high"


def test_patient_risk_matches_a_hand_computed_score(hospital, fhir_src) -> None:
    resources = hospital[0]
    busiest = Counter(_patient_key(m["subject"]["reference"]) for m in resources["MedicationRequest"])
    for patient_id, _ in busiest.most_common(3):
        risk = patient_risk(fhir_src, patient_id, as_of=AS_OF)
        score, level = _hand_score(resources, patient_id)
        assert risk["score"] == pytest.approx(score, abs=0.01)
        assert risk["level"] == level
        parts = risk["parts"]
        assert sum(part["points"] for part in parts.values()) == pytest.approx(score, abs=0.01)
        assert parts["age"]["points"] == pytest.approx(0.3 * min(parts["age"]["value"] or 0, 100))


def test_risk_distribution_agrees_with_the_per_patient_scores(hospital, fhir_src) -> None:
    resources = hospital[0]
    distribution = risk_distribution(fhir_src, as_of=AS_OF)
    hand = [_hand_score(resources, p["id"]) for p in resources["Patient"]]
    assert distribution["patients"] == 300
    assert distribution["levels"] == {
        lvl: sum(1 for _, level in hand if level == lvl) for lvl in ("low", "medium", "high")
    }
    assert sum(b["count"] for b in distribution["histogram"]) == 300
    assert distribution["histogram"][0]["count"] == sum(1 for s, _ in hand if s < 10)
    assert distribution["mean"] == pytest.approx(sum(s for s, _ in hand) / 300, abs=0.01)
    scores = risk_scores(fhir_src, as_of=AS_OF).fetchall()
    assert len(scores) == 300


def test_unknown_patient_is_not_found(fhir_src) -> None:
    with pytest.raises(NotFound):
        patient_risk(fhir_src, "no-such-patient", as_of=AS_OF)


# ---------------------------------------------------------------------- empty stores
def test_an_empty_store_gives_zeros_not_errors(tmp_path: Path) -> None:
    hub = _hub(tmp_path, "empty.db")
    try:
        with AnalyticEngine(hub.settings.store_url) as engine, Sources(engine) as src:
            stats = patient_statistics(src, as_of=AS_OF)
            assert (stats["total"], stats["living"], stats["deceased"]) == (0, 0, 0)
            assert all(b["count"] == 0 for b in stats["age_bands"])
            assert stats["new_patients"]["growth_rate_percent"] is None
            result = message_analytics(src)
            assert (result["total"], result["error_rate"], result["latency_ms"]["p50"]) == (0, None, None)
            insights = clinical_insights(src)
            assert insights["diagnoses"] == insights["medications"] == insights["abnormal_labs"] == []
            distribution = risk_distribution(src)
            assert (distribution["patients"], distribution["mean"]) == (0, None)
            with pytest.raises(NotFound):
                patient_risk(src, "p1")
    finally:
        hub.close()


def test_an_engine_without_a_store_gives_empty_tables() -> None:
    with AnalyticEngine() as engine, Sources(engine) as src:
        assert patient_statistics(src, as_of=AS_OF)["total"] == 0
        assert message_analytics(src)["total"] == 0


def test_sources_drop_their_tables_at_exit(hospital) -> None:
    with AnalyticEngine(hospital[1].settings.store_url) as engine:
        with Sources(engine) as src:
            src.table("patients")
            schema = src.schema
        left = engine.fetchall("SELECT count(*) FROM duckdb_schemas() WHERE schema_name = ?", [schema])
        assert left == [(0,)]


def test_ages_deaths_and_level_boundaries_on_hand_made_patients(tmp_path: Path) -> None:
    hub = _hub(tmp_path, "small.db")
    patients = [
        {"resourceType": "Patient", "id": "tomorrow", "birthDate": "2000-06-21"},  # 24, not 25
        {"resourceType": "Patient", "id": "century", "birthDate": "1925-06-20", "gender": "female"},
        {"resourceType": "Patient", "id": "gone", "birthDate": "1950-01-01", "deceasedBoolean": True},
        {
            "resourceType": "Patient",
            "id": "died",
            "birthDate": "1940-01-01",
            "deceasedDateTime": "2020-01-01",
        },
        {"resourceType": "Patient", "id": "before-birth", "birthDate": "2030-01-01"},
    ]
    conditions = [
        {
            "resourceType": "Condition",
            "id": f"c{i}",
            "subject": {"reference": "Patient/tomorrow"},
            "clinicalStatus": {"coding": [{"code": status}]},
            "code": {"coding": [{"system": SNOMED, "code": code}]},
        }
        for i, (code, status) in enumerate(
            [("1", "active"), ("1", "active"), ("2", "relapse"), ("3", "resolved")]
        )
    ]
    put_resources(hub.store, patients + conditions)
    try:
        with AnalyticEngine(hub.settings.store_url) as engine, Sources(engine) as src:
            stats = patient_statistics(src, as_of=AS_OF)
            assert (stats["total"], stats["deceased"]) == (5, 2)
            bands = {b["band"]: b["count"] for b in stats["age_bands"] if b["count"]}
            assert bands == {"18-34": 1, "80+": 2, "65-79": 1, "unknown": 1}  # "died" at 80, "gone" 75
            century = patient_risk(src, "century", as_of=AS_OF)
            assert (century["score"], century["level"]) == (
                30,
                "medium",
            )  # 0.3 * 100, exactly on the boundary
            young = patient_risk(src, "Patient/tomorrow", as_of=AS_OF)
            assert young["parts"]["age"]["value"] == 24
            assert young["parts"]["diagnoses"] == {"value": 2, "weight": 0.4, "points": 8.0}
            assert young["score"] == pytest.approx(0.3 * 24 + 8)
    finally:
        hub.close()
