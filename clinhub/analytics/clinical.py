"""Clinical insights: top diagnoses and medications, co-occurrences with support and lift, abnormal labs.

- Diagnoses are the Condition resources by code system (SNOMED CT and ICD-10-CM, the view's two code
  columns) and code, medications the MedicationRequests by RxNorm code; each with its most frequent
  display text, the number of records and of distinct patients. Every status counts: this is what the
  hospital has seen, not what is active now (risk.py counts active ones).
- Co-occurrences are per patient, among the patients of the patient table (N): a condition is its
  SNOMED CT code (ICD-10-CM when it has none), a medication its RxNorm code. For a pair (a, b):
  support = patients with both / N, confidence = patients with both / patients with a (for a
  condition-medication pair, a is the condition), lift = support(a, b) / (support(a) support(b)).
  Pairs seen in fewer than `min_patients` patients are left out, the rest ranked by lift.
- Abnormal lab rates are over laboratory Observations with a LOINC code. An observation is judged by
  its interpretation code when it has one (H, L, HH, LL, A, AA, HU, LU are abnormal; others normal),
  else by its quantity against its reference range (below low or above high), else it is not judged.
  The rate is abnormal / judged, with how many were judged each way.
"""

# ruff: noqa: S608
# (SQL is built from our own table names and constants)

from __future__ import annotations

from clinhub.analytics.sources import Sources

SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
ABNORMAL = ("H", "L", "HH", "LL", "A", "AA", "HU", "LU")
MIN_PATIENTS = 5

_DIAGNOSES = f"""
    SELECT '{SNOMED}' AS system, snomed_code AS code, display, patient_id FROM {{conditions}}
    WHERE snomed_code IS NOT NULL
    UNION ALL
    SELECT '{ICD10}', icd10_code, display, patient_id FROM {{conditions}} WHERE icd10_code IS NOT NULL"""
_MEDICATIONS = f"""
    SELECT '{RXNORM}' AS system, rxnorm_code AS code, medication AS display, patient_id FROM {{medications}}
    WHERE rxnorm_code IS NOT NULL"""
#: per patient, the conditions (kind 'condition') and medications (kind 'medication') they have
_ITEMS = """
    SELECT DISTINCT 'condition' AS kind, coalesce(c.snomed_code, c.icd10_code) AS code, c.patient_id
    FROM {conditions} AS c JOIN {patients} AS p ON p.id = c.patient_id
    WHERE coalesce(c.snomed_code, c.icd10_code) IS NOT NULL
    UNION ALL
    SELECT DISTINCT 'medication', m.rxnorm_code, m.patient_id
    FROM {medications} AS m JOIN {patients} AS p ON p.id = m.patient_id
    WHERE m.rxnorm_code IS NOT NULL"""
_DISPLAYS = """
    SELECT 'condition' AS kind, coalesce(snomed_code, icd10_code) AS code, mode(display) AS display
    FROM {conditions} GROUP BY ALL
    UNION ALL
    SELECT 'medication', rxnorm_code, mode(medication) FROM {medications} GROUP BY ALL"""


def _top_codes(src: Sources, rows_sql: str, top: int) -> list[dict]:
    """The `top` codes of each system of `rows_sql` (system, code, display, patient_id) by patients."""
    return src.records(
        f"""
        SELECT system, code, mode(display) AS display, count(*) AS records,
               count(DISTINCT patient_id) AS patients
        FROM ({rows_sql}) GROUP BY system, code
        QUALIFY row_number() OVER (PARTITION BY system ORDER BY patients DESC, records DESC, code) <= ?
        ORDER BY system, patients DESC, records DESC, code""",
        [top],
    )


def co_occurrences(src: Sources, *, top: int = 10, min_patients: int = MIN_PATIENTS) -> dict:
    """The `top` condition-condition and condition-medication pairs by lift, as described above."""
    pairs = f"""
        WITH items AS ({_ITEMS}),
        n AS (SELECT count(*) AS n FROM {{patients}}),
        singles AS (SELECT kind, code, count(*) AS patients FROM items GROUP BY kind, code),
        displays AS ({_DISPLAYS}),
        pairs AS (
            SELECT a.kind AS a_kind, a.code AS a_code, b.kind AS b_kind, b.code AS b_code,
                   count(*) AS both_patients
            FROM items AS a JOIN items AS b ON a.patient_id = b.patient_id
            WHERE a.kind = 'condition' AND (b.kind = 'medication' OR b.code > a.code)
            GROUP BY ALL HAVING count(*) >= ?
        )
        SELECT pairs.a_kind || '-' || pairs.b_kind AS pair, a_code, da.display AS a_display,
               b_code, db.display AS b_display, both_patients, sa.patients AS a_patients,
               sb.patients AS b_patients, both_patients / n.n AS support,
               both_patients / sa.patients AS confidence,
               both_patients * n.n / (sa.patients * sb.patients) AS lift
        FROM pairs CROSS JOIN n
        JOIN singles AS sa ON sa.kind = a_kind AND sa.code = a_code
        JOIN singles AS sb ON sb.kind = b_kind AND sb.code = b_code
        LEFT JOIN displays AS da ON da.kind = a_kind AND da.code = a_code
        LEFT JOIN displays AS db ON db.kind = b_kind AND db.code = b_code
        QUALIFY row_number() OVER (PARTITION BY pair ORDER BY lift DESC, both_patients DESC, a_code, b_code)
                <= ?
        ORDER BY pair, lift DESC, both_patients DESC, a_code, b_code"""
    rows = src.records(pairs, [min_patients, top])
    out: dict[str, list[dict]] = {"condition-condition": [], "condition-medication": []}
    for row in rows:
        out[row.pop("pair")].append(row)
    return out


def abnormal_labs(src: Sources) -> list[dict]:
    """Per LOINC code of laboratory observations: judged, abnormal, rate, and how they were judged."""
    abnormal = ", ".join(f"'{code}'" for code in ABNORMAL)
    return src.records(
        f"""
        WITH judged AS (
            SELECT loinc_code, loinc_display,
                   CASE WHEN interpretation IS NOT NULL THEN 'interpretation'
                        WHEN value IS NOT NULL AND (reference_low IS NOT NULL OR reference_high IS NOT NULL)
                        THEN 'reference_range' END AS method,
                   CASE WHEN interpretation IS NOT NULL THEN interpretation IN ({abnormal})
                        ELSE value < reference_low OR value > reference_high END AS abnormal
            FROM {{observations}}
            WHERE category = 'laboratory' AND loinc_code IS NOT NULL
        )
        SELECT loinc_code AS code, mode(loinc_display) AS display, count(*) AS judged,
               count(*) FILTER (WHERE coalesce(abnormal, FALSE)) AS abnormal,
               count(*) FILTER (WHERE coalesce(abnormal, FALSE)) / count(*) AS rate,
               count(*) FILTER (WHERE method = 'interpretation') AS by_interpretation,
               count(*) FILTER (WHERE method = 'reference_range') AS by_reference_range
        FROM judged WHERE method IS NOT NULL
        GROUP BY loinc_code ORDER BY rate DESC, judged DESC, code"""
    )


def clinical_insights(src: Sources, *, top: int = 10, min_patients: int = MIN_PATIENTS) -> dict:
    """Top diagnoses and medications (`top` per code system), co-occurrences and abnormal lab rates."""
    return {
        "diagnoses": _top_codes(src, _DIAGNOSES, top),
        "medications": _top_codes(src, _MEDICATIONS, top),
        "co_occurrences": co_occurrences(src, top=top, min_patients=min_patients),
        "abnormal_labs": abnormal_labs(src),
    }
