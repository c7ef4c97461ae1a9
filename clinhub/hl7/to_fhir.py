"""HL7 v2 messages to FHIR R4 resources, after the HL7 v2-to-FHIR implementation guide where practical.

`to_fhir(msg)` walks the message's segments in order, keeping the current patient, visit, report and
order as context, and turns each segment it knows into resources. Ids are derived from business
identifiers (a UUIDv5 of the identifier's system or assigner and value), so the same patient, visit or
order maps to the same resource id in every message: an A08 updates the Patient an A01 created.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime as _dt
import re
import uuid
from collections.abc import Callable

from clinhub.errors import ClinhubError, InvalidMessage
from clinhub.hl7.message import Message, Segment

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://clinhub.dev/hl7v2-to-fhir")
_V2 = "http://terminology.hl7.org/CodeSystem/v2-"
_V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_UCUM = "http://unitsofmeasure.org"
_NPI = "http://hl7.org/fhir/sid/us-npi"


class MappingError(InvalidMessage):
    """A message (or a part of it) that cannot be turned into FHIR resources; `message` says why.

    `error_code` is the HL7 table 0357 code an ACK reports and `location` the segment and field.
    """

    def __init__(self, message: str, *, error_code: str = "207", location: str | None = None) -> None:
        super().__init__(message, detail={"hl7_error_code": error_code, "location": location})
        self.error_code = error_code
        self.location = location


# ---------------------------------------------------------------------------------------------------
# HL7 dates -> FHIR date, dateTime, instant

_DTM = re.compile(
    r"^(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?"
    r"(?:([+-])(\d{2})(\d{2}))?$"
)


def _parts(text: str) -> tuple | None:
    """The validated parts of an HL7 DTM, or None for an empty value; ValueError when malformed."""
    text = text.strip()
    if not text:
        return None
    match = _DTM.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    if month and not 1 <= int(month) <= 12:
        raise ValueError(f"{text!r}: month {month} does not exist")
    if day and not 1 <= int(day) <= calendar.monthrange(int(year), int(month))[1]:
        raise ValueError(f"{text!r}: day {day} does not exist in {year}-{month}")
    if hour and (int(hour) > 23 or int(minute or 0) > 59 or int(second or 0) > 59):
        raise ValueError(f"{text!r}: time of day out of range")
    if sign and (int(off_h) > 14 or int(off_m) > 59):
        raise ValueError(f"{text!r}: time zone offset out of range")
    offset = f"{sign}{off_h}:{off_m}" if sign else None
    return year, month, day, hour, minute, second, fraction, offset


def fhir_date(text: str) -> str:
    """An HL7 DT/DTM as a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD; any time is dropped); "" if empty.

    Raises ValueError for a malformed or impossible date.
    """
    parts = _parts(text)
    if parts is None:
        return ""
    return "-".join(p for p in parts[:3] if p)


def fhir_datetime(text: str, default_offset: str = "Z") -> str:
    """An HL7 DTM as a FHIR dateTime; "" if empty. Raises ValueError for a malformed value.

    FHIR needs seconds and a time zone once a time is given: missing minutes and seconds become 00
    and a value without an offset gets `default_offset` (the sender's, e.g. from MSH-7).
    """
    parts = _parts(text)
    if parts is None:
        return ""
    year, month, day, hour, minute, second, fraction, offset = parts
    if not (hour and day):
        return "-".join(p for p in (year, month, day) if p)
    seconds = f"{second or '00'}.{fraction}" if fraction else (second or "00")
    return f"{year}-{month}-{day}T{hour}:{minute or '00'}:{seconds}{offset or default_offset}"


def fhir_instant(text: str, default_offset: str = "Z") -> str:
    """An HL7 DTM as a FHIR instant, or "" when it is empty or not precise to the time of day."""
    value = fhir_datetime(text, default_offset)
    return value if "T" in value else ""


def _offset(text: str) -> str:
    """ "+hh:mm" (or "Z") from "+hhmm", "+hh:mm" or "Z"; ValueError otherwise."""
    match = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text.strip())
    if text.strip() == "Z":
        return "Z"
    if match is None or int(match[2]) > 14 or int(match[3]) > 59:
        raise ValueError(f"time zone offset {text!r} is not +hh:mm, +hhmm or Z")
    return f"{match[1]}{match[2]}:{match[3]}"


# ---------------------------------------------------------------------------------------------------
# Vocabulary: HL7 tables and coding-system names -> FHIR

#: HL7 coding-system names (table 0396) -> FHIR system URIs.
CODING_SYSTEMS = {
    "LN": "http://loinc.org",
    "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "SNOMED": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9CDX": "http://hl7.org/fhir/sid/icd-9-cm",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "RXN": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://hl7.org/fhir/sid/mvx",
    "NCIT": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
    "UCUM": _UCUM,
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT": "http://www.ama-assn.org/go/cpt",
    "NPI": _NPI,
}
_GENDER = {"F": "female", "M": "male", "O": "other", "U": "unknown", "A": "other", "N": "other", "X": "other"}
_NAME_USE = {
    "L": "official",
    "D": "usual",
    "A": "usual",
    "M": "maiden",
    "N": "nickname",
    "S": "anonymous",
    "B": "old",
    "BAD": "old",
    "NB": "old",
    "TEMP": "temp",
}
_ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old", "BDL": "home", "BR": "home"}
_ADDRESS_TYPE = {"M": "postal", "SH": "postal"}
_TELECOM_USE = {"PRN": "home", "ORN": "home", "VHN": "home", "WPN": "work", "EMR": "temp"}
_ENCOUNTER_CLASS = {
    "E": ("EMER", "emergency"),
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "P": ("PRENC", "pre-admission"),
}
#: ADT trigger events mapped, and the Encounter status each implies (None: from PV1).
_ADT_EVENTS: dict[str, str | None] = {
    "A01": None,
    "A02": None,
    "A03": "finished",
    "A04": None,
    "A05": "planned",
    "A06": None,
    "A07": None,
    "A08": None,
    "A11": "cancelled",
    "A13": "in-progress",
    "A28": None,
    "A31": None,
    "A40": None,
}
_PERSON_ONLY = {"A28", "A31", "A40"}  # person administration and merges: no visit
_ALLERGY_CATEGORY = {
    "DA": "medication",
    "FA": "food",
    "EA": "environment",
    "AA": "environment",
    "PA": "environment",
    "LA": "environment",
}
_CRITICALITY = {"SV": "high", "MO": "low", "MI": "low", "U": "unable-to-assess"}
_REACTION_SEVERITY = {"SV": "severe", "MO": "moderate", "MI": "mild"}
_REPORT_STATUS = {
    "O": "registered",
    "I": "registered",
    "S": "registered",
    "A": "partial",
    "R": "partial",
    "P": "preliminary",
    "C": "corrected",
    "F": "final",
    "X": "cancelled",
}
_OBSERVATION_STATUS = {
    "C": "corrected",
    "D": "entered-in-error",
    "W": "entered-in-error",
    "F": "final",
    "U": "final",
    "I": "registered",
    "O": "registered",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "A": "amended",
    "N": "cancelled",
    "X": "cancelled",
}
_INTERPRETATIONS = set(
    [
        "<",
        ">",
        "A",
        "AA",
        "AC",
        "B",
        "CAR",
        "D",
        "DET",
        "E",
        "EX",
        "EXP",
        "H",
        "HH",
        "HM",
        "HU",
        "HX",
        "I",
        "IE",
        "IND",
        "L",
        "LL",
        "LU",
        "LX",
        "MS",
        "N",
        "ND",
        "NEG",
        "NR",
        "NS",
        "OBX",
        "POS",
        "QCF",
        "R",
        "RR",
        "S",
        "SDD",
        "SYN-R",
        "SYN-S",
        "TOX",
        "U",
        "UNE",
        "VS",
        "W",
        "WR",
    ]
)
#: ORC-5 order status (table 0038) and ORC-1 order control (table 0119) -> request status.
_ORDER_STATUS = {
    "A": "active",
    "CA": "revoked",
    "CM": "completed",
    "DC": "revoked",
    "ER": "entered-in-error",
    "HD": "on-hold",
    "IP": "active",
    "RP": "revoked",
    "SC": "active",
}
_ORDER_CONTROL = {
    "NW": "active",
    "OK": "active",
    "SN": "active",
    "XO": "active",
    "XX": "active",
    "RL": "active",
    "SC": "active",
    "RP": "revoked",
    "CA": "revoked",
    "OC": "revoked",
    "CR": "revoked",
    "DC": "revoked",
    "OD": "revoked",
    "DR": "revoked",
    "HD": "on-hold",
    "OH": "on-hold",
}
# MedicationRequest has no "revoked": a cancelled prescription is cancelled, a discontinued one stopped.
_MEDICATION_STATUS = {"revoked": "cancelled", "DC": "stopped", "OD": "stopped", "DR": "stopped"}
#: Where a pharmacy order segment keeps: give code, give amount, give units, administration
#: instructions, dispense amount, dispense units, refills.
_MEDICATION_FIELDS = {"RXE": (2, 3, 5, 7, 10, 11, 12), "RXO": (1, 2, 4, 7, 11, 12, 13)}
_PRIORITY = {"S": "stat", "A": "asap", "R": "routine", "P": "routine", "T": "urgent"}
#: SIU trigger events and the Appointment status each implies (None: from SCH-25, else booked).
_SIU_EVENTS: dict[str, str | None] = {
    **{f"S{n}": None for n in range(12, 25)},
    "S15": "cancelled",
    "S16": "cancelled",
    "S17": "entered-in-error",
    "S26": "noshow",
}
#: SCH-25 / AIx-12 filler status codes (table 0278) -> Appointment.status.
_APPOINTMENT_STATUS = {
    "PENDING": "pending",
    "WAITLIST": "waitlist",
    "BOOKED": "booked",
    "STARTED": "checked-in",
    "COMPLETE": "fulfilled",
    "CANCELLED": "cancelled",
    "DC": "cancelled",
    "DELETED": "entered-in-error",
    "BLOCKED": "booked",
    "OVERBOOK": "booked",
    "NOSHOW": "noshow",
}
#: Filler status of one resource (AIS/AIL/AIP-12) -> Appointment.participant.status.
_PARTICIPANT_STATUS = {
    "PENDING": "tentative",
    "WAITLIST": "tentative",
    "CANCELLED": "declined",
    "DC": "declined",
    "DELETED": "declined",
}
#: Duration units (SCH-10, AIS-8, AIL-10, AIP-10) -> minutes.
_MINUTES = {
    "S": 1 / 60,
    "SEC": 1 / 60,
    "SECOND": 1 / 60,
    "SECONDS": 1 / 60,
    "MIN": 1,
    "MINUTE": 1,
    "MINUTES": 1,
    "H": 60,
    "HR": 60,
    "HOUR": 60,
    "HOURS": 60,
    "D": 1440,
    "DAY": 1440,
    "DAYS": 1440,
}
_MDM_EVENTS = {f"T{n:02d}" for n in range(1, 12)}
#: TXA-17 document completion status (table 0271) -> DocumentReference.docStatus.
_DOC_STATUS = {
    "DO": "final",
    "AU": "final",
    "LA": "final",
    "DI": "preliminary",
    "IP": "preliminary",
    "IN": "preliminary",
    "PA": "preliminary",
    "CA": "entered-in-error",
}
#: TXA-2 document types of table 0270 (used when TXA-2 names no coding system).
_DOCUMENT_TYPES = {"AR", "CD", "CN", "DI", "DS", "ED", "HP", "OP", "PC", "PH", "PN", "PR", "SP", "TS"}
#: TXA-18 confidentiality (table 0272) -> v3 Confidentiality.
_CONFIDENTIALITY = {"V": ("V", "very restricted"), "R": ("R", "restricted"), "U": ("N", "normal")}
#: ED-2 type of data (table 0191) -> MIME type.
_MIME_MAJOR = {
    "AP": "application",
    "APPLICATION": "application",
    "IM": "image",
    "IMAGE": "image",
    "TEXT": "text",
    "TX": "text",
    "AU": "audio",
    "AUDIO": "audio",
    "VIDEO": "video",
    "MULTIPART": "multipart",
    "MODEL": "model",
}
_TEXT_TYPES = {"TX", "ST", "FT", "CF", "NM", "CE", "CWE", "CNE", "SN", "DT", "DTM", "TS", "TM", "ID", "IS"}
#: Immunization OBX codes (LOINC) that fill Immunization elements rather than making Observations.
_FUNDING_ELIGIBILITY, _FUNDING_SOURCE = "64994-7", "30963-3"
_VIS_TYPE, _VIS_VACCINE, _VIS_PUBLISHED, _VIS_PRESENTED = "69764-9", "30956-7", "29768-9", "29769-7"
_PARTICIPANTS = (
    (7, "ATND", "attender"),
    (8, "REF", "referrer"),
    (9, "CON", "consultant"),
    (17, "ADM", "admitter"),
)


# ---------------------------------------------------------------------------------------------------
# Data types


def _rid(*parts: str) -> str:
    """A deterministic resource id from the parts that identify a thing."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def _code(text: str) -> str:
    """`text` as a FHIR code: trimmed, inner whitespace collapsed to single spaces."""
    return " ".join(text.split())


def _clean(node):
    """`node` without None, "", empty lists and empty dicts (FHIR allows no empty values)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                value = _clean(value)
                if not value:
                    continue
            elif value is None or value == "":
                continue
            out[key] = value
        return out
    if isinstance(node, list):
        out_list = []
        for value in node:
            if isinstance(value, (dict, list)):
                value = _clean(value)
                if not value:
                    continue
            elif value is None or value == "":
                continue
            out_list.append(value)
        return out_list
    return node


def _text(value: str) -> str:
    """A FHIR string: surrounding whitespace removed."""
    return value.strip()


def _system(name: str) -> str:
    name = name.strip()
    if not name:
        return ""
    known = CODING_SYSTEMS.get(name.upper())
    if known:
        return known
    match = re.fullmatch(r"HL7(\d{4})", name.upper())
    if match:
        return f"{_V2}{match[1]}"
    return ""


def _coding(code: str, display: str, system_name: str) -> dict | None:
    code = _code(code)
    if not code and not display.strip():
        return None
    return _clean({"system": _system(system_name), "code": code, "display": _text(display)})


def _cwe(seg: Segment, field: int, rep: int = 1) -> dict | None:
    """A CE/CWE/CNE as a CodeableConcept (primary and alternate triplets, original text)."""
    v = seg.value
    primary = _coding(v(field, rep, 1, 1), v(field, rep, 2, 1), v(field, rep, 3, 1))
    alternate = _coding(v(field, rep, 4, 1), v(field, rep, 5, 1), v(field, rep, 6, 1))
    codings = [c for c in (primary, alternate) if c and c.get("code")]
    text = _text(v(field, rep, 9, 1)) or _text(v(field, rep, 2, 1))
    if not codings and not text:
        return None
    return _clean({"coding": codings, "text": text})


def _table(code: str, table: str, display: str = "") -> dict | None:
    """A code from HL7 table `table` (e.g. "0004") as a CodeableConcept."""
    code = _code(code)
    if not code:
        return None
    return {"coding": [_clean({"system": f"{_V2}{table}", "code": code, "display": display})]}


def _hd_system(namespace: str, universal: str, kind: str) -> str:
    """A FHIR system URI from an HD (namespace, universal id, universal id type)."""
    kind = kind.strip().upper()
    universal = universal.strip()
    if universal and " " not in universal:
        if kind == "ISO" and re.fullmatch(r"[0-2](\.(0|[1-9]\d*))+", universal):
            return f"urn:oid:{universal}"
        if kind in ("URI", "URL"):
            return universal
        if kind == "UUID":
            return f"urn:uuid:{universal.lower()}"
    return _NPI if namespace.strip().upper() == "NPI" else ""


def _identifier(
    value: str, namespace: str, universal: str, kind: str, type_code: str = ""
) -> tuple[dict, str] | None:
    """(Identifier, identity key) for a CX/EI/XCN id; None when there is no value."""
    value = _text(value)
    if not value:
        return None
    system = _hd_system(namespace, universal, kind)
    if not system and type_code.strip().upper() == "NPI":
        system = _NPI
    if not system and type_code.strip().upper() in ("SS", "SSN"):
        system = "http://hl7.org/fhir/sid/us-ssn"
    identifier = {"system": system, "value": value}
    if type_code.strip():
        identifier["type"] = _table(type_code, "0203")
    if namespace.strip() and system != _NPI:
        identifier["assigner"] = {"display": _text(namespace)}
    key = system or _text(namespace) or _text(universal)
    return _clean(identifier), key


def _cx(seg: Segment, field: int, rep: int) -> tuple[dict, str] | None:
    v = seg.value
    return _identifier(
        v(field, rep, 1, 1),
        v(field, rep, 4, 1),
        v(field, rep, 4, 2),
        v(field, rep, 4, 3),
        v(field, rep, 5, 1),
    )


def _ei(seg: Segment, field: int) -> tuple[dict, str] | None:
    v = seg.value
    return _identifier(v(field, 1, 1, 1), v(field, 1, 2, 1), v(field, 1, 3, 1), v(field, 1, 4, 1))


def _xpn(seg: Segment, field: int, rep: int, offset: int = 0) -> dict | None:
    """An XPN (or the name part of an XCN, whose components start `offset` later) as a HumanName."""
    v = seg.value
    family = _text(v(field, rep, 1 + offset, 1))
    given = [_text(v(field, rep, 2 + offset, 1)), _text(v(field, rep, 3 + offset, 1))]
    suffix = [_text(v(field, rep, 4 + offset, 1)), _text(v(field, rep, 6 + offset, 1))]
    name = {
        "family": family,
        "given": [g for g in given if g],
        "prefix": [_text(v(field, rep, 5 + offset, 1))],
        "suffix": [s for s in suffix if s],
    }
    if not offset:  # XPN-7 name type; an XCN's (XCN-10) is about the provider, not needed here
        name["use"] = _NAME_USE.get(_code(v(field, rep, 7, 1)).upper())
    name = _clean(name)
    return name if set(name) - {"use"} else None


def _xad(seg: Segment, field: int, rep: int) -> dict | None:
    v = seg.value
    kind = _code(v(field, rep, 7, 1)).upper()
    address = _clean(
        {
            "use": _ADDRESS_USE.get(kind),
            "type": _ADDRESS_TYPE.get(kind),
            "line": [_street(seg, field, rep), _text(v(field, rep, 2, 1))],
            "city": _text(v(field, rep, 3, 1)),
            "state": _text(v(field, rep, 4, 1)),
            "postalCode": _text(v(field, rep, 5, 1)),
            "country": _text(v(field, rep, 6, 1)),
            "district": _text(v(field, rep, 9, 1)),
        }
    )
    return address if set(address) - {"use", "type"} else None


def _street(seg: Segment, field: int, rep: int) -> str:
    """XAD-1 (SAD): the street address, with the street name (SAD-2) when it is sent apart."""
    street, name = _text(seg.value(field, rep, 1, 1)), _text(seg.value(field, rep, 1, 2))
    return f"{street} {name}" if name and name not in street else street or name


def _xtn(seg: Segment, field: int, rep: int, default_use: str) -> dict | None:
    v = seg.value
    equipment = _code(v(field, rep, 3, 1)).upper()
    use_code = _code(v(field, rep, 2, 1)).upper()
    email = _text(v(field, rep, 4, 1))
    number = _text(v(field, rep, 1, 1)) or _text(v(field, rep, 12, 1))
    if not number:
        local = "".join(_text(v(field, rep, i, 1)) for i in (6, 7))
        country = _text(v(field, rep, 5, 1))
        extension = _text(v(field, rep, 8, 1))
        number = (f"+{country} " if country else "") + local + (f" x{extension}" if extension else "")
        number = number.strip()
    if equipment in ("INTERNET", "X.400") or use_code == "NET":
        system, value = "email", email or number
    elif equipment == "FX":
        system, value = "fax", number
    elif equipment == "BP" or use_code == "BPN":
        system, value = "pager", number
    else:
        system, value = "phone", number or email
        if email and not number:
            system = "email"
    if not value:
        return None
    use = "mobile" if equipment == "CP" else _TELECOM_USE.get(use_code, default_use)
    return {"system": system, "value": value, "use": use}


def _quantity(value: str, seg: Segment, units_field: int) -> dict | None:
    """A Quantity from a number and a CWE of units (system and code only when the units are UCUM)."""
    number = _number(value)
    if number is None:
        return None
    code, text, system_name = (seg.value(units_field, 1, i, 1) for i in (1, 2, 3))
    quantity = {"value": number, "unit": _text(text) or _text(code)}
    if _code(code) and _system(system_name) == _UCUM:
        quantity.update(system=_UCUM, code=_code(code))
    return _clean(quantity)


def _number(text: str) -> int | float | None:
    text = text.strip()
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", text):
        return None
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return float(text)


def _reference(kind: str, rid: str, display: str = "") -> dict:
    return _clean({"reference": f"{kind}/{rid}", "display": display})


def _minutes(amount: str, units: str) -> int | None:
    """A duration (SCH-9/10, AIS-7/8, AIL/AIP-9/10) in whole minutes; None when unknown or under one."""
    number = _number(amount)
    factor = _MINUTES.get(_code(units).upper())
    if number is None or factor is None:
        return None
    try:
        minutes = round(number * factor)
    except OverflowError:
        return None
    return minutes if 1 <= minutes < 2**31 else None  # FHIR positiveInt


def _add_minutes(value: str, minutes: int) -> str:
    """A FHIR dateTime with a time of day, `minutes` later (its offset kept); "" for a date alone."""
    if "T" not in value:
        return ""
    try:
        start = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        moment = start + _dt.timedelta(minutes=minutes)
    except (OverflowError, ValueError):  # past the year 9999
        return ""
    text = moment.isoformat()
    return text[:-6] + "Z" if value.endswith("Z") and text.endswith("+00:00") else text


def _between(start: str, end: str) -> int | None:
    """Whole minutes from `start` to `end` (FHIR instants); None unless at least one."""
    first, last = (_dt.datetime.fromisoformat(v.replace("Z", "+00:00")) for v in (start, end))
    minutes = round((last - first).total_seconds() / 60)
    return minutes if minutes >= 1 else None


def _instant(value: str) -> str:
    return value if "T" in value else ""


def _mime(text: str) -> str:
    """`text` when it looks like a MIME type (type/subtype), else ""."""
    text = text.strip().lower()
    return text if re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*", text) else ""


# ---------------------------------------------------------------------------------------------------
# The mapper


class _Mapper:
    """Walks one message's segments and collects the resources they map to."""

    def __init__(self, msg: Message, default_timezone: str) -> None:
        self.msg = msg
        sent = msg.get("MSH-7-1")
        match = re.search(r"([+-]\d{4})$", sent.strip())
        self.tz = _offset(match[1]) if match else _offset(default_timezone)
        self.event = msg.trigger_event.strip().upper()
        self.resources: dict[tuple[str, str], dict] = {}
        self.counts: dict[str, int] = {}
        self.patient: str | None = None
        self.patient_key: str = ""
        self.encounter: str | None = None
        self.report: dict | None = None
        self.observation: dict | None = None
        self.order: dict | None = None
        self.order_status: str = ""
        self.medication: dict | None = None
        self.conditions: list[tuple[str, str]] = []
        self.appointment: dict | None = None  # SIU: the SCH's Appointment
        self.timing: dict[str, str] = {}  # SIU: start/end/minutes found so far (TQ1, SCH-11, AIx)
        self.last: str = ""  # the name of the segment before the current one
        self.document: dict | None = None  # MDM: the TXA's DocumentReference
        self.content: list[dict] = []  # MDM: attachments from OBX
        self.text_lines: list[str] = []  # MDM: OBX text, one attachment
        self.immunization: dict | None = None  # VXU: the current RXA's Immunization
        self.education: dict[str, dict] = {}  # VXU: VIS observations by OBX-4 sub-id
        #: segments the message type cannot do without (SIU: SCH, MDM: TXA, VXU: RXA)
        self.required: str = ""
        #: resources this message knows only in part, laid over their stored version (merge_partial)
        self.partial: set[tuple[str, str]] = set()

    # -- helpers --------------------------------------------------------------------------------
    def add(self, resource: dict) -> dict:
        key = (resource["resourceType"], resource["id"])
        self.resources.setdefault(key, resource)
        return self.resources[key]

    def need_patient(self, seg: Segment) -> None:
        """MappingError unless a PID came before `seg` (a result or order for nobody cannot be mapped)."""
        if self.patient is None:
            raise MappingError(
                f"{seg.name} without a PID before it", error_code="100", location=self.where(seg)
            )

    def where(self, seg: Segment, field: int | None = None) -> str:
        number = self.counts.get(seg.name, 1)
        place = seg.name if number == 1 else f"{seg.name}[{number}]"
        return place if field is None else f"{place}-{field}"

    def datetime(self, seg: Segment, field: int, comp: int = 1) -> str:
        try:
            return fhir_datetime(seg.value(field, 1, comp, 1), self.tz)
        except ValueError as error:
            where = self.where(seg, field) + (f".{comp}" if comp != 1 else "")
            raise MappingError(f"{where}: {error}", error_code="102", location=where) from None

    def date(self, seg: Segment, field: int) -> str:
        try:
            return fhir_date(seg.value(field, 1, 1, 1))
        except ValueError as error:
            raise MappingError(
                f"{self.where(seg, field)}: {error}", error_code="102", location=self.where(seg, field)
            ) from None

    def subject(self) -> dict | None:
        return {"reference": f"Patient/{self.patient}"} if self.patient else None

    def context(self) -> dict | None:
        return {"reference": f"Encounter/{self.encounter}"} if self.encounter else None

    def practitioner(self, seg: Segment, field: int, rep: int = 1) -> dict | None:
        """A Practitioner from an XCN, added to the output; its reference, or None when empty."""
        v = seg.value
        identified = _identifier(
            v(field, rep, 1, 1),
            v(field, rep, 9, 1),
            v(field, rep, 9, 2),
            v(field, rep, 9, 3),
            v(field, rep, 13, 1),
        )
        name = _xpn(seg, field, rep, offset=1)
        if identified is None and name is None:
            return None
        if identified is not None:
            identifier, key = identified
            rid = _rid("Practitioner", key, identifier["value"])
        else:
            identifier = None
            rid = _rid("Practitioner", "name", name.get("family", ""), *name.get("given", []))
        self.add(
            _clean({"resourceType": "Practitioner", "id": rid, "identifier": [identifier], "name": [name]})
        )
        display = " ".join([*(name or {}).get("given", []), (name or {}).get("family", "")]).strip()
        return _reference("Practitioner", rid, display)

    def location(self, seg: Segment, field: int) -> dict | None:
        """A Location from a PL (most granular level named), added to the output; its reference."""
        v = seg.value
        point, room, bed = (_text(v(field, 1, i, 1)) for i in (1, 2, 3))
        facility = _text(v(field, 1, 4, 1)) or _text(v(field, 1, 4, 2))
        building, floor, description = (_text(v(field, 1, i, 1)) for i in (7, 8, 9))
        parts = [facility, building, floor, point, room, bed]
        if not any(parts) and not description:
            return None
        name = (
            description
            or " ".join(p for p in (facility, point, room, bed) if p)
            or " ".join(p for p in parts if p)
        )
        kind = next(
            (
                code
                for code, part in (("bd", bed), ("ro", room), ("wa", point), ("lvl", floor), ("bu", building))
                if part
            ),
            "si",
        )
        rid = _rid("Location", *parts, description if not any(parts) else "")
        physical = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/location-physical-type", "code": kind}
            ]
        }
        self.add(
            {
                "resourceType": "Location",
                "id": rid,
                "status": "active",
                "name": name,
                "mode": "instance",
                "physicalType": physical,
            }
        )
        return _reference("Location", rid, name)

    def order_identifiers(self, *sources: tuple[Segment | None, int, str]) -> tuple[list[dict], str]:
        """Placer/filler identifiers (EI) and the identity key of the first one present."""
        identifiers, key = [], ""
        seen = set()
        for seg, field, type_code in sources:
            if seg is None:
                continue
            found = _ei(seg, field)
            if found is None:
                continue
            identifier, system = found
            if (type_code, identifier["value"]) in seen:
                continue
            seen.add((type_code, identifier["value"]))
            identifier["type"] = _table(type_code, "0203")
            identifiers.append(identifier)
            key = key or f"{type_code}|{system}|{identifier['value']}"
        return identifiers, key

    # -- segments -------------------------------------------------------------------------------
    def pid(self, seg: Segment) -> None:
        identifiers = [found for rep in range(1, seg.count(3) + 1) if (found := _cx(seg, 3, rep))]
        identifiers += [found for rep in range(1, seg.count(2) + 1) if (found := _cx(seg, 2, rep))]
        if not identifiers:
            raise MappingError(
                f"{self.where(seg, 3)} patient identifier missing",
                error_code="101",
                location=self.where(seg, 3),
            )
        self.patient_key = _identity(identifiers)
        self.patient = _rid("Patient", self.patient_key)
        self.encounter = None
        self.report = self.observation = self.order = self.medication = self.immunization = None
        patient: dict = {
            "resourceType": "Patient",
            "id": self.patient,
            "identifier": [identifier for identifier, _ in identifiers],
            "active": True,
            "name": [_xpn(seg, 5, rep) for rep in range(1, seg.count(5) + 1)],
            "telecom": [_xtn(seg, 13, rep, "home") for rep in range(1, seg.count(13) + 1)]
            + [_xtn(seg, 14, rep, "work") for rep in range(1, seg.count(14) + 1)],
            "gender": _GENDER.get(_code(seg.value(8, 1, 1, 1)).upper()),
            "birthDate": self.date(seg, 7),
            "address": [_xad(seg, 11, rep) for rep in range(1, seg.count(11) + 1)],
            "maritalStatus": _table(seg.value(16, 1, 1, 1), "0002", seg.value(16, 1, 2, 1)),
        }
        death = self.datetime(seg, 29)
        if death:
            patient["deceasedDateTime"] = death
        elif _code(seg.value(30)).upper() in ("Y", "N"):
            patient["deceasedBoolean"] = _code(seg.value(30)).upper() == "Y"
        patient = _clean(patient)
        self.resources[("Patient", self.patient)] = patient

    def mrg(self, seg: Segment) -> None:
        """A40: the prior patient (MRG-1) is replaced by the current one (PID)."""
        self.need_patient(seg)
        identifiers = [found for rep in range(1, seg.count(1) + 1) if (found := _cx(seg, 1, rep))]
        if not identifiers:
            raise MappingError(
                f"{self.where(seg, 1)} prior patient identifier missing",
                error_code="101",
                location=self.where(seg, 1),
            )
        old = _rid("Patient", _identity(identifiers))
        if old == self.patient:
            raise MappingError(
                f"{self.where(seg, 1)} names the surviving patient itself",
                error_code="205",
                location=self.where(seg, 1),
            )
        survivor = self.resources[("Patient", self.patient)]
        survivor.setdefault("link", []).append({"other": {"reference": f"Patient/{old}"}, "type": "replaces"})
        # what the store knows of the old patient (name, birth date, ...) stays: only its status and link
        self.partial.add(("Patient", old))
        self.resources[("Patient", old)] = {
            "resourceType": "Patient",
            "id": old,
            "identifier": [identifier for identifier, _ in identifiers],
            "active": False,
            "link": [{"other": {"reference": f"Patient/{self.patient}"}, "type": "replaced-by"}],
        }

    def pv1(self, seg: Segment) -> None:
        if self.event in _PERSON_ONLY and self.msg.message_type == "ADT":
            return
        self.need_patient(seg)
        visit = _cx(seg, 19, 1)
        start = self.datetime(seg, 44)
        end = self.datetime(seg, 45)
        if visit is not None:
            rid = _rid("Encounter", visit[1], visit[0]["value"])
        elif start:
            rid = _rid("Encounter", self.patient_key, start)
        else:
            rid = _rid("Encounter", self.patient_key, self.msg.sending_facility, self.msg.control_id)
        self.encounter = rid
        if self.msg.message_type != "ADT":
            # a result or an order names the visit but does not manage it: a discharged visit stays so
            self.partial.add(("Encounter", rid))
        patient_class = _code(seg.value(2, 1, 1, 1)).upper()
        act = _ENCOUNTER_CLASS.get(patient_class)
        if act:
            klass = {"system": _V3_ACT, "code": act[0], "display": act[1]}
        elif patient_class:
            klass = {"system": f"{_V2}0004", "code": patient_class}
        else:
            klass = {
                "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
                "code": "UNK",
                "display": "unknown",
            }
        status = _ADT_EVENTS.get(self.event) if self.msg.message_type == "ADT" else None
        if status is None:
            status = "finished" if end else "planned" if patient_class == "P" else "in-progress"
        if status == "in-progress" and self.event == "A13":
            end = ""
        participants = []
        for field, code, display in _PARTICIPANTS:
            for rep in range(1, seg.count(field) + 1):
                who = self.practitioner(seg, field, rep)
                if who:
                    kind = {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": code,
                                "display": display,
                            }
                        ]
                    }
                    participants.append({"type": [kind], "individual": who})
        where = self.location(seg, 3)
        encounter = {
            "resourceType": "Encounter",
            "id": rid,
            "identifier": [visit[0]] if visit else [],
            "status": status,
            "class": klass,
            "type": [_table(seg.value(4, 1, 1, 1), "0007", seg.value(4, 1, 2, 1))],
            "serviceType": _table(seg.value(10, 1, 1, 1), "0069", seg.value(10, 1, 2, 1)),
            "subject": self.subject(),
            "participant": participants,
            "period": {"start": start, "end": end},
            "hospitalization": {
                "dischargeDisposition": _table(seg.value(36, 1, 1, 1), "0112", seg.value(36, 1, 2, 1))
            },
            "location": [{"location": where, "status": "planned" if patient_class == "P" else "active"}]
            if where
            else [],
        }
        self.resources[("Encounter", rid)] = _clean(encounter)

    def dg1(self, seg: Segment) -> None:
        self.need_patient(seg)
        code = _cwe(seg, 3) or (_clean({"text": _text(seg.value(4))}) or None)
        if code is None:
            return
        kind = _code(seg.value(6, 1, 1, 1)).upper()
        identity = _ei(seg, 20)
        coding = (code.get("coding") or [{}])[0]
        key = (
            [identity[1], identity[0]["value"]]
            if identity
            else [
                self.patient_key,
                self.encounter or "",
                coding.get("system", ""),
                coding.get("code", code.get("text", "")),
            ]
        )
        rid = _rid("Condition", *key)
        verification = {"F": "confirmed", "W": "provisional", "A": "provisional"}.get(kind, "confirmed")
        condition = {
            "resourceType": "Condition",
            "id": rid,
            "identifier": [identity[0]] if identity else [],
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": verification,
                    }
                ]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "encounter-diagnosis",
                        }
                    ]
                }
            ],
            "code": code,
            "subject": self.subject(),
            "encounter": self.context(),
            "onsetDateTime": self.datetime(seg, 5),
        }
        self.add(_clean(condition))
        if self.encounter:
            self.conditions.append((self.encounter, rid))

    def al1(self, seg: Segment) -> None:
        self.need_patient(seg)
        code = _cwe(seg, 3)
        if code is None:
            return
        kind = _code(seg.value(2, 1, 1, 1)).upper()
        severity = _code(seg.value(4, 1, 1, 1)).upper()
        reactions = [_text(seg.value(5, rep)) for rep in range(1, seg.count(5) + 1)]
        coding = (code.get("coding") or [{}])[0]
        rid = _rid(
            "AllergyIntolerance",
            self.patient_key,
            coding.get("system", ""),
            coding.get("code", code.get("text", "")),
        )
        allergy = {
            "resourceType": "AllergyIntolerance",
            "id": rid,
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                        "code": "active",
                    }
                ]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                        "code": "confirmed",
                    }
                ]
            },
            "category": [_ALLERGY_CATEGORY.get(kind)],
            "criticality": _CRITICALITY.get(severity),
            "code": code,
            "patient": self.subject(),
            "recordedDate": self.datetime(seg, 6),
            "reaction": [
                {
                    "manifestation": [{"text": r} for r in reactions if r],
                    "severity": _REACTION_SEVERITY.get(severity),
                }
            ]
            if any(reactions)
            else [],
        }
        self.add(_clean(allergy))

    def orc(self, seg: Segment) -> None:
        self.flush_order()
        control = _code(seg.value(1, 1, 1, 1)).upper()
        status = _code(seg.value(5, 1, 1, 1)).upper()
        self.order = {"orc": seg, "control": control, "status_code": status, "detailed": False}
        self.order_status = _ORDER_STATUS.get(status) or _ORDER_CONTROL.get(control) or "unknown"
        self.medication = None

    def flush_order(self) -> None:
        """An ORM/OML order with no OBR (a cancel, a diet order) still becomes a ServiceRequest."""
        if self.order and not self.order["detailed"] and self.msg.message_type in ("ORM", "OML"):
            self.service_request(None)

    def obr(self, seg: Segment) -> None:
        if self.msg.message_type == "ORU":
            self.report_from(seg)
        else:
            self.service_request(seg)

    def report_from(self, seg: Segment) -> None:
        self.need_patient(seg)
        code = _cwe(seg, 4)
        if code is None:
            raise MappingError(
                f"{self.where(seg, 4)} universal service identifier missing",
                error_code="101",
                location=self.where(seg, 4),
            )
        orc = (self.order or {}).get("orc")
        identifiers, key = self.order_identifiers(
            (seg, 3, "FILL"), (orc, 3, "FILL"), (seg, 2, "PLAC"), (orc, 2, "PLAC")
        )
        effective = self.datetime(seg, 7)
        coding = (code.get("coding") or [{}])[0]
        rid = _rid(
            "DiagnosticReport", *([key] if key else [self.patient_key, coding.get("code", ""), effective])
        )
        report = {
            "resourceType": "DiagnosticReport",
            "id": rid,
            "identifier": identifiers,
            "status": _REPORT_STATUS.get(_code(seg.value(25, 1, 1, 1)).upper(), "unknown"),
            "category": [_table(seg.value(24, 1, 1, 1), "0074")],
            "code": code,
            "subject": self.subject(),
            "encounter": self.context(),
            "effectiveDateTime": effective,
            "issued": self.instant(seg, 22),
            "result": [],
        }
        self.report = self.add(report)
        self.observation = None

    def instant(self, seg: Segment, field: int) -> str:
        value = self.datetime(seg, field)
        return value if "T" in value else ""

    def obx(self, seg: Segment) -> None:
        self.need_patient(seg)
        code = _cwe(seg, 3)
        if code is None:
            raise MappingError(
                f"{self.where(seg, 3)} observation identifier missing",
                error_code="101",
                location=self.where(seg, 3),
            )
        coding = (code.get("coding") or [{}])[0]
        effective = self.datetime(seg, 14) or (self.report or {}).get("effectiveDateTime", "")
        parent = (self.report or self.immunization or {}).get("id") or self.patient_key
        rid = _rid(
            "Observation",
            parent,
            seg.value(1),
            coding.get("system", ""),
            coding.get("code", code.get("text", "")),
            seg.value(4),
        )
        observation = {
            "resourceType": "Observation",
            "id": rid,
            "status": _OBSERVATION_STATUS.get(_code(seg.value(11, 1, 1, 1)).upper(), "unknown"),
            "code": code,
            "subject": self.subject(),
            "encounter": self.context(),
            "effectiveDateTime": effective,
            "interpretation": [_interpretation(seg.value(8, rep, 1)) for rep in range(1, seg.count(8) + 1)],
            "referenceRange": [_reference_range(seg)],
        }
        observation.update(self.observation_value(seg))
        observation = self.add(_clean(observation))
        self.observation = observation
        if self.report is not None:
            self.report["result"].append({"reference": f"Observation/{rid}"})

    def observation_value(self, seg: Segment) -> dict:
        kind = _code(seg.value(2, 1, 1, 1)).upper()
        count = seg.count(5)
        if not count:
            return {}
        raw = seg.value(5, 1)
        if kind == "NM":
            quantity = _quantity(raw, seg, 6)
            if quantity:
                return {"valueQuantity": quantity}
            comparator = re.fullmatch(r"\s*(<=|>=|<|>)\s*(\S+)\s*", raw)
            if comparator and (quantity := _quantity(comparator[2], seg, 6)):
                return {"valueQuantity": {**quantity, "comparator": comparator[1]}}
            return {"valueString": _text(raw)}
        if kind == "SN":
            return self.structured_numeric(seg)
        if kind in ("CE", "CWE", "CNE", "CF", "IS", "ID"):
            concept = _cwe(seg, 5, 1)
            return {"valueCodeableConcept": concept} if concept else {}
        if kind in ("DT", "TS", "DTM"):
            try:
                return {"valueDateTime": fhir_datetime(seg.value(5, 1, 1, 1), self.tz)}
            except ValueError as error:
                raise MappingError(
                    f"{self.where(seg, 5)}: {error}", error_code="102", location=self.where(seg, 5)
                ) from None
        if kind == "TM":
            match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d+)?", raw.strip())
            if match and int(match[1]) < 24 and int(match[2] or 0) < 60 and int(match[3] or 0) < 60:
                return {"valueTime": f"{match[1]}:{match[2] or '00'}:{match[3] or '00'}{match[4] or ''}"}
            return {"valueString": _text(raw)}
        if kind in ("ED", "RP"):
            return {}
        text = "\n".join(seg.value(5, rep) for rep in range(1, count + 1)).strip()
        return {"valueString": text} if text else {}

    def structured_numeric(self, seg: Segment) -> dict:
        comparator, first, separator, second = (_text(seg.value(5, 1, i, 1)) for i in (1, 2, 3, 4))
        low = _quantity(first, seg, 6)
        high = _quantity(second, seg, 6)
        if low and not separator and not second:
            if comparator in ("<", ">", "<=", ">="):
                low["comparator"] = comparator
            return {"valueQuantity": low}
        if low and high and separator in ("-", "~"):
            return {"valueRange": {"low": low, "high": high}}
        if low and high and separator in (":", "/"):
            return {"valueRatio": {"numerator": low, "denominator": high}}
        text = "".join((comparator, first, separator, second))
        return {"valueString": text} if text else {}

    def nte(self, seg: Segment) -> None:
        if self.observation is None:
            return
        text = "\n".join(seg.value(3, rep) for rep in range(1, seg.count(3) + 1)).strip()
        if text:
            self.observation.setdefault("note", []).append({"text": text})

    def service_request(self, obr: Segment | None) -> None:
        """A ServiceRequest from the current ORC and its OBR (None: the ORC alone)."""
        orc = (self.order or {}).get("orc")
        if self.order:
            self.order["detailed"] = True
        anchor = obr or orc
        if anchor is None:
            return
        self.need_patient(anchor)
        identifiers, key = self.order_identifiers(
            (orc, 2, "PLAC"), (obr, 2, "PLAC"), (orc, 3, "FILL"), (obr, 3, "FILL")
        )
        if obr is None and not key:
            return  # an ORC that identifies no order says nothing to keep
        code = _cwe(obr, 4) if obr is not None else None
        authored = self.datetime(orc, 9) if orc is not None else ""
        coding = (code or {}).get("coding", [{}])[0]
        set_id = obr.value(1) if obr is not None else ""
        rid = _rid(
            "ServiceRequest",
            *([key] if key else [self.patient_key, coding.get("code", ""), authored, set_id]),
        )
        requester = self.practitioner(orc, 12) if orc is not None else None
        if requester is None and obr is not None:
            requester = self.practitioner(obr, 16)
        priority = (obr.value(27, 1, 6, 1) if obr is not None else "") or (
            orc.value(7, 1, 6, 1) if orc else ""
        )
        request = {
            "resourceType": "ServiceRequest",
            "id": rid,
            "identifier": identifiers,
            "status": self.order_status or "unknown",
            "intent": "order",
            "priority": _PRIORITY.get(_code(priority).upper()),
            "code": code,
            "subject": self.subject(),
            "encounter": self.context(),
            "authoredOn": authored,
            "requester": requester,
            "reasonCode": [_cwe(obr, 31, rep) for rep in range(1, obr.count(31) + 1)]
            if obr is not None
            else [],
        }
        self.add(_clean(request))

    def medication_request(self, seg: Segment) -> None:
        """A MedicationRequest from the current ORC and its RXE (RDE) or RXO (ORM)."""
        give, amount, units, instructions, dispensed, dispense_units, refills = _MEDICATION_FIELDS[seg.name]
        self.need_patient(seg)
        medication = _cwe(seg, give)
        if medication is None:
            where = self.where(seg, give)
            raise MappingError(f"{where} medication code missing", error_code="101", location=where)
        orc = (self.order or {}).get("orc")
        if self.order:
            self.order["detailed"] = True
        identifiers, key = self.order_identifiers((orc, 2, "PLAC"), (orc, 3, "FILL"))
        authored = self.datetime(orc, 9) if orc is not None else ""
        coding = (medication.get("coding") or [{}])[0]
        rid = _rid(
            "MedicationRequest", *([key] if key else [self.patient_key, coding.get("code", ""), authored])
        )
        order = self.order or {}
        status = _MEDICATION_STATUS.get(order.get("control", "")) or self.order_status or "unknown"
        status = _MEDICATION_STATUS.get(status, status)
        if order.get("status_code") == "DC":
            status = "stopped"
        dose = _quantity(seg.value(amount), seg, units)
        dispense = _quantity(seg.value(dispensed), seg, dispense_units)
        repeats = _number(seg.value(refills))
        request = {
            "resourceType": "MedicationRequest",
            "id": rid,
            "identifier": identifiers,
            "status": status,
            "intent": "order",
            "medicationCodeableConcept": medication,
            "subject": self.subject(),
            "encounter": self.context(),
            "authoredOn": authored,
            "requester": self.practitioner(orc, 12) if orc is not None else None,
            "dosageInstruction": [
                {
                    "text": _text(seg.value(instructions, 1, 2, 1))
                    or _text(seg.value(instructions, 1, 1, 1)),
                    "doseAndRate": [{"doseQuantity": dose}] if dose else [],
                }
            ],
            "dispenseRequest": {
                "quantity": dispense,
                "numberOfRepeatsAllowed": repeats if isinstance(repeats, int) and repeats >= 0 else None,
            },
        }
        self.medication = self.add(_clean(request))

    def rxr(self, seg: Segment) -> None:
        if self.immunization is not None:
            self.immunization["route"] = self.immunization.get("route") or _cwe(seg, 1)
            self.immunization["site"] = self.immunization.get("site") or _cwe(seg, 2)
            return
        if self.medication is None:
            return
        route = _cwe(seg, 1)
        if route is None:
            return
        dosage = self.medication.setdefault("dosageInstruction", [{}])
        dosage[0].setdefault("route", route)

    # -- scheduling (SIU) -----------------------------------------------------------------------
    def sch(self, seg: Segment) -> None:
        """SIU: the SCH's Appointment; TQ1, PID, PV1 and the AIS/AIL/AIP that follow complete it."""
        identifiers, key = self.order_identifiers((seg, 2, "FILL"), (seg, 1, "PLAC"))
        if not key:
            key = f"{self.msg.sending_facility}|{self.msg.control_id}"
        rid = _rid("Appointment", key)
        status = _SIU_EVENTS.get(self.event) or _APPOINTMENT_STATUS.get(
            _code(seg.value(25, 1, 1, 1)).upper(), "booked"
        )
        reason, kind, event_reason = _cwe(seg, 7), _cwe(seg, 8), _cwe(seg, 6)
        self.appointment = {
            "resourceType": "Appointment",
            "id": rid,
            "identifier": identifiers,
            "status": status,
            "cancelationReason": event_reason if status in ("cancelled", "noshow") else None,
            "serviceType": [],
            "appointmentType": kind,
            "reasonCode": [reason],
            "description": (reason or {}).get("text") or (event_reason or {}).get("text"),
            "participant": [],
        }
        self.appointment = self.add(self.appointment)
        start, end = self.datetime(seg, 11, 4), self.datetime(seg, 11, 5)
        if start:
            self.timing.setdefault("start", start)
            if end:
                self.timing.setdefault("end", end)
        minutes = _minutes(seg.value(9), seg.value(10, 1, 1, 1))
        if minutes:
            self.timing["minutes"] = minutes

    def tq1(self, seg: Segment) -> None:
        """TQ1 of the SCH group: start (TQ1-7) and end (TQ1-8) before SCH-11's."""
        if self.appointment is None or self.counts.get("AIS", 0) + self.counts.get("AIL", 0):
            return
        start, end = self.datetime(seg, 7), self.datetime(seg, 8)
        if start:
            self.timing["start"] = start
            self.timing.pop("end", None)
            if end:
                self.timing["end"] = end

    def sch_nte(self, seg: Segment) -> None:
        """An NTE right after SCH (or its TQ1) is a comment on the appointment."""
        if self.appointment is None or self.last not in ("SCH", "TQ1", "NTE"):
            return
        if "RGS" in self.counts or "PID" in self.counts:  # a note on a resource or on the patient
            return
        text = "\n".join(seg.value(3, rep) for rep in range(1, seg.count(3) + 1)).strip()
        if text:
            comment = self.appointment.get("comment")
            self.appointment["comment"] = f"{comment}\n{text}" if comment else text

    def resource_time(self, seg: Segment, start_field: int, duration_field: int) -> None:
        """AIS-4/7/8, AIL-6/9/10, AIP-6/9/10: the first resource with a start date/time gives the
        appointment's start (and its end, from the duration) when SCH and TQ1 gave none."""
        start = self.datetime(seg, start_field)
        if not start or "start" in self.timing:
            return
        self.timing["start"] = start
        minutes = _minutes(seg.value(duration_field), seg.value(duration_field + 1, 1, 1, 1))
        if minutes:
            self.timing["minutes"] = minutes

    def participant(self, seg: Segment, actor: dict | None, kind: dict | None = None) -> None:
        if self.appointment is None or actor is None:
            return
        status = _PARTICIPANT_STATUS.get(_code(seg.value(12, 1, 1, 1)).upper(), "accepted")
        entry = {"type": [kind] if kind else [], "actor": actor, "status": status}
        if not any(p.get("actor") == actor for p in self.appointment["participant"]):
            self.appointment["participant"].append(entry)

    def ais(self, seg: Segment) -> None:
        if self.appointment is None:
            return
        service = _cwe(seg, 3)
        if service and service not in self.appointment["serviceType"]:
            self.appointment["serviceType"].append(service)
        self.resource_time(seg, 4, 7)

    def ail(self, seg: Segment) -> None:
        if self.appointment is None:
            return
        self.participant(seg, self.location(seg, 3))
        self.resource_time(seg, 6, 9)

    def aip(self, seg: Segment) -> None:
        if self.appointment is None:
            return
        self.participant(seg, self.practitioner(seg, 3), _cwe(seg, 4))
        self.resource_time(seg, 6, 9)

    def finish_appointment(self) -> None:
        appointment = self.appointment
        if appointment is None:
            return
        patient = {"type": [], "actor": self.subject(), "status": "accepted"}
        appointment["participant"].insert(0, patient)
        start, end = self.timing.get("start", ""), self.timing.get("end", "")
        minutes = self.timing.get("minutes")
        if start and not end and minutes:
            end = _add_minutes(start, minutes)
        if _instant(start) and _instant(end):  # FHIR: both instants or neither (app-2)
            appointment["start"], appointment["end"] = start, end
            minutes = _between(start, end) or minutes
        if minutes:
            appointment["minutesDuration"] = minutes
        if self.encounter:
            encounter = self.resources.get(("Encounter", self.encounter))
            if encounter is not None:
                encounter["appointment"] = [{"reference": f"Appointment/{appointment['id']}"}]

    # -- documents (MDM) ------------------------------------------------------------------------
    def txa(self, seg: Segment) -> None:
        """MDM: the TXA's DocumentReference; the OBX that follow are its content."""
        self.need_patient(seg)
        number = _ei(seg, 12)
        if number is not None:
            master, system = number
            rid = _rid("DocumentReference", system, master["value"])
        else:
            master = None
            file_name = _text(seg.value(16))
            rid = _rid(
                "DocumentReference",
                *(
                    [self.patient_key, file_name]
                    if file_name
                    else [self.msg.sending_facility, self.msg.control_id]
                ),
            )
        identifiers, _ = self.order_identifiers((seg, 14, "PLAC"), (seg, 15, "FILL"))
        kind = _cwe(seg, 2)
        code = _code(seg.value(2, 1, 1, 1)).upper()
        if kind and code in _DOCUMENT_TYPES and not _text(seg.value(2, 1, 3, 1)):
            display = kind["coding"][0].get("display")
            kind["coding"] = [_clean({"system": f"{_V2}0270", "code": code, "display": display})]
        doc_status = _DOC_STATUS.get(_code(seg.value(17, 1, 1, 1)).upper())
        if doc_status == "final" and self.event in ("T07", "T08"):
            doc_status = "amended"
        availability = _code(seg.value(19, 1, 1, 1)).upper()
        if self.event == "T11" or availability == "CA" or doc_status == "entered-in-error":
            status = "entered-in-error"
        elif availability == "OB":
            status = "superseded"
        else:
            status = "current"
        parent = _ei(seg, 13)
        relation = {"T05": "appends", "T06": "appends", "T09": "replaces", "T10": "replaces"}.get(self.event)
        authors = []
        for field in (5, 9):
            for rep in range(1, seg.count(field) + 1):
                who = self.practitioner(seg, field, rep)
                if who and who not in authors:
                    authors.append(who)
        secret = _CONFIDENTIALITY.get(_code(seg.value(18, 1, 1, 1)).upper())
        self.document = {
            "resourceType": "DocumentReference",
            "id": rid,
            "masterIdentifier": master,
            "identifier": ([master] if master else []) + identifiers,
            "status": status,
            "docStatus": doc_status,
            "type": kind,
            "subject": self.subject(),
            "date": self.instant(seg, 6) or self.instant(seg, 4),
            "description": _text(seg.value(25, 1)),
            "author": authors,
            "authenticator": self.practitioner(seg, 10) or self.practitioner(seg, 22),
            "relatesTo": [{"code": relation, "target": {"identifier": parent[0]}}]
            if relation and parent
            else [],
            "securityLabel": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                            "code": secret[0],
                            "display": secret[1],
                        }
                    ]
                }
            ]
            if secret
            else [],
            "content": [],
            "context": {"encounter": [self.context()]},
            "_creation": self.datetime(seg, 6) or self.datetime(seg, 4),
            "_title": _text(seg.value(16)) or (kind or {}).get("text", ""),
        }
        self.document = self.add(self.document)

    def mdm_obx(self, seg: Segment) -> None:
        """MDM: OBX-5 text (TX, ST, FT...) lines become one text/plain attachment; ED and RP values
        become attachments of their own."""
        kind = _code(seg.value(2, 1, 1, 1)).upper()
        if kind == "ED":
            for rep in range(1, seg.count(5) + 1):
                attachment = self.encapsulated(seg, rep)
                if attachment:
                    self.content.append(attachment)
        elif kind == "RP":
            for rep in range(1, seg.count(5) + 1):
                pointer = _text(seg.value(5, rep, 1, 1))
                if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", pointer):
                    major = _MIME_MAJOR.get(_code(seg.value(5, rep, 3, 1)).upper())
                    subtype = _code(seg.value(5, rep, 4, 1)).lower()
                    mime = f"{major}/{subtype}" if major and subtype else ""
                    self.content.append(_clean({"url": pointer, "contentType": _mime(mime)}))
        elif kind in _TEXT_TYPES or not kind:
            self.text_lines.extend(seg.value(5, rep) for rep in range(1, seg.count(5) + 1))

    def encapsulated(self, seg: Segment, rep: int) -> dict | None:
        v = seg.value
        major_code, subtype = _code(v(5, rep, 2, 1)), _code(v(5, rep, 3, 1)).lower()
        encoding = _code(v(5, rep, 4, 1)).upper()
        data = v(5, rep, 5, 1)
        if "/" in major_code:
            mime = major_code.lower()
        else:
            major = _MIME_MAJOR.get(major_code.upper(), "")
            mime = f"{major}/{subtype}" if major and subtype else ("text/plain" if major == "text" else "")
        where = f"{self.where(seg, 5)}.5"
        try:
            if encoding == "BASE64":
                raw = base64.b64decode("".join(data.split()), validate=True)
            elif encoding == "HEX":
                raw = bytes.fromhex(data)
            else:
                raw = data.encode()
        except (ValueError, binascii.Error):
            raise MappingError(
                f"{where}: the data is not valid {encoding.lower()}", error_code="102", location=where
            ) from None
        if not raw and not mime:
            return None
        return _clean(
            {
                "contentType": _mime(mime) or "application/octet-stream",
                "data": base64.b64encode(raw).decode("ascii") if raw else "",
            }
        )

    def finish_document(self) -> None:
        document = self.document
        if document is None:
            return
        creation, title = document.pop("_creation", ""), document.pop("_title", "")
        attachments = list(self.content)
        text = "\n".join(self.text_lines).strip("\n")
        if text.strip():
            data = base64.b64encode(text.encode()).decode("ascii")
            attachments.insert(0, {"contentType": "text/plain", "data": data})
        if not any("data" in a or "url" in a for a in attachments):
            # a notification without content (T01, T03, T05, T07, T09, T11): the stored content stays
            self.partial.add(("DocumentReference", document["id"]))
            attachments = attachments or [{"title": title or "document"}]
        for attachment in attachments:
            attachment.setdefault("creation", creation)
            if title:
                attachment.setdefault("title", title)
        document["content"] = [{"attachment": _clean(a)} for a in attachments]

    # -- immunizations (VXU) --------------------------------------------------------------------
    def rxa(self, seg: Segment) -> None:
        """VXU: an Immunization from the RXA (with the ORC before it; RXR and OBX after it)."""
        self.need_patient(seg)
        vaccine = _cwe(seg, 5)
        if vaccine is None:
            where = self.where(seg, 5)
            raise MappingError(f"{where} administered code missing", error_code="101", location=where)
        occurred = self.datetime(seg, 3)
        if not occurred:
            where = self.where(seg, 3)
            raise MappingError(f"{where} administration date/time missing", error_code="101", location=where)
        orc = (self.order or {}).get("orc")
        if self.order:
            self.order["detailed"] = True
        identifiers, key = self.order_identifiers((orc, 3, "FILL"), (orc, 2, "PLAC"))
        coding = (vaccine.get("coding") or [{}])[0]
        rid = _rid(
            "Immunization",
            *(
                [key]
                if key
                else [self.patient_key, coding.get("system", ""), coding.get("code", ""), occurred]
            ),
        )
        completion = _code(seg.value(20, 1, 1, 1)).upper()
        if _code(seg.value(21, 1, 1, 1)).upper() == "D":
            status = "entered-in-error"
        elif completion in ("RE", "NA"):
            status = "not-done"
        else:
            status = "completed"
        reason = None
        if status == "not-done":
            reason = _cwe(seg, 18) or _table(
                completion, "0322", {"RE": "Refused", "NA": "Not Administered"}[completion]
            )
        amount = _text(seg.value(6))
        dose = _quantity(amount, seg, 7) if _number(amount) not in (999, None) else None
        source = next(
            (
                _code(seg.value(9, r, 1, 1))
                for r in range(1, seg.count(9) + 1)
                if _code(seg.value(9, r, 1, 1))
            ),
            "",
        )
        performers = []
        for field, function, display, who_seg in (
            (10, "AP", "Administering Provider", seg),
            (12, "OP", "Ordering Provider", orc),
        ):
            who = self.practitioner(who_seg, field) if who_seg is not None else None
            if who:
                performers.append({"function": _table(function, "0443", display), "actor": who})
        self.immunization = {
            "resourceType": "Immunization",
            "id": rid,
            "identifier": identifiers,
            "status": status,
            "statusReason": reason,
            "vaccineCode": vaccine,
            "patient": self.subject(),
            "encounter": self.context(),
            "occurrenceDateTime": occurred,
            "recorded": self.datetime(seg, 22),
            "primarySource": source == "00" if source else None,
            "reportOrigin": _cwe(seg, 9) if source and source != "00" else None,
            "location": self.location(seg, 27) or self.location(seg, 11),
            "manufacturer": self.manufacturer(seg, 17),
            "lotNumber": _text(seg.value(15, 1)),
            "expirationDate": self.date(seg, 16),
            "doseQuantity": dose,
            "performer": performers,
            "isSubpotent": True if completion == "PA" else None,
            "reasonCode": [_cwe(seg, 19, rep) for rep in range(1, seg.count(19) + 1)],
            "note": [],
            "education": [],
            "programEligibility": [],
            "fundingSource": None,
        }
        self.immunization = self.add(self.immunization)
        self.observation = None
        self.education = {}

    def manufacturer(self, seg: Segment, field: int) -> dict | None:
        """An Organization from a CWE (MVX codes get the MVX system), added to the output."""
        code, name, system_name = (seg.value(field, 1, i, 1) for i in (1, 2, 3))
        code, name = _code(code), _text(name)
        if not code and not name:
            return None
        system = _system(system_name)
        rid = _rid("Organization", system or _text(system_name), code or name)
        self.add(
            _clean(
                {
                    "resourceType": "Organization",
                    "id": rid,
                    "identifier": [{"system": system, "value": code}] if code else [],
                    "name": name or code,
                }
            )
        )
        return _reference("Organization", rid, name)

    def vxu_obx(self, seg: Segment) -> None:
        """OBX after an RXA: funding and VIS observations fill the Immunization, others become
        Observations part of it; OBX before any RXA are the patient's Observations."""
        immunization = self.immunization
        code = _code(seg.value(3, 1, 1, 1))
        dated = _code(seg.value(2, 1, 1, 1)).upper() in ("DT", "DTM", "TS")
        if code in (_VIS_PUBLISHED, _VIS_PRESENTED) and not dated:
            code = ""  # a date observation without a date: an Observation like any other
        if immunization is None or code not in (
            _FUNDING_ELIGIBILITY,
            _FUNDING_SOURCE,
            _VIS_TYPE,
            _VIS_VACCINE,
            _VIS_PUBLISHED,
            _VIS_PRESENTED,
        ):
            self.obx(seg)
            if immunization is not None and self.observation is not None:
                self.observation["partOf"] = [{"reference": f"Immunization/{immunization['id']}"}]
            return
        self.observation = None
        if code == _FUNDING_ELIGIBILITY:
            concept = _cwe(seg, 5)
            if concept:
                immunization["programEligibility"].append(concept)
        elif code == _FUNDING_SOURCE:
            immunization["fundingSource"] = immunization["fundingSource"] or _cwe(seg, 5)
        else:
            group = self.education.setdefault(_text(seg.value(4)) or "1", {})
            if code in (_VIS_TYPE, _VIS_VACCINE):
                text = _text(seg.value(5, 1, 2, 1)) or _text(seg.value(5, 1, 1, 1))
                if code == _VIS_TYPE or "documentType" not in group:
                    group["documentType"] = text
            else:
                when = self.datetime(seg, 5)
                group["publicationDate" if code == _VIS_PUBLISHED else "presentationDate"] = when
            immunization["education"] = [g for g in self.education.values() if g.get("documentType")]

    def vxu_nte(self, seg: Segment) -> None:
        if self.observation is not None:
            self.nte(seg)
            return
        if self.immunization is None:
            return
        text = "\n".join(seg.value(3, rep) for rep in range(1, seg.count(3) + 1)).strip()
        if text:
            self.immunization["note"].append({"text": text})

    # -- the walk -------------------------------------------------------------------------------
    def run(self, handlers: dict[str, Callable[[Segment], None]]) -> list[dict]:
        for seg in self.msg.segments:
            self.counts[seg.name] = self.counts.get(seg.name, 0) + 1
            handler = handlers.get(seg.name)
            if handler is not None:
                handler(seg)
            self.last = seg.name
        self.flush_order()
        if self.required and self.required not in self.counts:
            kind = self.msg.message_type.strip().upper()
            raise MappingError(
                f"{self.required} segment missing: {kind} needs one",
                error_code="100",
                location=self.required,
            )
        if self.patient is None:
            raise MappingError("PID segment missing", error_code="100", location="PID")
        self.finish_appointment()
        self.finish_document()
        for encounter_id, condition_id in self.conditions:
            encounter = self.resources.get(("Encounter", encounter_id))
            if encounter is not None:
                diagnosis = encounter.setdefault("diagnosis", [])
                reference = {"condition": {"reference": f"Condition/{condition_id}"}}
                if reference not in diagnosis:
                    diagnosis.append(reference)
        return [_clean(resource) for resource in self.resources.values()]


def _identity(identifiers: list[tuple[dict, str]]) -> str:
    """The key of a patient's preferred identifier: the first medical record number, else the first."""
    chosen = next(
        (
            found
            for found in identifiers
            if any(c.get("code") == "MR" for c in found[0].get("type", {}).get("coding", []))
        ),
        identifiers[0],
    )
    identifier, key = chosen
    return f"{key}|{identifier['value']}"


def _interpretation(code: str) -> dict | None:
    code = _code(code)
    if not code:
        return None
    system = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    return {
        "coding": [{"system": system if code.upper() in _INTERPRETATIONS else f"{_V2}0078", "code": code}]
    }


def _reference_range(seg: Segment) -> dict | None:
    text = _text(seg.value(7))
    if not text:
        return None
    number = r"(-?\d+(?:\.\d+)?)"
    between = re.fullmatch(rf"{number}\s*-\s*{number}", text)
    if between:
        return _clean(
            {"low": _quantity(between[1], seg, 6), "high": _quantity(between[2], seg, 6), "text": text}
        )
    bound = re.fullmatch(rf"(<=|>=|<|>)\s*{number}", text)
    if bound:
        side = "high" if bound[1].startswith("<") else "low"
        return _clean({side: _quantity(bound[2], seg, 6), "text": text})
    return {"text": text}


def _handlers(mapper: _Mapper, msg: Message) -> dict[str, Callable[[Segment], None]]:
    """The segment handlers for `msg`'s type; MappingError for a type or event not mapped."""
    kind, event = msg.message_type.strip().upper(), mapper.event
    name = f"{kind}^{event}" if event else kind
    common = {"PID": mapper.pid, "PV1": mapper.pv1}
    if kind == "ADT":
        if event not in _ADT_EVENTS:
            raise MappingError(f"{name} is not mapped to FHIR", error_code="201", location="MSH-9")
        extra = {"MRG": mapper.mrg} if event == "A40" else {"DG1": mapper.dg1, "AL1": mapper.al1}
        return {**common, **extra}
    if kind == "ORU" and event in ("R01", ""):
        return {**common, "ORC": mapper.orc, "OBR": mapper.obr, "OBX": mapper.obx, "NTE": mapper.nte}
    if (kind, event) in (("ORM", "O01"), ("ORM", "")):
        return {
            **common,
            "ORC": mapper.orc,
            "OBR": mapper.obr,
            "RXO": mapper.medication_request,
            "RXR": mapper.rxr,
        }
    if (kind, event) in (("OML", "O21"), ("OML", "")):
        return {**common, "ORC": mapper.orc, "OBR": mapper.obr}
    if kind == "RDE" and event in ("O11", "O25", "O01", ""):
        return {**common, "ORC": mapper.orc, "RXE": mapper.medication_request, "RXR": mapper.rxr}
    if kind == "SIU" and event in _SIU_EVENTS:
        mapper.required = "SCH"
        return {
            **common,
            "SCH": mapper.sch,
            "TQ1": mapper.tq1,
            "NTE": mapper.sch_nte,
            "AIS": mapper.ais,
            "AIL": mapper.ail,
            "AIP": mapper.aip,
        }
    if kind == "MDM" and event in _MDM_EVENTS:
        mapper.required = "TXA"
        return {**common, "TXA": mapper.txa, "OBX": mapper.mdm_obx}
    if kind == "VXU" and event in ("V04", ""):
        mapper.required = "RXA"
        return {
            **common,
            "ORC": mapper.orc,
            "RXA": mapper.rxa,
            "RXR": mapper.rxr,
            "OBX": mapper.vxu_obx,
            "NTE": mapper.vxu_nte,
        }
    mapped_types = ("ADT", "ORU", "ORM", "OML", "RDE", "SIU", "MDM", "VXU")
    error_code = "201" if kind in mapped_types else "200"
    raise MappingError(f"{name} is not mapped to FHIR", error_code=error_code, location="MSH-9")


#: Elements a message sets even on a resource it knows only in part: a document notification without
#: content (MDM T01, T03, T05, T07, T09, T11) still changes the document's status.
_MESSAGE_OWNS = {
    "DocumentReference": ("status", "docStatus", "date", "authenticator", "relatesTo", "securityLabel")
}


def merge_partial(partial: dict, known: dict) -> dict:
    """A resource a message knows only in part (see `to_fhir`'s `partial`) laid over the version already
    known: the known elements win and the message fills the rest, except `active` (a merge retires
    the old patient) and a DocumentReference's status elements (`_MESSAGE_OWNS`), which the message
    sets, and `link`, which both contribute to."""
    merged = {key: value for key, value in known.items() if key != "meta"}
    for key, value in partial.items():
        merged.setdefault(key, value)
    if "active" in partial:
        merged["active"] = partial["active"]
    for key in _MESSAGE_OWNS.get(partial.get("resourceType", ""), ()):
        if key in partial:
            merged[key] = partial[key]
    if "link" in partial:
        links = list(known.get("link", []))
        merged["link"] = links + [link for link in partial["link"] if link not in links]
    return merged


def to_fhir(
    msg: Message, *, default_timezone: str = "Z", partial: set[tuple[str, str]] | None = None
) -> list[dict]:
    """The FHIR R4 resources (dicts with resourceType and a deterministic id) `msg` maps to.

    ADT A01/A02/A03/A04/A05/A06/A07/A08/A11/A13 -> Patient, Encounter (+ Practitioner, Location),
    Condition (DG1), AllergyIntolerance (AL1); A28/A31 -> Patient; A40 -> the surviving Patient
    (link replaces) and the old one (inactive, link replaced-by); ORU^R01 -> DiagnosticReport and
    Observation; ORM^O01, OML^O21 -> ServiceRequest; RDE^O11/O25 -> MedicationRequest; SIU^S12-S24,
    S26 -> Appointment; MDM^T01-T11 -> DocumentReference; VXU^V04 -> Immunization.
    Times without an offset take MSH-7's, else `default_timezone`. When `partial` is a set, the keys
    (type, id) of the resources the message knows only in part are added to it: the old patient of an
    A40, the visit a non-ADT message names in its PV1, and the document of an MDM notification that
    carries no content. Store those through `merge_partial` over their current version, so an A40 does
    not blank the old patient's demographics, a late result does not reopen a discharged visit and a
    document status change keeps the document's text. Raises MappingError (with a reason,
    an HL7 error code and a location) for a message type not mapped or content that cannot be mapped.
    """
    try:
        mapper = _Mapper(msg, default_timezone)
        resources = mapper.run(_handlers(mapper, msg))
        if partial is not None:
            partial.update(mapper.partial)
        return resources
    except ClinhubError:
        raise
    except ValueError as error:  # a bad default_timezone or MSH-7 offset
        raise MappingError(str(error), error_code="102", location="MSH-7") from None
    except Exception as error:  # a bug must not take the listener down; the type names the culprit
        raise MappingError(f"cannot map this message ({type(error).__name__})", error_code="207") from None


__all__ = [
    "CODING_SYSTEMS",
    "MappingError",
    "fhir_date",
    "fhir_datetime",
    "fhir_instant",
    "merge_partial",
    "to_fhir",
]
