"""A patient's clinical events as HL7 v2.5.1 messages: ADT^A04/A01/A08/A03, ORU^R01 and RDE^O11."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache

from clinhub.synth._clinical import Measurement, Patient, Visit, tables
from clinhub.synth._directory import Roster

SENDING_APPLICATION = "SYNTH_EHR"
RECEIVER = "CLINHUB|CLINHUB"  # MSH-5 receiving application, MSH-6 receiving facility
VERSION = "2.5.1"

# One pass of str.translate, so the backslash of an inserted escape is never escaped again.
_ESCAPES = str.maketrans(
    {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "&": "\\T\\", "\r": "\\X0D\\", "\n": "\\X0A\\"}
)
_PATIENT_CLASS = {"AMB": "O", "EMER": "E", "IMP": "I"}
_ALLERGY_TYPE = {
    "medication": "DA^Drug allergy^HL70127",
    "food": "FA^Food allergy^HL70127",
    "environment": "EA^Environmental allergy^HL70127",
}
_SEVERITY = {"high": "SV^Severe^HL70128", "low": "MI^Mild^HL70128"}
_ROUTE = {"PO": "PO^Oral^HL70162", "IH": "IH^Inhalation^HL70162"}
_VITAL_PANELS = ("vitals", "bp", "body")


def escape(text: str) -> str:
    """`text` with HL7's delimiters replaced by escape sequences (\\F\\, \\S\\, \\R\\, \\E\\, \\T\\)."""
    return text.translate(_ESCAPES)


def hl7_time(moment: datetime) -> str:
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"{moment.hour:02d}{moment.minute:02d}{moment.second:02d}"
    )


def segment(*fields: str) -> str:
    """Fields joined by |, trailing empty fields left off."""
    end = len(fields)
    while end > 1 and not fields[end - 1]:
        end -= 1
    return "|".join(fields[:end])


class _Codes:
    """Escaped code fields, built once per process."""

    def __init__(self) -> None:
        t = tables()
        codes = t.codes
        observation_codes = [*codes.observations.values(), t.bp]
        self.observation = {c.loinc: f"{c.loinc}^{escape(c.display)}^LN" for c in observation_codes}
        self.unit = {c.loinc: f"{escape(c.unit)}^{escape(c.unit)}^UCUM" for c in observation_codes}
        self.range = {c.loinc: _range(c.normal_low, c.normal_high) for c in observation_codes}
        self.panel = {key: f"{p.loinc}^{escape(p.display)}^LN" for key, p in codes.panels.items()}
        self.diagnosis = {c.key: f"{c.icd10}^{escape(c.icd10_display)}^I10C" for c in codes.conditions}
        self.allergen = {a.snomed: f"{a.snomed}^{escape(a.display)}^SCT" for a in codes.allergens}
        self.reaction = {a.snomed: escape(a.reaction_display) for a in codes.allergens}
        self.medication = {
            m.rxnorm: f"{m.rxnorm}^{escape(m.display)}^RXNORM"
            for meds in codes.medications.values()
            for m in meds
        }


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g}-{high:g}"
    if high is not None:
        return f"<{high:g}"
    if low is not None:
        return f">{low:g}"
    return ""


@cache
def _codes() -> _Codes:
    return _Codes()


class _Writer:
    """Renders one patient's messages; control ids are the patient index plus a sequence number."""

    def __init__(self, patient: Patient, roster: Roster, emit: Callable[[str], None]) -> None:
        self.patient = patient
        self.roster = roster
        self.emit = emit
        self.codes = _codes()
        self.sequence = 0
        self.pid = self._pid()
        self.pv1: dict[tuple[str, bool], str] = {}  # each visit's PV1 repeats in all its messages

    def _message(self, facility_id: str, at: datetime, message_type: str, segments: list[str]) -> None:
        self.sequence += 1
        control_id = f"CH{self.patient.index:09d}{self.sequence:03d}"
        msh = (
            f"MSH|^~\\&|{SENDING_APPLICATION}|{facility_id}|{RECEIVER}|{hl7_time(at)}||"
            f"{message_type}|{control_id}|P|{VERSION}"
        )
        self.emit("\r".join([msh, *segments]) + "\r\n")

    def _pid(self) -> str:
        p = self.patient
        name = f"{escape(p.family)}^{escape(p.given)}^{escape(p.middle)}".rstrip("^")
        city = p.city
        address = f"{escape(p.line)}^^{escape(city.name)}^{city.state}^{city.postal_code}^USA^H"
        death = hl7_time(p.deceased) if p.deceased else ""
        return segment(
            "PID",
            "1",
            "",
            f"{p.mrn}^^^CLINHUB^MR",
            "",
            name,
            "",
            p.birth_date.strftime("%Y%m%d") if p.birth_date_known else "",
            {"female": "F", "male": "M"}.get(p.gender or "", ""),
            "",
            "",
            address,
            "",
            f"{p.phone}^PRN^PH",
            *([""] * 15),
            death,
            "Y" if p.deceased else "",
        )

    def _doctor(self, visit: Visit) -> str:
        _provider_id, npi, family, given = self.roster.providers[visit.provider]
        return f"{escape(npi)}^{escape(family)}^{escape(given)}^^^^^^NPI"

    def _pv1(self, visit: Visit, discharged: bool) -> str:
        key = (visit.id, discharged)
        if key not in self.pv1:
            self.pv1[key] = self._new_pv1(visit, discharged)
        return self.pv1[key]

    def _new_pv1(self, visit: Visit, discharged: bool) -> str:
        facility_id, name, _city = self.roster.facilities[visit.facility]
        fields = [""] * 46
        fields[0] = "PV1"
        fields[1] = "1"
        fields[2] = _PATIENT_CLASS[visit.type.cls]
        fields[3] = f"^^^{facility_id}^^^^^{escape(name)}"
        fields[7] = self._doctor(visit)
        fields[19] = visit.id
        fields[44] = hl7_time(visit.start)
        if discharged:
            fields[45] = hl7_time(visit.end)
        return segment(*fields)

    def render(self) -> None:
        for visit in self.patient.visits:
            self._visit(visit)

    def _visit(self, visit: Visit) -> None:
        facility_id = self.roster.facilities[visit.facility][0]
        cls = visit.type.cls
        event = "A01" if cls == "IMP" else "A04"
        extra = [
            segment(
                "AL1",
                str(n),
                _ALLERGY_TYPE[a.allergen.category],
                self.codes.allergen[a.allergen.snomed],
                _SEVERITY[a.allergen.criticality],
                self.codes.reaction[a.allergen.snomed],
            )
            for n, a in enumerate(self.patient.allergies, start=1)
            if a.recorded <= visit.start
        ]
        extra += [
            segment("DG1", str(n), "", self.codes.diagnosis[p.code.key], "", hl7_time(p.onset), "F")
            for n, p in enumerate(visit.problems, start=1)
        ]
        self._adt(visit, event, "ADT_A01", visit.start, extra, discharged=False)
        if visit.updated:
            self._adt(visit, "A08", "ADT_A01", visit.updated, [], discharged=False)
        if visit.measurements:
            self._results(visit, facility_id)
        for order in visit.orders:
            medication = order.medication
            placer = f"{order.id}^{SENDING_APPLICATION}"
            self._message(
                facility_id,
                order.authored,
                "RDE^O11^RDE_O11",
                [
                    self.pid,
                    self._pv1(visit, discharged=False),
                    segment(
                        "ORC",
                        "NW",
                        placer,
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        hl7_time(order.authored),
                        "",
                        "",
                        self._doctor(visit),
                    ),
                    segment(
                        "RXE", "", self.codes.medication[medication.rxnorm], "1", "", medication.give_unit
                    ),
                    segment("RXR", _ROUTE[medication.route]),
                ],
            )
        if cls != "AMB":
            self._adt(visit, "A03", "ADT_A03", visit.end, [], discharged=True)

    def _adt(
        self, visit: Visit, event: str, structure: str, at: datetime, extra: list[str], *, discharged: bool
    ):
        facility_id = self.roster.facilities[visit.facility][0]
        segments = [segment("EVN", event, hl7_time(at)), self.pid, self._pv1(visit, discharged), *extra]
        self._message(facility_id, at, f"ADT^{event}^{structure}", segments)

    def _results(self, visit: Visit, facility_id: str) -> None:
        groups: dict[str, list[Measurement]] = {}
        for m in visit.measurements:
            key = "vitals" if m.code.panel in _VITAL_PANELS else m.code.panel
            groups.setdefault(key, []).append(m)
        doctor = self._doctor(visit)
        segments = [self.pid, self._pv1(visit, discharged=False)]
        latest = visit.start
        for number, (panel, measurements) in enumerate(groups.items(), start=1):
            at = hl7_time(measurements[0].time)
            latest = max(latest, measurements[0].time)
            placer = f"{visit.id}-{number}^{SENDING_APPLICATION}"
            filler = f"{visit.id}-{number}^{'LAB' if panel != 'vitals' else SENDING_APPLICATION}"
            segments.append(segment("ORC", "RE", placer, filler, *([""] * 8), doctor))
            segments.append(
                segment(
                    "OBR",
                    str(number),
                    placer,
                    filler,
                    self.codes.panel[panel],
                    "",
                    "",
                    at,
                    *([""] * 8),
                    doctor,
                    *([""] * 5),
                    at,
                    "",
                    "",
                    "F",
                )
            )
            observation_number = 0
            for m in measurements:
                values = (
                    [(c, v, f) for c, v, f in m.components] if m.components else [(m.code, m.value, m.flag)]
                )
                for code, value, flag in values:
                    observation_number += 1
                    loinc = code.loinc
                    segments.append(
                        f"OBX|{observation_number}|NM|{self.codes.observation[loinc]}||{value}|"
                        f"{self.codes.unit[loinc]}|{self.codes.range[loinc]}|{flag or ''}|||F|||{at}"
                    )
        self._message(facility_id, latest, "ORU^R01^ORU_R01", segments)


def render_messages(patient: Patient, roster: Roster, emit: Callable[[str], None]) -> None:
    """Call emit(message) for each message of `patient`: segments end with \\r, the message with \\n."""
    _Writer(patient, roster, emit).render()
