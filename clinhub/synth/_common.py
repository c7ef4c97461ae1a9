"""Fixed dates, identifier helpers and the NPI check digit shared by the generator's parts."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from random import Random

#: Everything happens before this date, so the output never depends on the clock.
REFERENCE_DATE = date(2025, 6, 30)
REFERENCE_DATETIME = datetime(2025, 6, 30, 23, 59, 59)
#: Encounters fall in the three years before the reference date.
WINDOW_START = datetime(2022, 7, 1)
WINDOW_MONTHS = 36

MRN_SYSTEM = "urn:oid:2.16.840.1.113883.19.5"  # HL7's OID arc reserved for examples
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
EXTENSION_BASE = "https://clinhub.example/fhir/StructureDefinition/"

# Odd multipliers coprime with the modulus make index -> number a bijection, so identifiers derived from
# an index are unique without keeping a set of the ones already handed out.
_MRN_SPACE = 90_000_000
_NPI_SPACE = 100_000_000
VALID_EXCHANGES = tuple(e for e in range(200, 1000) if e % 100 != 11)  # N11 codes are service numbers
_PHONE_SPACE = len(VALID_EXCHANGES) * 10_000


def new_id(rng: Random) -> str:
    """A UUID-shaped resource id drawn from `rng` (version 4 layout, so it looks like what EHRs export)."""
    bits = rng.getrandbits(128)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[bits & 3]}{h[17:20]}-{h[20:]}"


def patient_rng(seed: int, index: int) -> Random:
    """The independent random stream of one patient: chunks of patients can be generated anywhere."""
    return Random(f"{seed}:patient:{index}")


def patient_id(seed: int, index: int) -> str:
    """The FHIR id of patient `index` without generating the patient (its stream's first draw)."""
    return new_id(patient_rng(seed, index))


def mrn(seed: int, index: int) -> str:
    return str((index * 7_919 + seed * 104_729) % _MRN_SPACE + 10_000_000)


def luhn_check_digit(payload: str) -> str:
    """The Luhn digit that makes `payload` + digit valid (every second digit from the right doubled)."""
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def npi_check_digit(first_nine: str) -> str:
    """The NPI check digit: Luhn over the card-issuer prefix 80840 followed by the first nine digits."""
    return luhn_check_digit("80840" + first_nine)


def npi_base(seed: int, index: int, entity: str) -> str:
    """Nine unique digits for NPI number `index`; providers start with 1, organisations with 2."""
    number = (index * 7_919 + seed * 104_729 + 12_345) % _NPI_SPACE
    return f"{entity}{number:08d}"


def phone_number(seed: int, index: int, area_code: str) -> str:
    """A valid, unique-per-index US number in `area_code` (unique across area codes too)."""
    k = (index * 7_654_321 + seed * 104_729) % _PHONE_SPACE
    exchange = VALID_EXCHANGES[k // 10_000]
    return f"({area_code}) {exchange}-{k % 10_000:04d}"


def at_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def days_between(start: date, end: date) -> int:
    return (end - start).days


def add_days(day: date, days: int) -> date:
    return day + timedelta(days=days)
