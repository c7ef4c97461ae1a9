"""The code lists in codes/*.csv, loaded once per process as immutable records."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True, slots=True)
class ConditionCode:
    key: str
    kind: str  # chronic | acute
    snomed: str
    snomed_display: str
    icd10: str
    icd10_display: str
    prevalence: tuple[float, float, float, float]  # by age band: 0-17, 18-39, 40-64, 65+
    excludes: str


@dataclass(frozen=True, slots=True)
class Medication:
    condition: str
    rxnorm: str
    display: str
    route: str  # HL7 table 0162
    sig: str
    weight: float
    min_age: int
    max_age: int
    drug_class: str
    give_unit: str


@dataclass(frozen=True, slots=True)
class ObservationCode:
    loinc: str
    display: str
    category: str  # vital-signs | laboratory
    panel: str
    unit: str
    normal_low: float | None
    normal_high: float | None
    plausible_low: float
    plausible_high: float
    mean: float | None
    sd: float | None
    decimals: int


@dataclass(frozen=True, slots=True)
class Panel:
    key: str
    loinc: str
    display: str


@dataclass(frozen=True, slots=True)
class Allergen:
    snomed: str
    display: str
    category: str  # food | medication | environment
    criticality: str
    weight: float
    reaction_snomed: str
    reaction_display: str
    avoid_class: str


@dataclass(frozen=True, slots=True)
class EncounterType:
    cls: str  # v3 ActCode: AMB | EMER | IMP
    kind: str
    ages: str  # adult | child | all
    snomed: str
    display: str
    weight: float


@dataclass(frozen=True, slots=True)
class Specialty:
    code: str  # NUCC taxonomy
    display: str
    degree: str  # HL7 table 0360
    weight: float
    facility_types: tuple[str, ...]
    attends: tuple[str, ...]
    procedures_per_month: float
    consults_per_month: float


@dataclass(frozen=True, slots=True)
class City:
    name: str
    state: str
    postal_code: str
    area_code: str


@dataclass(frozen=True)
class Codes:
    conditions: tuple[ConditionCode, ...]
    medications: dict[str, tuple[Medication, ...]]
    observations: dict[str, ObservationCode]
    panels: dict[str, Panel]
    effects: dict[tuple[str, str], tuple[float, float]]
    allergens: tuple[Allergen, ...]
    encounter_types: tuple[EncounterType, ...]
    specialties: tuple[Specialty, ...]
    female_names: tuple[str, ...]
    male_names: tuple[str, ...]
    family_names: tuple[str, ...]
    cities: tuple[City, ...]
    streets: tuple[str, ...]

    @property
    def chronic(self) -> tuple[ConditionCode, ...]:
        return tuple(c for c in self.conditions if c.kind == "chronic")

    @property
    def acute(self) -> tuple[ConditionCode, ...]:
        return tuple(c for c in self.conditions if c.kind == "acute")


def _rows(name: str) -> list[dict[str, str]]:
    text = files(__package__).joinpath("codes").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _number(text: str) -> float | None:
    return float(text) if text else None


def _observation(row: dict[str, str]) -> ObservationCode:
    return ObservationCode(
        loinc=row["loinc"],
        display=row["display"],
        category=row["category"],
        panel=row["panel"],
        unit=row["unit"],
        normal_low=_number(row["normal_low"]),
        normal_high=_number(row["normal_high"]),
        plausible_low=float(row["plausible_low"]),
        plausible_high=float(row["plausible_high"]),
        mean=_number(row["mean"]),
        sd=_number(row["sd"]),
        decimals=int(row["decimals"]),
    )


@cache
def load_codes() -> Codes:
    """Every code list, parsed; cached so each worker process reads the files once."""
    medications: dict[str, list[Medication]] = {}
    for row in _rows("medications.csv"):
        medications.setdefault(row["condition"], []).append(
            Medication(
                condition=row["condition"],
                rxnorm=row["rxnorm"],
                display=row["display"],
                route=row["route"],
                sig=row["sig"],
                weight=float(row["weight"]),
                min_age=int(row["min_age"]),
                max_age=int(row["max_age"]),
                drug_class=row["drug_class"],
                give_unit=row["give_unit"],
            )
        )
    names: dict[str, list[str]] = {}
    for row in _rows("names.csv"):
        names.setdefault(row["kind"], []).append(row["name"])
    return Codes(
        conditions=tuple(
            ConditionCode(
                key=row["key"],
                kind=row["kind"],
                snomed=row["snomed"],
                snomed_display=row["snomed_display"],
                icd10=row["icd10"],
                icd10_display=row["icd10_display"],
                prevalence=(
                    float(row["p_child"]),
                    float(row["p_young"]),
                    float(row["p_middle"]),
                    float(row["p_senior"]),
                ),
                excludes=row["excludes"],
            )
            for row in _rows("conditions.csv")
        ),
        medications={key: tuple(meds) for key, meds in medications.items()},
        observations={row["loinc"]: _observation(row) for row in _rows("observations.csv")},
        panels={
            row["panel"]: Panel(row["panel"], row["loinc"], row["display"]) for row in _rows("panels.csv")
        },
        effects={
            (row["condition"], row["loinc"]): (float(row["mean"]), float(row["sd"]))
            for row in _rows("condition_effects.csv")
        },
        allergens=tuple(
            Allergen(
                snomed=row["snomed"],
                display=row["display"],
                category=row["category"],
                criticality=row["criticality"],
                weight=float(row["weight"]),
                reaction_snomed=row["reaction_snomed"],
                reaction_display=row["reaction_display"],
                avoid_class=row["avoid_class"],
            )
            for row in _rows("allergies.csv")
        ),
        encounter_types=tuple(
            EncounterType(
                cls=row["class"],
                kind=row["kind"],
                ages=row["ages"],
                snomed=row["snomed"],
                display=row["display"],
                weight=float(row["weight"]),
            )
            for row in _rows("encounter_types.csv")
        ),
        specialties=tuple(
            Specialty(
                code=row["nucc_code"],
                display=row["display"],
                degree=row["degree"],
                weight=float(row["weight"]),
                facility_types=tuple(row["facility_types"].split("|")),
                attends=tuple(a for a in row["attends"].split("|") if a),
                procedures_per_month=float(row["procedures_per_month"]),
                consults_per_month=float(row["consults_per_month"]),
            )
            for row in _rows("specialties.csv")
        ),
        female_names=tuple(names["female"]),
        male_names=tuple(names["male"]),
        family_names=tuple(names["family"]),
        cities=tuple(
            City(row["city"], row["state"], row["postal_code"], row["area_code"])
            for row in _rows("cities.csv")
        ),
        streets=tuple(row["name"] for row in _rows("streets.csv")),
    )
