"""The patient risk score of PRODUCT.md, per patient, over the population, and explained for one patient.

score = 0.3 * min(age, 100) + 0.4 * min(10 * diagnoses, 100) + 0.3 * min(8 * medications, 100);
low below 30, medium below 60, high otherwise.

- age: whole years at `as_of` (at death for the deceased, see patients.py); an unknown birth date adds
  nothing (age part 0) and leaves `age` NULL.
- diagnoses: distinct codes (SNOMED CT, else ICD-10-CM, else the resource id) among the patient's
  active conditions: clinical status active, recurrence or relapse, not entered in error.
- medications: distinct RxNorm codes (else the medication text, else the id) among the patient's
  MedicationRequests with status active.
"""

# ruff: noqa: S608
# (SQL is built from our own table names and dates formatted by Python)

from __future__ import annotations

from datetime import date

import duckdb

from clinhub.analytics.patients import people_sql
from clinhub.analytics.sources import Sources, day
from clinhub.errors import NotFound

AGE_WEIGHT, DIAGNOSES_WEIGHT, MEDICATIONS_WEIGHT = 0.3, 0.4, 0.3
DIAGNOSIS_POINTS, MEDICATION_POINTS, CAP = 10, 8, 100
LOW, MEDIUM = 30, 60  # a score below LOW is low, below MEDIUM medium, else high
LEVELS = ("low", "medium", "high")
ACTIVE_CONDITION = ("active", "recurrence", "relapse")
BIN = 10


def risk_sql(src: Sources, *, as_of: date | None = None) -> str:
    """SQL (over the sources' tables, already resolved) of one row per patient: patient_id, age,
    diagnoses, medications, age_part, diagnoses_part, medications_part, score, level."""
    active = ", ".join(f"'{s}'" for s in ACTIVE_CONDITION)
    return src.text(
        f"""
        WITH people AS ({people_sql(day(as_of))}),
        dx AS (
            SELECT patient_id, count(DISTINCT coalesce(snomed_code, icd10_code, id)) AS n
            FROM {{conditions}}
            WHERE clinical_status IN ({active})
              AND coalesce(verification_status, '') <> 'entered-in-error'
            GROUP BY patient_id
        ),
        rx AS (
            SELECT patient_id, count(DISTINCT coalesce(rxnorm_code, medication, id)) AS n
            FROM {{medications}} WHERE status = 'active' GROUP BY patient_id
        ),
        parts AS (
            SELECT p.id AS patient_id, p.age, coalesce(dx.n, 0) AS diagnoses,
                   coalesce(rx.n, 0) AS medications,
                   {AGE_WEIGHT} * least(coalesce(p.age, 0), {CAP}) AS age_part,
                   {DIAGNOSES_WEIGHT} * least({DIAGNOSIS_POINTS} * coalesce(dx.n, 0), {CAP})
                       AS diagnoses_part,
                   {MEDICATIONS_WEIGHT} * least({MEDICATION_POINTS} * coalesce(rx.n, 0), {CAP})
                       AS medications_part
            FROM people AS p
            LEFT JOIN dx ON dx.patient_id = p.id
            LEFT JOIN rx ON rx.patient_id = p.id
        )
        -- the parts are exact decimals, so a score on a boundary (30, 60) gets its level without rounding
        SELECT patient_id, age, diagnoses, medications, CAST(age_part AS DOUBLE) AS age_part,
               CAST(diagnoses_part AS DOUBLE) AS diagnoses_part,
               CAST(medications_part AS DOUBLE) AS medications_part, CAST(score AS DOUBLE) AS score,
               CASE WHEN score < {LOW} THEN 'low' WHEN score < {MEDIUM} THEN 'medium' ELSE 'high' END AS level
        FROM (SELECT *, age_part + diagnoses_part + medications_part AS score FROM parts)"""
    )


def risk_scores(src: Sources, *, as_of: date | None = None) -> duckdb.DuckDBPyRelation:
    """Every patient's score as a lazy relation (columns of `risk_sql`); read it inside the `with`."""
    return src.relation(risk_sql(src, as_of=as_of))


def risk_distribution(src: Sources, *, as_of: date | None = None) -> dict:
    """Patients per level, a histogram of scores in 10-point bins (100 falls in the last) and the mean."""
    scores = risk_sql(src, as_of=as_of)
    patients, mean, low, medium, high = src.one(
        f"""SELECT count(*), avg(score), count(*) FILTER (WHERE level = 'low'),
                   count(*) FILTER (WHERE level = 'medium'), count(*) FILTER (WHERE level = 'high')
            FROM ({scores})"""
    )
    bins = dict(
        src.rows(
            f"SELECT least(CAST(floor(score / {BIN}) AS INTEGER), {CAP // BIN - 1}) AS b, count(*) "
            f"FROM ({scores}) GROUP BY b"
        )
    )
    return {
        "as_of": day(as_of).isoformat(),
        "patients": patients,
        "levels": {"low": low, "medium": medium, "high": high},
        "histogram": [
            {"from": b * BIN, "to": (b + 1) * BIN, "count": bins.get(b, 0)} for b in range(CAP // BIN)
        ],
        "mean": None if mean is None else round(mean, 2),
    }


def patient_risk(src: Sources, patient_id: str, *, as_of: date | None = None) -> dict:
    """One patient's score with each part's raw number, weight and points; NotFound when unknown."""
    # the views key a patient as "Patient/<id>"; a bare id is taken as well
    found = src.records(
        f"SELECT * FROM ({risk_sql(src, as_of=as_of)}) WHERE patient_id IN (?, 'Patient/' || ?)",
        [patient_id, patient_id],
    )
    if not found:
        raise NotFound(f"no patient {patient_id!r}")
    row = found[0]
    return {
        "patient_id": row["patient_id"],
        "as_of": day(as_of).isoformat(),
        "score": round(row["score"], 2),
        "level": row["level"],
        "parts": {
            "age": {"value": row["age"], "weight": AGE_WEIGHT, "points": round(row["age_part"], 2)},
            "diagnoses": {
                "value": row["diagnoses"],
                "weight": DIAGNOSES_WEIGHT,
                "points": round(row["diagnoses_part"], 2),
            },
            "medications": {
                "value": row["medications"],
                "weight": MEDICATIONS_WEIGHT,
                "points": round(row["medications_part"], 2),
            },
        },
    }
