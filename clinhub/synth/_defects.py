"""The defect kinds the generator injects on purpose, and the ground-truth record written for each."""

from __future__ import annotations

from random import Random

#: kind -> what is wrong; the order is the order of the manifest and of the CLI summary.
DEFECT_KINDS: dict[str, str] = {
    "missing_birth_date": "Patient without birthDate",
    "missing_gender": "Patient without gender",
    "duplicate_identifier": "Patient sharing its MRN with another Patient",
    "deceased_before_birth": "Patient deceasedDateTime before birthDate",
    "encounter_end_before_start": "Encounter period.end before period.start",
    "onset_before_birth": "Condition onsetDateTime before the patient's birthDate",
    "implausible_vital": "vital sign outside the physiologically plausible range",
    "orphan_reference": "reference to a patient, provider or facility that does not exist",
    "missing_npi": "provider or facility without an NPI",
    "npi_check_digit": "10-digit NPI whose Luhn check digit (prefix 80840) is wrong",
    "npi_malformed": "NPI that is not 10 digits (9 or 11 digits, or letters)",
    "npi_duplicate": "provider sharing its NPI with another provider",
    "missing_email": "provider without an email address",
    "email_syntax": "email address that is not syntactically valid",
    "email_test_domain": "email address at a reserved example domain",
    "phone_invalid": "telephone number that is not a valid 10-digit US number",
    "name_mismatch": "provider full_name that does not match first, middle and last name",
    "graduation_too_early": "provider graduation_year before birth_year + 18",
    "license_expired": "provider licence that expired before the reference date",
    "primary_affiliation_missing": "active provider with no primary affiliation",
    "primary_affiliation_multiple": "active provider with two primary affiliations",
    "no_active_affiliation": "active provider with no active affiliation",
    "too_many_affiliations": "provider with more than 10 affiliations",
}


def defect(kind: str, file: str, record_id: str, field: str, detail: str, related: str | None = None) -> dict:
    """One line of defects.ndjson; `related` names the other record of a duplicate or the missing target."""
    return {"kind": kind, "file": file, "id": record_id, "field": field, "detail": detail, "related": related}


def first_hit(rng: Random, rate: float, kinds: tuple[str, ...]) -> str | None:
    """Draw each kind with probability `rate` and return the first that hits.

    Kinds that edit the same field are drawn as one group, so one record never carries two defects
    that would hide each other (an NPI cannot be both missing and malformed).
    """
    for kind in kinds:
        if rng.random() < rate:
            return kind
    return None


def count_by_kind(records: list[dict]) -> dict[str, int]:
    counts = dict.fromkeys(DEFECT_KINDS, 0)
    for record in records:
        counts[record["kind"]] += 1
    return counts
