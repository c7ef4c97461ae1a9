"""One synthetic patient's record (demographics, encounters, conditions, observations, orders, allergies)
and the clinical defects injected into it."""

from __future__ import annotations

from bisect import bisect
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from itertools import accumulate
from random import Random

from clinhub.synth._codes import (
    Allergen,
    City,
    Codes,
    ConditionCode,
    EncounterType,
    Medication,
    ObservationCode,
    load_codes,
)
from clinhub.synth._common import (
    REFERENCE_DATE,
    REFERENCE_DATETIME,
    WINDOW_START,
    at_day,
    mrn,
    new_id,
    patient_id,
    patient_rng,
)
from clinhub.synth._defects import defect, first_hit
from clinhub.synth._directory import Roster, person_name

PATIENT_FILE = "fhir/Patient.ndjson"
ENCOUNTER_FILE = "fhir/Encounter.ndjson"
CONDITION_FILE = "fhir/Condition.ndjson"
OBSERVATION_FILE = "fhir/Observation.ndjson"

# Age in years: a general hospital sees mostly adults, a fifth children, a long tail of the very old.
_AGE_BANDS = ((0.05, 18.0), (18.0, 40.0), (40.0, 65.0), (65.0, 80.0), (80.0, 100.0))
_AGE_CUMULATIVE = (0.20, 0.46, 0.78, 0.93, 1.0)
_DEATH_RISK = ((40, 0.004), (65, 0.01), (80, 0.04), (200, 0.12))  # (age below, chance in the window)
_ALLERGY_COUNTS = (0, 1, 2)
_ALLERGY_COUNT_WEIGHTS = (0.82, 0.14, 0.04)
_ACUTE_CHANCE = {"symptom": 0.7, "emergency": 0.6, "admission": 0.8}
_ADMISSION_ACUTE = ("pneumonia", "uti", "bronchitis")
_MINUTES = {"AMB": (15, 60), "EMER": (120, 480), "IMP": (2 * 1440, 9 * 1440)}
_LATEST_START = REFERENCE_DATETIME - timedelta(days=10)
_ONE_YEAR = timedelta(days=365)


@dataclass(slots=True)
class Measurement:
    """An Observation; blood pressure carries its systolic and diastolic values as components."""

    id: str
    code: ObservationCode
    subject: str
    time: datetime
    value: float | int | None = None
    flag: str | None = None
    components: list[list] = field(default_factory=list)  # [code, value, flag] per component


@dataclass(slots=True)
class Problem:
    """A Condition."""

    id: str
    code: ConditionCode
    onset: datetime
    recorded: datetime
    abatement: datetime | None
    visit: Visit


@dataclass(slots=True)
class Order:
    """A MedicationRequest."""

    id: str
    medication: Medication
    authored: datetime
    status: str
    reason: Problem
    visit: Visit


@dataclass(slots=True)
class Allergy:
    id: str
    allergen: Allergen
    recorded: datetime
    visit: Visit


@dataclass(slots=True)
class Visit:
    """An Encounter and what happened during it."""

    id: str
    type: EncounterType
    start: datetime
    end: datetime
    provider: int
    facility: int
    subject: str
    updated: datetime | None = None  # when an ADT^A08 revised the registration
    acute: ConditionCode | None = None
    measurements: list[Measurement] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)


@dataclass(slots=True)
class Patient:
    index: int
    id: str
    mrn: str
    gender: str | None
    given: str
    middle: str
    family: str
    birth_date: date
    birth_date_known: bool
    deceased: datetime | None
    line: str
    city: City
    phone: str
    visits: list[Visit] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    allergies: list[Allergy] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to generate any patient; small and picklable."""

    seed: int
    defect_rate: float
    roster: Roster


class Tables:
    """Lookups derived from the code lists once per process, so each patient only draws numbers."""

    def __init__(self, codes: Codes) -> None:
        self.codes = codes
        self.chronic = codes.chronic
        acute = codes.acute
        self.acute = acute
        self.acute_weights = [list(accumulate(c.prevalence[band] for c in acute)) for band in range(4)]
        admission = [c for c in acute if c.key in _ADMISSION_ACUTE]
        self.admission_acute = admission
        self.admission_weights = [
            list(accumulate(c.prevalence[band] for c in admission)) for band in range(4)
        ]
        self.allergen_weights = list(accumulate(a.weight for a in codes.allergens))
        self.types: dict[tuple[str, bool], tuple[list[EncounterType], list[float]]] = {}
        for cls in ("AMB", "EMER", "IMP"):
            for child in (False, True):
                rows = [
                    t
                    for t in codes.encounter_types
                    if t.cls == cls and t.ages in ("all", "child" if child else "adult")
                ]
                self.types[cls, child] = (rows, list(accumulate(t.weight for t in rows)))
        obs = codes.observations
        self.vitals = [obs[c] for c in ("8867-4", "9279-1", "8310-5", "59408-5")]
        self.systolic, self.diastolic = obs["8480-6"], obs["8462-4"]
        self.bp = ObservationCode(
            loinc=codes.panels["bp"].loinc,
            display=codes.panels["bp"].display,
            category="vital-signs",
            panel="bp",
            unit="",
            normal_low=None,
            normal_high=None,
            plausible_low=0,
            plausible_high=0,
            mean=None,
            sd=None,
            decimals=0,
        )
        self.weight, self.height, self.bmi = obs["29463-7"], obs["8302-2"], obs["39156-5"]
        self.labs: dict[str, list[ObservationCode]] = {}
        for code in obs.values():
            if code.category == "laboratory":
                self.labs.setdefault(code.panel, []).append(code)


@cache
def tables() -> Tables:
    return Tables(load_codes())


def _band(age: float) -> int:
    """Index into ConditionCode.prevalence: 0-17, 18-39, 40-64, 65+."""
    return 0 if age < 18 else 1 if age < 40 else 2 if age < 65 else 3


def _flag(code: ObservationCode, value: float) -> str | None:
    if code.normal_low is None and code.normal_high is None:
        return None
    if code.normal_high is not None and value > code.normal_high:
        return "H"
    if code.normal_low is not None and value < code.normal_low:
        return "L"
    return "N"


def _rounded(code: ObservationCode, value: float) -> float | int:
    value = min(code.plausible_high, max(code.plausible_low, value))
    return round(value) if code.decimals == 0 else round(value, code.decimals)


class _Builder:
    """Builds one patient from its own random stream (`rng`) and injects defects from another (`drng`),
    so a patient is the same at every defect rate apart from its defects."""

    def __init__(self, index: int, plan: Plan, t: Tables) -> None:
        self.index = index
        self.plan = plan
        self.t = t
        self.rng = patient_rng(plan.seed, index)
        self.drng = Random(f"{plan.seed}:patient-defects:{index}")
        self.means: dict[str, tuple[float, float]] = {}
        self.defects: list[dict] = []

    # ---------------------------------------------------------------- the record
    def build(self) -> Patient:
        rng, t = self.rng, self.t
        codes = t.codes
        pid = new_id(rng)  # must stay the stream's first draw: patient_id() relies on it
        female = rng.random() < 0.51
        self.female = female
        low, high = _AGE_BANDS[bisect(_AGE_CUMULATIVE, rng.random())]
        age = low + rng.random() * (high - low)
        self.age = age
        self.band = _band(age)
        birth = REFERENCE_DATE - timedelta(days=int(age * 365.2425))
        given, family = person_name(rng, codes, female)
        middle = person_name(rng, codes, female)[0] if rng.random() < 0.4 else ""
        if middle == given:
            middle = ""
        chronic = [c for c in t.chronic if rng.random() < c.prevalence[self.band]]
        present = {c.key for c in chronic}
        self.chronic = [c for c in chronic if c.excludes not in present]
        self.child = age < 12
        roster = self.plan.roster
        home = rng.choice(roster.pairs_for("AMB-child" if age < 18 else "AMB-adult"))
        city_index = (
            roster.facilities[home[1]][2] if rng.random() < 0.85 else rng.randrange(len(codes.cities))
        )
        city = codes.cities[city_index]
        patient = Patient(
            index=self.index,
            id=pid,
            mrn=mrn(self.plan.seed, self.index),
            gender="female" if female else "male",
            given=given,
            middle=middle,
            family=family,
            birth_date=birth,
            birth_date_known=True,
            deceased=None,
            line=f"{rng.randint(1, 9999)} {rng.choice(codes.streets)}",
            city=city,
            phone=f"({city.area_code}) 555-01{rng.randint(0, 99):02d}",
        )
        dies = rng.random() < next(risk for limit, risk in _DEATH_RISK if age < limit)
        self._visits(patient, home, dies)
        if dies:  # after every encounter ended: the last one, an admission, may be where it happened
            last = max(patient.visits, key=lambda v: v.end)
            after = last.end if last.type.cls == "IMP" else last.end + timedelta(days=rng.randint(0, 60))
            patient.deceased = min(after, REFERENCE_DATETIME)
        self._allergies(patient)
        self._problems(patient)
        for visit in patient.visits:
            self._measure(visit, patient.id)
        self._inject(patient)
        return patient

    def _visits(self, patient: Patient, home: tuple[int, int], dies: bool) -> None:
        rng, t = self.rng, self.t
        roster = self.plan.roster
        mean = 1.0 + 0.4 * len(self.chronic) + (0.8 if self.age >= 65 else 0) + (0.6 if self.age < 5 else 0)
        count = 1 + min(11, int(rng.expovariate(1 / mean)))
        first = max(WINDOW_START, at_day(patient.birth_date) + timedelta(days=1))
        span = max(0, int((_LATEST_START - first).total_seconds() // 60))
        offsets = sorted(rng.randrange(span + 1) for _ in range(count))
        p_imp = 0.03 + (0.04 if self.age >= 65 else 0) + (0.02 if len(self.chronic) >= 3 else 0)
        for n, offset in enumerate(offsets):
            u = rng.random()
            cls = "IMP" if u < p_imp or (dies and n == count - 1) else "EMER" if u < p_imp + 0.09 else "AMB"
            rows, weights = t.types[cls, self.age < 18]
            etype = rows[bisect(weights, rng.random() * weights[-1])]
            if etype.kind == "followup" and not self.chronic:
                etype = next(r for r in rows if r.kind == "symptom")
            day = first + timedelta(minutes=offset)
            if cls == "AMB":  # clinics keep office hours
                start = day.replace(hour=rng.randint(8, 16), minute=5 * rng.randrange(12), second=0)
            else:
                start = day.replace(second=0)
            low, high = _MINUTES[cls]
            end = min(start + timedelta(minutes=rng.randint(low, high)), REFERENCE_DATETIME)
            if cls == "AMB":
                provider, facility = (
                    home if rng.random() < 0.85 else rng.choice(roster.pairs_for("AMB-adult"))
                )
            else:
                provider, facility = rng.choice(roster.pairs_for(cls))
            visit = Visit(new_id(rng), etype, start, end, provider, facility, patient.id)
            if rng.random() < 0.1:
                visit.updated = start + timedelta(seconds=int((end - start).total_seconds()) // 2)
            patient.visits.append(visit)
        patient.visits.sort(key=lambda v: v.start)

    def _allergies(self, patient: Patient) -> None:
        rng, t = self.rng, self.t
        count = rng.choices(_ALLERGY_COUNTS, _ALLERGY_COUNT_WEIGHTS)[0]
        first = patient.visits[0]
        chosen: list[Allergen] = []
        for _ in range(count):
            allergen = t.codes.allergens[bisect(t.allergen_weights, rng.random() * t.allergen_weights[-1])]
            if allergen not in chosen:
                chosen.append(allergen)
                patient.allergies.append(Allergy(new_id(rng), allergen, first.start, first))
        self.avoid = [a.avoid_class for a in chosen if a.avoid_class]

    def _problems(self, patient: Patient) -> None:
        rng, t = self.rng, self.t
        birth = at_day(patient.birth_date)
        for code in self.chronic:
            visit = patient.visits[0] if rng.random() < 0.7 else rng.choice(patient.visits)
            recorded = visit.start
            if visit is patient.visits[0] and rng.random() < 0.75:  # long-standing, first seen here
                earliest = max(min(birth + _ONE_YEAR, recorded), recorded - 15 * _ONE_YEAR)
                room = (recorded - timedelta(days=7) - earliest).total_seconds()
                onset = earliest + timedelta(seconds=int(rng.random() * room)) if room > 0 else recorded
            else:
                onset = max(birth, recorded - timedelta(days=rng.randint(1, 60)))
            self._diagnose(
                patient, visit, code, onset.replace(hour=0, minute=0, second=0), None, chronic=True
            )
        for visit in patient.visits:
            chance = _ACUTE_CHANCE.get(visit.type.kind)
            if chance is None or rng.random() >= chance:
                continue
            if visit.type.kind == "admission":
                conditions, weights = t.admission_acute, t.admission_weights[self.band]
            else:
                conditions, weights = t.acute, t.acute_weights[self.band]
            code = conditions[bisect(weights, rng.random() * weights[-1])]
            visit.acute = code
            onset = max(birth, visit.start - timedelta(days=rng.randint(1, 5))).replace(hour=0, minute=0)
            resolved = visit.start + timedelta(days=rng.randint(7, 21))
            self._diagnose(patient, visit, code, onset, min(resolved, patient.deceased or REFERENCE_DATETIME))

    def _diagnose(
        self,
        patient: Patient,
        visit: Visit,
        code: ConditionCode,
        onset: datetime,
        abatement: datetime | None,
        *,
        chronic: bool = False,
    ) -> None:
        rng = self.rng
        problem = Problem(new_id(rng), code, onset, visit.start, abatement, visit)
        visit.problems.append(problem)
        patient.problems.append(problem)
        if rng.random() >= (0.85 if chronic else 0.8):
            return
        age = (visit.start.date() - patient.birth_date).days / 365.2425
        options = [
            m
            for m in self.t.codes.medications.get(code.key, ())
            if m.min_age <= age <= m.max_age and m.drug_class not in self.avoid
        ]
        if not options:
            return
        count = 2 if code.key == "hypertension" and len(options) > 1 and rng.random() < 0.3 else 1
        chosen: list[Medication] = []
        while len(chosen) < count:
            medication = rng.choices(options, [m.weight for m in options])[0]
            if medication not in chosen:
                chosen.append(medication)
        duration = (visit.end - visit.start).total_seconds()
        for medication in chosen:
            authored = visit.start + timedelta(
                seconds=int(min(duration, 86_400) * (0.5 + 0.4 * rng.random()))
            )
            status = (
                "active" if chronic and patient.deceased is None else "stopped" if chronic else "completed"
            )
            visit.orders.append(Order(new_id(rng), medication, authored, status, problem, visit))

    # ---------------------------------------------------------------- observations
    def _value(self, code: ObservationCode, visit: Visit) -> float | int:
        rng = self.rng
        acute = visit.acute
        effect = self.t.codes.effects.get((acute.key, code.loinc)) if acute else None
        if effect:
            return _rounded(code, rng.gauss(*effect))
        personal = self.means.get(code.loinc)
        if personal is None:
            mean, sd = self._baseline(code)
            personal = (rng.gauss(mean, sd * 0.7), sd)
            self.means[code.loinc] = personal
        return _rounded(code, rng.gauss(personal[0], personal[1] * 0.5))

    def _baseline(self, code: ObservationCode) -> tuple[float, float]:
        effects = self.t.codes.effects
        for condition in self.chronic:
            effect = effects.get((condition.key, code.loinc))
            if effect:
                return effect
        if self.child and ("child", code.loinc) in effects:
            return effects["child", code.loinc]
        return code.mean, code.sd

    def _observe(self, visit: Visit, subject: str, code: ObservationCode, at: datetime) -> Measurement:
        value = self._value(code, visit)
        measurement = Measurement(new_id(self.rng), code, subject, at, value, _flag(code, value))
        visit.measurements.append(measurement)
        return measurement

    def _body(self) -> tuple[float, float]:
        """(height cm, weight kg): constant for the patient, so BMI agrees with weight and height."""
        if "height" not in self.means:
            rng, age = self.rng, self.age
            adult = rng.gauss(163, 6.5) if self.female else rng.gauss(176, 7)
            if age < 1:
                height = 50 + 25 * age
            elif age < 13:
                height = 75 + 6.2 * (age - 1)
            else:
                height = min(adult, 149 + (adult - 149) * (age - 13) / 5)
            if age < 18:
                bmi = rng.gauss(17, 2)
            elif any(c.key == "obesity" for c in self.chronic):
                bmi = rng.gauss(35, 4)
            else:
                bmi = rng.gauss(26.5, 3.5)
            bmi = min(60.0, max(13.0, bmi))
            self.means["height"] = (height, bmi * (height / 100) ** 2)
        return self.means["height"]

    def _measure(self, visit: Visit, subject: str) -> None:
        rng, t = self.rng, self.t
        minutes = int((visit.end - visit.start).total_seconds() // 60)
        at = visit.start + timedelta(minutes=rng.randint(1, max(1, min(15, minutes - 1))))
        for code in t.vitals:
            self._observe(visit, subject, code, at)
        bp = Measurement(new_id(rng), t.bp, subject, at)
        for code in (t.systolic, t.diastolic):
            value = self._value(code, visit)
            bp.components.append([code, value, _flag(code, value)])
        visit.measurements.append(bp)
        kind = visit.type.kind
        if kind in ("checkup", "wellchild", "admission") or rng.random() < 0.25:
            height, weight = self._body()
            weight = round(weight * rng.gauss(1, 0.015), 1)
            height = round(height, 1)
            self._observe_value(visit, subject, t.weight, at, weight)
            self._observe_value(visit, subject, t.height, at, height)
            self._observe_value(visit, subject, t.bmi, at, round(weight / (height / 100) ** 2, 1))
        lab_at = visit.start + timedelta(minutes=int(min(minutes, 1440) * (0.3 + 0.6 * rng.random())))
        for panel in self._panels(kind):
            for code in t.labs[panel]:
                self._observe(visit, subject, code, lab_at)

    def _observe_value(self, visit: Visit, subject: str, code: ObservationCode, at: datetime, value: float):
        value = _rounded(code, value)
        visit.measurements.append(Measurement(new_id(self.rng), code, subject, at, value, _flag(code, value)))

    def _panels(self, kind: str) -> list[str]:
        rng = self.rng
        keys = [c.key for c in self.chronic]
        panels = []
        diabetic = "diabetes_t2" in keys or "prediabetes" in keys
        if kind == "admission" or (kind == "emergency" and rng.random() < 0.75):
            panels += ["bmp", "cbc"]
            if "chf" in keys:
                panels.append("bnp")
            if kind == "admission" and diabetic:
                panels.append("a1c")
            return panels
        if kind == "emergency":
            return panels
        if kind == "symptom":
            return ["cbc"] if rng.random() < 0.25 else []
        if kind == "checkup" and rng.random() < 0.5:
            panels.append("bmp")
            if (self.age >= 40 or "hyperlipidemia" in keys) and rng.random() < 0.7:
                panels.append("lipid")
            if rng.random() < 0.3:
                panels.append("cbc")
        if kind == "followup":
            if any(k in keys for k in ("diabetes_t2", "hypertension", "ckd", "chf")):
                panels.append("bmp")
            if "hyperlipidemia" in keys and rng.random() < 0.5:
                panels.append("lipid")
            if any(k in keys for k in ("anemia", "ckd")):
                panels.append("cbc")
        if kind in ("checkup", "followup"):
            if diabetic:
                panels.append("a1c")
            if "hypothyroidism" in keys:
                panels.append("tsh")
        return panels

    # ---------------------------------------------------------------- defects
    def _add(self, kind: str, file: str, record_id: str, field: str, detail: str, related: str | None = None):
        self.defects.append(defect(kind, file, record_id, field, detail, related))

    def _inject(self, patient: Patient) -> None:
        drng, rate = self.drng, self.plan.defect_rate
        pid = patient.id
        kind = first_hit(drng, rate, ("missing_birth_date", "missing_gender"))
        if kind == "missing_birth_date":
            patient.birth_date_known = False
            self._add(kind, PATIENT_FILE, pid, "birthDate", "birthDate is absent")
        elif kind == "missing_gender":
            patient.gender = None
            self._add(kind, PATIENT_FILE, pid, "gender", "gender is absent")
        if patient.birth_date_known and first_hit(drng, rate, ("deceased_before_birth",)):
            patient.deceased = at_day(patient.birth_date) - timedelta(days=drng.randint(1, 3650))
            detail = f"deceased {patient.deceased.date().isoformat()}, born {patient.birth_date.isoformat()}"
            self._add("deceased_before_birth", PATIENT_FILE, pid, "deceasedDateTime", detail)
        if self.index % 2 == 1 and first_hit(drng, rate, ("duplicate_identifier",)):
            # Only odd patients copy, and only from the even one before them, whose MRN is always its own.
            patient.mrn = mrn(self.plan.seed, self.index - 1)
            other = patient_id(self.plan.seed, self.index - 1)
            detail = f"MRN {patient.mrn} also identifies Patient/{other}"
            self._add(
                "duplicate_identifier", PATIENT_FILE, pid, "identifier[0].value", detail, f"Patient/{other}"
            )
        for visit in patient.visits:
            self._inject_visit(visit)
        if patient.birth_date_known:
            for problem in patient.problems:
                if first_hit(drng, rate, ("onset_before_birth",)):
                    problem.onset = at_day(patient.birth_date) - timedelta(days=drng.randint(1, 2000))
                    detail = (
                        f"onset {problem.onset.date().isoformat()}, born {patient.birth_date.isoformat()}"
                    )
                    self._add("onset_before_birth", CONDITION_FILE, problem.id, "onsetDateTime", detail)

    def _inject_visit(self, visit: Visit) -> None:
        drng, rate = self.drng, self.plan.defect_rate
        if first_hit(drng, rate, ("encounter_end_before_start",)):
            visit.end = visit.start - timedelta(minutes=drng.randint(60, 3 * 1440))
            detail = f"ends {visit.end.isoformat()}, starts {visit.start.isoformat()}"
            self._add("encounter_end_before_start", ENCOUNTER_FILE, visit.id, "period.end", detail)
        if first_hit(drng, rate, ("orphan_reference",)):
            visit.subject = new_id(drng)
            detail = f"Patient/{visit.subject} does not exist"
            self._add(
                "orphan_reference", ENCOUNTER_FILE, visit.id, "subject", detail, f"Patient/{visit.subject}"
            )
        for m in visit.measurements:
            if first_hit(drng, rate, ("orphan_reference",)):
                m.subject = new_id(drng)
                detail = f"Patient/{m.subject} does not exist"
                self._add(
                    "orphan_reference", OBSERVATION_FILE, m.id, "subject", detail, f"Patient/{m.subject}"
                )
            if m.code.category == "vital-signs" and first_hit(drng, rate, ("implausible_vital",)):
                self._implausible(m)

    def _implausible(self, m: Measurement) -> None:
        drng = self.drng
        if m.components:
            position = drng.randrange(len(m.components))
            target = m.components[position]
            code, path = target[0], f"component[{position}].valueQuantity.value"
        else:
            target, code, path = None, m.code, "valueQuantity.value"
        if drng.random() < 0.5:
            value = code.plausible_high * (1.3 + 0.7 * drng.random())
            value, flag = (round(value) if code.decimals == 0 else round(value, code.decimals)), "H"
        else:
            value, flag = -drng.randint(1, 50), "L"
        if target is None:
            m.value, m.flag = value, flag
        else:
            target[1], target[2] = value, flag
        detail = f"{code.display} {value} {code.unit} outside {code.plausible_low:g}-{code.plausible_high:g}"
        self._add("implausible_vital", OBSERVATION_FILE, m.id, path, detail)


def build_patient(index: int, plan: Plan) -> tuple[Patient, list[dict]]:
    """Patient `index` of the plan's hospital and the defects injected into it."""
    builder = _Builder(index, plan, tables())
    patient = builder.build()
    return patient, builder.defects
