"""The provider directory: facilities, providers, affiliations, activities, their defects and FHIR mirror."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from random import Random

from clinhub.synth._codes import City, Codes, Specialty
from clinhub.synth._common import (
    EXTENSION_BASE,
    NPI_SYSTEM,
    REFERENCE_DATE,
    WINDOW_MONTHS,
    WINDOW_START,
    npi_base,
    npi_check_digit,
    phone_number,
)
from clinhub.synth._defects import defect, first_hit

PROVIDERS_FILE = "directory/providers.csv"
FACILITIES_FILE = "directory/facilities.csv"
AFFILIATIONS_FILE = "directory/affiliations.csv"
ACTIVITIES_FILE = "directory/activities.csv"

# Column order of the store's provider-directory tables (clinhub/store/schema.py); a test keeps them equal.
PROVIDER_COLUMNS = (
    "provider_id",
    "npi",
    "first_name",
    "middle_name",
    "last_name",
    "full_name",
    "gender",
    "birth_year",
    "graduation_year",
    "specialty",
    "license_number",
    "license_state",
    "license_expiry",
    "email",
    "phone",
    "active",
)
FACILITY_COLUMNS = (
    "facility_id",
    "name",
    "npi",
    "facility_type",
    "address",
    "city",
    "state",
    "postal_code",
    "phone",
    "active",
)
AFFILIATION_COLUMNS = (
    "affiliation_id",
    "provider_id",
    "facility_id",
    "is_primary",
    "start_date",
    "end_date",
    "active",
)
ACTIVITY_COLUMNS = ("activity_id", "provider_id", "facility_id", "activity_type", "activity_date", "volume")

_FACILITY_NAMES = {
    "hospital": (
        "General Hospital",
        "Medical Center",
        "Memorial Hospital",
        "Regional Medical Center",
        "Community Hospital",
        "Hospital & Clinics",
    ),
    "clinic": (
        "Family Health Center",
        "Primary Care Clinic",
        "Medical Group",
        "Heart & Vascular Clinic",
        "Pediatrics & Family Medicine",
        "Internal Medicine Associates",
        "Community Clinic",
    ),
    "laboratory": ("Diagnostic Laboratory", "Clinical Laboratories", "Pathology & Laboratory Services"),
}
_CAMPUSES = ("North", "South", "East", "West", "Downtown", "Riverside", "Lakeside", "Hillside")
_FACILITY_TYPES = ("hospital", "clinic", "laboratory")
_FACILITY_TYPE_WEIGHTS = (25, 55, 20)
_EMAIL_DOMAINS = ("mercyvalehealth.org", "riverbendmed.org", "summitcarehealth.org", "lakeshoreclinics.org")
_TEST_DOMAINS = ("example.com", "example.org", "example.net")
_DEGREES = {"MD": "Doctor of Medicine", "NP": "Nurse Practitioner"}
_LICENSE_TYPES = {"MD": "Medical License number", "NP": "Nurse practitioner number"}
_ROLE_CODES = {"MD": ("doctor", "Doctor"), "NP": ("nurse", "Nurse")}
# Where each kind of encounter may happen; labs host none.
_ENCOUNTER_FACILITIES = {
    "AMB-adult": ("hospital", "clinic"),
    "AMB-child": ("hospital", "clinic"),
    "EMER": ("hospital",),
    "IMP": ("hospital",),
}
_AFFILIATION_ANOMALIES = (
    "primary_affiliation_missing",
    "primary_affiliation_multiple",
    "no_active_affiliation",
    "too_many_affiliations",
)


@dataclass(slots=True)
class Facility:
    facility_id: str
    name: str
    npi: str
    facility_type: str
    address: str
    city: City
    phone: str
    active: bool = True


@dataclass(slots=True)
class Provider:
    provider_id: str
    npi: str
    first_name: str
    middle_name: str
    last_name: str
    full_name: str
    gender: str  # F | M
    birth_year: int
    graduation_year: int
    specialty: Specialty
    license_number: str
    license_state: str
    license_expiry: date
    email: str
    phone: str
    active: bool


@dataclass(slots=True)
class Affiliation:
    affiliation_id: str
    provider_id: str
    facility_id: str
    is_primary: bool
    start_date: date
    end_date: date | None
    active: bool


@dataclass(frozen=True)
class Roster:
    """What patient generation needs from the directory: who attends which encounters where."""

    providers: tuple[tuple[str, str, str, str], ...]  # provider_id, npi, last name, first name
    facilities: tuple[tuple[str, str, int], ...]  # facility_id, name, index into Codes.cities
    pairs: dict[str, tuple[tuple[int, int], ...]]  # encounter key -> (provider index, facility index)

    def pairs_for(self, key: str) -> tuple[tuple[int, int], ...]:
        """Who can attend `key` encounters; falls back so that tiny or defective directories still work."""
        return self.pairs.get(key) or self.pairs.get("AMB-adult") or self.pairs["any"]


@dataclass
class Directory:
    facilities: list[Facility]
    providers: list[Provider]
    affiliations: list[Affiliation]
    roster: Roster
    defects: list[dict] = field(default_factory=list)


def directory_size(patients: int) -> tuple[int, int]:
    """(providers, facilities): about one provider per 50 patients and one facility per 500."""
    return max(10, round(patients / 50)), max(3, round(patients / 500))


def _weighted_name(rng: Random, names: tuple[str, ...]) -> str:
    # Names are listed by frequency; a rank-based weight gives common names their due without a table.
    return rng.choices(names, cum_weights=_rank_weights(len(names)))[0]


@cache
def _rank_weights(n: int) -> list[float]:
    total = 0.0
    cumulative = []
    for rank in range(n):
        total += 1.0 / (rank + 8)
        cumulative.append(total)
    return cumulative


def person_name(rng: Random, codes: Codes, female: bool) -> tuple[str, str]:
    """(given, family) drawn by frequency."""
    given = _weighted_name(rng, codes.female_names if female else codes.male_names)
    return given, _weighted_name(rng, codes.family_names)


def _random_date(rng: Random, start: date, end: date) -> date:
    return start + timedelta(days=rng.randint(0, max(0, (end - start).days)))


def _facilities(rng: Random, seed: int, count: int, codes: Codes) -> list[Facility]:
    area = rng.sample(range(len(codes.cities)), k=min(len(codes.cities), max(2, count // 4)))
    used: set[str] = set()
    facilities = []
    for j in range(count):
        kind = _FACILITY_TYPES[j] if j < 3 else rng.choices(_FACILITY_TYPES, _FACILITY_TYPE_WEIGHTS)[0]
        city = codes.cities[rng.choice(area)]
        name = f"{city.name} {rng.choice(_FACILITY_NAMES[kind])}"
        candidates = [name] + [f"{name} - {campus}" for campus in _CAMPUSES]
        unique = next((c for c in candidates if c not in used), f"{name} {j + 1}")
        used.add(unique)
        base = npi_base(seed, j, "2")
        facilities.append(
            Facility(
                facility_id=f"F{j + 1:04d}",
                name=unique,
                npi=base + npi_check_digit(base),
                facility_type=kind,
                address=f"{rng.randint(100, 9899)} {rng.choice(codes.streets)}",
                city=city,
                phone=phone_number(seed, j, city.area_code),
            )
        )
    return facilities


def _email_local(first: str, last: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", f"{first}.{last}".lower())


def _providers_and_affiliations(
    rng: Random, seed: int, count: int, facilities: list[Facility], codes: Codes
) -> tuple[list[Provider], list[list[Affiliation]]]:
    specialty_weights = [s.weight for s in codes.specialties]
    domain = rng.choice(_EMAIL_DOMAINS)
    emails: set[str] = set()
    providers: list[Provider] = []
    affiliations: list[list[Affiliation]] = []
    latest_start = REFERENCE_DATE - timedelta(days=60)
    last_day = REFERENCE_DATE - timedelta(days=1)
    for i in range(count):
        specialty = rng.choices(codes.specialties, specialty_weights)[0]
        female = rng.random() < 0.5
        first, last = person_name(rng, codes, female)
        middle = ""
        if rng.random() < 0.45:
            middle = _weighted_name(rng, codes.female_names if female else codes.male_names)
        birth_year = REFERENCE_DATE.year - rng.randint(30, 70)
        graduation_year = min(birth_year + rng.randint(24, 30), REFERENCE_DATE.year - 4)
        eligible = [j for j, f in enumerate(facilities) if f.facility_type in specialty.facility_types]
        eligible = eligible or list(range(len(facilities)))
        chosen = rng.sample(eligible, k=min(len(eligible), rng.choices((1, 2, 3), (55, 30, 15))[0]))
        home = facilities[chosen[0]].city
        local = _email_local(first, last)
        email, n = f"{local}@{domain}", 1
        while email in emails:
            n += 1
            email = f"{local}{n}@{domain}"
        emails.add(email)
        active = rng.random() >= 0.03
        base = npi_base(seed, i, "1")
        provider = Provider(
            provider_id=f"P{i + 1:06d}",
            npi=base + npi_check_digit(base),
            first_name=first,
            middle_name=middle,
            last_name=last,
            full_name=" ".join(part for part in (first, middle, last) if part),
            gender="F" if female else "M",
            birth_year=birth_year,
            graduation_year=graduation_year,
            specialty=specialty,
            license_number=f"{specialty.degree}{rng.randint(10_000, 999_999):06d}",
            license_state=home.state,
            license_expiry=REFERENCE_DATE + timedelta(days=rng.randint(30, 3 * 365)),
            email=email,
            phone=phone_number(seed, len(facilities) + i, home.area_code),
            active=active,
        )
        earliest = date(graduation_year + 3, 7, 1)
        rows = []
        for k, j in enumerate(chosen):
            start = _random_date(rng, earliest, latest_start)
            ended = not active or (k > 0 and rng.random() < 0.25)
            end = _random_date(rng, start + timedelta(days=30), last_day) if ended else None
            rows.append(
                Affiliation(
                    affiliation_id=f"A{i + 1:06d}{k + 1:02d}",
                    provider_id=provider.provider_id,
                    facility_id=facilities[j].facility_id,
                    is_primary=k == 0,
                    start_date=start,
                    end_date=end,
                    active=not ended,
                )
            )
        providers.append(provider)
        affiliations.append(rows)
    return providers, affiliations


def _pairs(
    providers: list[Provider], affiliations: list[list[Affiliation]], facilities: list[Facility]
) -> dict[str, tuple[tuple[int, int], ...]]:
    """Encounter key -> (provider index, facility index) for each active provider at each active
    affiliation where that kind of encounter happens; "any" holds every affiliation as a fallback."""
    facility_index = {f.facility_id: j for j, f in enumerate(facilities)}
    pairs: dict[str, list[tuple[int, int]]] = {"any": []}
    for i, (provider, rows) in enumerate(zip(providers, affiliations, strict=True)):
        for row in rows:
            j = facility_index[row.facility_id]
            pairs["any"].append((i, j))
            if not (provider.active and row.active):
                continue
            for key in provider.specialty.attends:
                if facilities[j].facility_type in _ENCOUNTER_FACILITIES[key]:
                    pairs.setdefault(key, []).append((i, j))
    return {key: tuple(value) for key, value in pairs.items()}


def build_directory(seed: int, patients: int, defect_rate: float, codes: Codes) -> Directory:
    """The directory for a hospital of `patients`; its defects come from a stream of their own, so the
    same seed gives the same providers whatever the defect rate."""
    rng = Random(f"{seed}:directory")
    n_providers, n_facilities = directory_size(patients)
    facilities = _facilities(rng, seed, n_facilities, codes)
    providers, affiliations = _providers_and_affiliations(rng, seed, n_providers, facilities, codes)
    # Encounters are assigned from the clean affiliations, so patients do not depend on the defect rate.
    pairs = _pairs(providers, affiliations, facilities)
    injector = _DirectoryDefects(
        Random(f"{seed}:directory-defects"), defect_rate, facilities, n_providers, codes
    )
    injector.facilities()
    rows = injector.providers(providers, affiliations)
    city_index = {city: n for n, city in enumerate(codes.cities)}
    roster = Roster(
        providers=tuple((p.provider_id, p.npi, p.last_name, p.first_name) for p in providers),
        facilities=tuple((f.facility_id, f.name, city_index[f.city]) for f in facilities),
        pairs=pairs,
    )
    return Directory(facilities, providers, rows, roster, injector.records)


class _DirectoryDefects:
    """Injects directory defects in place and keeps the ground-truth record of each."""

    def __init__(
        self, rng: Random, rate: float, facilities: list[Facility], n_providers: int, codes: Codes
    ) -> None:
        self.rng = rng
        self.rate = rate
        self.all_facilities = facilities
        self.n_providers = n_providers
        self.codes = codes
        self.records: list[dict] = []
        self.ghosts = 0

    def add(self, kind: str, file: str, record_id: str, field: str, detail: str, related: str | None = None):
        self.records.append(defect(kind, file, record_id, field, detail, related))

    def facilities(self) -> None:
        for facility in self.all_facilities:
            kind = first_hit(self.rng, self.rate, ("missing_npi", "npi_check_digit", "npi_malformed"))
            if kind:
                facility.npi = self._bad_npi(kind, facility.npi, FACILITIES_FILE, facility.facility_id)
            if first_hit(self.rng, self.rate, ("phone_invalid",)):
                facility.phone = self._bad_phone(facility.phone, FACILITIES_FILE, facility.facility_id)

    def providers(
        self, providers: list[Provider], affiliations: list[list[Affiliation]]
    ) -> list[Affiliation]:
        clean_npis: list[Provider] = []
        out: list[Affiliation] = []
        for provider, rows in zip(providers, affiliations, strict=True):
            pid = provider.provider_id
            kind = first_hit(
                self.rng, self.rate, ("missing_npi", "npi_check_digit", "npi_malformed", "npi_duplicate")
            )
            if kind == "npi_duplicate" and clean_npis:
                source = self.rng.choice(clean_npis)
                provider.npi = source.npi
                self.add(
                    kind, PROVIDERS_FILE, pid, "npi", f"same NPI as {source.provider_id}", source.provider_id
                )
            elif kind and kind != "npi_duplicate":
                provider.npi = self._bad_npi(kind, provider.npi, PROVIDERS_FILE, pid)
            else:
                clean_npis.append(provider)
            self._contact(provider)
            self._person(provider)
            if provider.active:
                self._affiliation_anomaly(provider, rows)
            if first_hit(self.rng, self.rate, ("orphan_reference",)):
                rows.append(self._orphan(provider, rows))
            out.extend(rows)
        return out

    def _bad_npi(self, kind: str, npi: str, file: str, record_id: str) -> str:
        rng = self.rng
        if kind == "missing_npi":
            self.add(kind, file, record_id, "npi", "NPI is empty")
            return ""
        if kind == "npi_check_digit":
            wrong = str((int(npi[9]) + rng.randint(1, 9)) % 10)
            self.add(kind, file, record_id, "npi", f"check digit {wrong}, Luhn needs {npi[9]}")
            return npi[:9] + wrong
        variant = rng.randrange(3)
        if variant == 0:
            bad = npi[:9]
        elif variant == 1:
            bad = npi + str(rng.randint(0, 9))
        else:
            position = rng.randint(1, 8)
            bad = npi[:position] + rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") + npi[position + 1 :]
        self.add(kind, file, record_id, "npi", f"{bad!r} is not 10 digits")
        return bad

    def _bad_phone(self, phone: str, file: str, record_id: str) -> str:
        variant = self.rng.randrange(4)
        if variant == 0:
            bad = phone[-8:]  # the area code left off
        elif variant == 1:
            bad = phone + str(self.rng.randint(0, 9))
        elif variant == 2:
            bad = phone[:-4] + "CALL"
        else:
            bad = phone[:1] + self.rng.choice("01") + phone[2:]
        self.add("phone_invalid", file, record_id, "phone", f"{bad!r} is not a valid US number")
        return bad

    def _contact(self, provider: Provider) -> None:
        pid = provider.provider_id
        kind = first_hit(self.rng, self.rate, ("missing_email", "email_syntax", "email_test_domain"))
        local, domain = provider.email.split("@")
        if kind == "missing_email":
            provider.email = ""
            self.add(kind, PROVIDERS_FILE, pid, "email", "email is empty")
        elif kind == "email_syntax":
            provider.email = self.rng.choice(
                (
                    f"{local}{domain}",
                    f"{local}@@{domain}",
                    f"{local}@{domain.split('.')[0]}",
                    f"{local.replace('.', ' ')}@{domain}",
                )
            )
            self.add(kind, PROVIDERS_FILE, pid, "email", f"{provider.email!r} is not a valid address")
        elif kind == "email_test_domain":
            provider.email = f"{local}@{self.rng.choice(_TEST_DOMAINS)}"
            self.add(
                kind, PROVIDERS_FILE, pid, "email", f"{provider.email!r} is at a reserved example domain"
            )
        if first_hit(self.rng, self.rate, ("phone_invalid",)):
            provider.phone = self._bad_phone(provider.phone, PROVIDERS_FILE, pid)

    def _person(self, provider: Provider) -> None:
        pid = provider.provider_id
        rng = self.rng
        if first_hit(rng, self.rate, ("name_mismatch",)):
            if rng.random() < 0.5:
                other = rng.choice([n for n in self.codes.family_names if n != provider.last_name])
                provider.full_name = f"{provider.first_name} {other}"
            else:
                names = self.codes.female_names if provider.gender == "F" else self.codes.male_names
                other = rng.choice([n for n in names if n != provider.first_name])
                provider.full_name = f"{other} {provider.last_name}"
            self.add(
                "name_mismatch", PROVIDERS_FILE, pid, "full_name", f"{provider.full_name!r} is not the name"
            )
        if first_hit(rng, self.rate, ("graduation_too_early",)):
            provider.graduation_year = provider.birth_year + rng.randint(10, 17)
            age = provider.graduation_year - provider.birth_year
            self.add(
                "graduation_too_early", PROVIDERS_FILE, pid, "graduation_year", f"graduated at age {age}"
            )
        if first_hit(rng, self.rate, ("license_expired",)):
            provider.license_expiry = REFERENCE_DATE - timedelta(days=rng.randint(1, 730))
            self.add(
                "license_expired",
                PROVIDERS_FILE,
                pid,
                "license_expiry",
                f"licence expired {provider.license_expiry.isoformat()}",
            )

    def _new_row(self, provider: Provider, rows: list[Affiliation], *, primary: bool) -> Affiliation:
        facility = self.rng.choice(self.all_facilities)
        start = _random_date(self.rng, date(provider.graduation_year + 3, 7, 1), REFERENCE_DATE)
        return Affiliation(
            affiliation_id=f"{provider.provider_id.replace('P', 'A')}{len(rows) + 1:02d}",
            provider_id=provider.provider_id,
            facility_id=facility.facility_id,
            is_primary=primary,
            start_date=min(start, REFERENCE_DATE - timedelta(days=60)),
            end_date=None,
            active=True,
        )

    def _affiliation_anomaly(self, provider: Provider, rows: list[Affiliation]) -> None:
        kind = first_hit(self.rng, self.rate, _AFFILIATION_ANOMALIES)
        if kind is None:
            return
        pid = provider.provider_id
        if kind == "primary_affiliation_missing":
            for row in rows:
                row.is_primary = False
            self.add(kind, AFFILIATIONS_FILE, pid, "is_primary", "no affiliation is primary")
        elif kind == "primary_affiliation_multiple":
            if len(rows) > 1:
                rows[1].is_primary = True
            else:
                rows.append(self._new_row(provider, rows, primary=True))
            self.add(kind, AFFILIATIONS_FILE, pid, "is_primary", "two affiliations are primary")
        elif kind == "no_active_affiliation":
            for row in rows:
                if row.active:
                    row.end_date = _random_date(
                        self.rng, row.start_date + timedelta(days=30), REFERENCE_DATE - timedelta(days=1)
                    )
                    row.active = False
            self.add(kind, AFFILIATIONS_FILE, pid, "active", "every affiliation has ended")
        else:
            total = self.rng.randint(11, 14)
            while len(rows) < total:
                rows.append(self._new_row(provider, rows, primary=False))
            self.add(kind, AFFILIATIONS_FILE, pid, "provider_id", f"{total} affiliations")

    def _orphan(self, provider: Provider, rows: list[Affiliation]) -> Affiliation:
        """An extra affiliation to a facility, or from a provider, that does not exist.

        A missing facility's row is inactive and not primary, and a missing provider's row is its only,
        primary and active one, so neither changes any provider's affiliation counts.
        """
        self.ghosts += 1
        if self.rng.random() < 0.5:
            row = self._new_row(provider, rows, primary=False)
            row.facility_id = f"F{len(self.all_facilities) + self.ghosts:04d}"
            row.end_date = _random_date(
                self.rng, row.start_date + timedelta(days=30), REFERENCE_DATE - timedelta(days=1)
            )
            row.active = False
            missing, field = row.facility_id, "facility_id"
        else:
            ghost = self.n_providers + self.ghosts
            row = self._new_row(provider, rows, primary=True)
            row.provider_id = f"P{ghost:06d}"
            row.affiliation_id = f"A{ghost:06d}01"
            missing, field = row.provider_id, "provider_id"
        detail = f"{field} {missing} does not exist"
        self.add("orphan_reference", AFFILIATIONS_FILE, row.affiliation_id, field, detail, missing)
        return row


def month_start(index: int) -> date:
    """The first day of month `index` of the encounter window (0 = the window's first month)."""
    months = WINDOW_START.month - 1 + index
    return date(WINDOW_START.year + months // 12, months % 12 + 1, 1)


def activity_key(provider: int, facility: int, month: int, facilities: int) -> int:
    """One int per (provider, facility, month), ordered like the tuple: compact to count encounters by."""
    return (provider * facilities + facility) * WINDOW_MONTHS + month


def activity_rows(
    directory: Directory, encounters: dict[int, int], seed: int
) -> Iterator[tuple[str, str, str, str, date, int]]:
    """Monthly activity per provider, streamed: encounter counts from the generated encounters (keyed by
    activity_key), procedures and consults drawn from the specialty (at the primary facility)."""
    rng = Random(f"{seed}:activity")
    facility_ids = [f.facility_id for f in directory.facilities]
    per_provider = len(facility_ids) * WINDOW_MONTHS
    keys = sorted(encounters)
    position = 0
    primary: dict[str, str] = {}
    for row in directory.affiliations:
        primary.setdefault(row.provider_id, row.facility_id)
    number = 0
    for i, provider in enumerate(directory.providers):
        drawn: list[tuple[int, str, str, int]] = []
        if provider.active:
            for month in range(WINDOW_MONTHS):
                for kind, mean in (
                    ("procedure", provider.specialty.procedures_per_month),
                    ("consult", provider.specialty.consults_per_month),
                ):
                    volume = round(rng.gauss(mean, mean * 0.3)) if mean else 0
                    if volume > 0:
                        drawn.append((month, kind, primary[provider.provider_id], volume))
        while position < len(keys) and keys[position] // per_provider == i:
            key = keys[position]
            facility = facility_ids[key // WINDOW_MONTHS % len(facility_ids)]
            drawn.append((key % WINDOW_MONTHS, "encounter", facility, encounters[key]))
            position += 1
        drawn.sort(key=lambda r: (r[0], r[1], r[2]))
        for month, kind, facility_id, volume in drawn:
            number += 1
            yield (f"ACT{number:08d}", provider.provider_id, facility_id, kind, month_start(month), volume)


def csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def provider_row(p: Provider) -> tuple:
    return (
        p.provider_id,
        p.npi,
        p.first_name,
        p.middle_name,
        p.last_name,
        p.full_name,
        p.gender,
        p.birth_year,
        p.graduation_year,
        p.specialty.display,
        p.license_number,
        p.license_state,
        p.license_expiry,
        p.email,
        p.phone,
        p.active,
    )


def facility_row(f: Facility) -> tuple:
    return (
        f.facility_id,
        f.name,
        f.npi,
        f.facility_type,
        f.address,
        f.city.name,
        f.city.state,
        f.city.postal_code,
        f.phone,
        f.active,
    )


def affiliation_row(a: Affiliation) -> tuple:
    return (a.affiliation_id, a.provider_id, a.facility_id, a.is_primary, a.start_date, a.end_date, a.active)


def practitioner(p: Provider) -> dict:
    """The FHIR Practitioner mirroring a directory provider (same id, same values, same defects)."""
    given = [p.first_name, p.middle_name] if p.middle_name else [p.first_name]
    name = {"use": "official", "text": p.full_name, "family": p.last_name, "given": given}
    if p.specialty.degree == "MD":
        name["prefix"] = ["Dr."]
    telecom = [{"system": "phone", "value": p.phone, "use": "work"}]
    if p.email:
        telecom.append({"system": "email", "value": p.email, "use": "work"})
    resource: dict = {"resourceType": "Practitioner", "id": p.provider_id}
    if p.npi:
        resource["identifier"] = [{"use": "official", "system": NPI_SYSTEM, "value": p.npi}]
    resource.update(
        {
            "active": p.active,
            "name": [name],
            "telecom": telecom,
            "gender": "female" if p.gender == "F" else "male",
            "birthDate": str(p.birth_year),
            "qualification": [
                {
                    "identifier": [
                        {
                            "type": {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                        "code": p.specialty.degree,
                                        "display": _LICENSE_TYPES[p.specialty.degree],
                                    }
                                ]
                            },
                            "value": p.license_number,
                        }
                    ],
                    "code": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0360",
                                "code": p.specialty.degree,
                                "display": _DEGREES[p.specialty.degree],
                            }
                        ]
                    },
                    "period": {"start": str(p.graduation_year), "end": p.license_expiry.isoformat()},
                    "issuer": {"display": f"{p.license_state} licensing board"},
                }
            ],
        }
    )
    return resource


def organization(f: Facility) -> dict:
    resource: dict = {"resourceType": "Organization", "id": f.facility_id}
    if f.npi:
        resource["identifier"] = [{"use": "official", "system": NPI_SYSTEM, "value": f.npi}]
    resource.update(
        {
            "active": f.active,
            "type": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                            "code": "prov",
                            "display": "Healthcare Provider",
                        }
                    ],
                    "text": f.facility_type,
                }
            ],
            "name": f.name,
            "telecom": [{"system": "phone", "value": f.phone, "use": "work"}],
            "address": [
                {
                    "use": "work",
                    "line": [f.address],
                    "city": f.city.name,
                    "state": f.city.state,
                    "postalCode": f.city.postal_code,
                    "country": "US",
                }
            ],
        }
    )
    return resource


def practitioner_role(a: Affiliation, provider: Provider | None) -> dict:
    """The FHIR PractitionerRole mirroring an affiliation; an orphan row keeps its dangling reference."""
    period = {"start": a.start_date.isoformat()}
    if a.end_date:
        period["end"] = a.end_date.isoformat()
    resource: dict = {
        "resourceType": "PractitionerRole",
        "id": a.affiliation_id,
        "extension": [{"url": EXTENSION_BASE + "primary-affiliation", "valueBoolean": a.is_primary}],
        "active": a.active,
        "period": period,
        "practitioner": {"reference": f"Practitioner/{a.provider_id}"},
        "organization": {"reference": f"Organization/{a.facility_id}"},
    }
    if provider:
        code, display = _ROLE_CODES[provider.specialty.degree]
        resource["code"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/practitioner-role",
                        "code": code,
                        "display": display,
                    }
                ]
            }
        ]
        resource["specialty"] = [
            {
                "coding": [
                    {
                        "system": "http://nucc.org/provider-taxonomy",
                        "code": provider.specialty.code,
                        "display": provider.specialty.display,
                    }
                ]
            }
        ]
    return resource
