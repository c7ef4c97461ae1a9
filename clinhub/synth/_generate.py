"""generate(): the directory first, then patients in chunks (in worker processes when it pays), streamed
to the output files in patient order, so the bytes never depend on how the work was split."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

from clinhub import __version__
from clinhub.errors import InvalidInput
from clinhub.synth._clinical import Plan, build_patient
from clinhub.synth._codes import load_codes
from clinhub.synth._common import REFERENCE_DATE, WINDOW_START
from clinhub.synth._defects import DEFECT_KINDS, count_by_kind
from clinhub.synth._directory import (
    ACTIVITIES_FILE,
    ACTIVITY_COLUMNS,
    AFFILIATION_COLUMNS,
    AFFILIATIONS_FILE,
    FACILITIES_FILE,
    FACILITY_COLUMNS,
    PROVIDER_COLUMNS,
    PROVIDERS_FILE,
    Directory,
    activity_key,
    activity_rows,
    affiliation_row,
    build_directory,
    csv_value,
    facility_row,
    organization,
    practitioner,
    practitioner_role,
    provider_row,
)
from clinhub.synth._fhir import PATIENT_TYPES, render_patient
from clinhub.synth._hl7 import render_messages

HL7_FILE = "hl7/messages.hl7"
DEFECTS_FILE = "defects.ndjson"
MANIFEST_FILE = "manifest.json"
DIRECTORY_TYPES = ("Practitioner", "Organization", "PractitionerRole")
#: Every generated file (relative to the output directory) except manifest.json, in manifest order.
OUTPUT_FILES = (
    *(f"fhir/{t}.ndjson" for t in (*PATIENT_TYPES, *DIRECTORY_TYPES)),
    HL7_FILE,
    PROVIDERS_FILE,
    FACILITIES_FILE,
    AFFILIATIONS_FILE,
    ACTIVITIES_FILE,
    DEFECTS_FILE,
)
_PATIENT_FILES = (*(f"fhir/{t}.ndjson" for t in PATIENT_TYPES), HL7_FILE, DEFECTS_FILE)
MAX_PATIENTS = 10_000_000
CHUNK_PATIENTS = 250
# Below this many patients, starting worker processes costs more than it saves.
PARALLEL_THRESHOLD = 2_000
SOURCES = {
    "conditions": "SNOMED CT International Edition (SNOMED International); ICD-10-CM (CDC/NCHS)",
    "observations": "LOINC (Regenstrief Institute); units in UCUM",
    "medications": "RxNorm (U.S. National Library of Medicine)",
    "allergies": "SNOMED CT International Edition substance concepts",
    "encounters": "HL7 v3 ActCode encounter classes; SNOMED CT encounter types",
    "specialties": "NUCC Health Care Provider Taxonomy",
    "names": "U.S. Social Security Administration baby names; U.S. Census Bureau 2010 surnames",
    "places": "U.S. Census Bureau places; USPS ZIP codes; NANPA area codes",
    "note": "every person, provider, facility and event is synthetic; see clinhub/synth/codes/README.md",
}


@dataclass(frozen=True)
class SynthResult:
    """What generate() wrote: records per file (relative path) and injected defects per kind."""

    out_dir: Path
    patients: int
    seed: int
    defect_rate: float
    counts: dict[str, int]
    defects: dict[str, int]
    elapsed_seconds: float


@dataclass
class _Chunk:
    data: dict[str, bytes]
    counts: dict[str, int]
    defects: dict[str, int]
    encounters: dict[int, int]  # activity_key -> count


def _month(moment) -> int:
    return (moment.year - WINDOW_START.year) * 12 + moment.month - WINDOW_START.month


def _render_chunk(plan: Plan, start: int, stop: int) -> _Chunk:
    fhir: dict[str, list[bytes]] = {t: [] for t in PATIENT_TYPES}
    messages: list[str] = []
    defects: list[dict] = []
    encounters: dict[int, int] = {}
    facilities = len(plan.roster.facilities)

    def emit(resource_type: str, line: bytes) -> None:
        fhir[resource_type].append(line)

    for index in range(start, stop):
        patient, injected = build_patient(index, plan)
        render_patient(patient, plan.roster, emit)
        render_messages(patient, plan.roster, messages.append)
        defects.extend(injected)
        for visit in patient.visits:
            key = activity_key(visit.provider, visit.facility, _month(visit.start), facilities)
            encounters[key] = encounters.get(key, 0) + 1
    data = {f"fhir/{t}.ndjson": b"".join(lines) for t, lines in fhir.items()}
    data[HL7_FILE] = "".join(messages).encode()
    data[DEFECTS_FILE] = b"".join(orjson.dumps(d) + b"\n" for d in defects)
    counts = {f"fhir/{t}.ndjson": len(lines) for t, lines in fhir.items()}
    counts[HL7_FILE] = len(messages)
    counts[DEFECTS_FILE] = len(defects)
    return _Chunk(data, counts, count_by_kind(defects), encounters)


_worker_plan: Plan | None = None


def _init_worker(plan: Plan) -> None:
    global _worker_plan  # a pool initializer can hand state to later tasks only through a global
    _worker_plan = plan


def _work(bounds: tuple[int, int]) -> _Chunk:
    assert _worker_plan is not None
    return _render_chunk(_worker_plan, *bounds)


def _chunks(plan: Plan, patients: int, workers: int) -> Iterator[tuple[int, _Chunk]]:
    bounds = [(start, min(start + CHUNK_PATIENTS, patients)) for start in range(0, patients, CHUNK_PATIENTS)]
    if workers == 1:
        for start, stop in bounds:
            yield stop - start, _render_chunk(plan, start, stop)
        return
    # spawn, not fork: the caller may run threads (a progress bar), and forking a threaded process can
    # deadlock the child. At most two chunks per worker are in flight, so memory stays flat.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(plan,)) as pool:
        pending: deque = deque()
        for start, stop in bounds:
            pending.append((stop - start, pool.apply_async(_work, ((start, stop),))))
            if len(pending) >= 2 * workers:
                size, result = pending.popleft()
                yield size, result.get()
        while pending:
            size, result = pending.popleft()
            yield size, result.get()


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check(out_dir: Path, patients: int, defect_rate: float, workers: int | None) -> None:
    if isinstance(patients, bool) or not isinstance(patients, int) or not 1 <= patients <= MAX_PATIENTS:
        raise InvalidInput(f"patients must be a whole number from 1 to {MAX_PATIENTS:,}, not {patients!r}")
    if (
        isinstance(defect_rate, bool)
        or not isinstance(defect_rate, int | float)
        or math.isnan(defect_rate)
        or not 0 <= defect_rate <= 1
    ):
        raise InvalidInput(f"defect rate must be between 0 and 1, not {defect_rate!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidInput(f"workers must be a whole number of at least 1, not {workers!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"{out_dir} exists and is not a directory")


def _prepare(out_dir: Path) -> None:
    try:
        for sub in ("fhir", "hl7", "directory"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create {out_dir}: {exc.strerror or exc}") from None


def _csv(handle: IO[str], columns: tuple[str, ...], rows) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([csv_value(v) for v in row])
        count += 1
    return count


def _write_directory(files: dict[str, IO], directory: Directory, counts: dict[str, int]) -> None:
    providers = {p.provider_id: p for p in directory.providers}
    mirrors = (
        ("Practitioner", [practitioner(p) for p in directory.providers]),
        ("Organization", [organization(f) for f in directory.facilities]),
        (
            "PractitionerRole",
            [practitioner_role(a, providers.get(a.provider_id)) for a in directory.affiliations],
        ),
    )
    for resource_type, resources in mirrors:
        name = f"fhir/{resource_type}.ndjson"
        files[name].write(b"".join(orjson.dumps(r) + b"\n" for r in resources))
        counts[name] = len(resources)
    counts[PROVIDERS_FILE] = _csv(
        files[PROVIDERS_FILE], PROVIDER_COLUMNS, map(provider_row, directory.providers)
    )
    counts[FACILITIES_FILE] = _csv(
        files[FACILITIES_FILE], FACILITY_COLUMNS, map(facility_row, directory.facilities)
    )
    counts[AFFILIATIONS_FILE] = _csv(
        files[AFFILIATIONS_FILE], AFFILIATION_COLUMNS, map(affiliation_row, directory.affiliations)
    )
    files[DEFECTS_FILE].write(b"".join(orjson.dumps(d) + b"\n" for d in directory.defects))
    counts[DEFECTS_FILE] = len(directory.defects)


def generate(
    out_dir: Path,
    *,
    patients: int,
    seed: int = 42,
    defect_rate: float = 0.02,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> SynthResult:
    """Write a synthetic hospital of `patients` patients to `out_dir` and return what was written.

    The same (patients, seed, defect_rate) always gives byte-identical files. `progress(n)` is called
    with the number of patients finished since the previous call. `workers` is the number of processes
    (default: one per CPU for large runs); it never changes the output. Existing generated files in
    `out_dir` are overwritten; anything else there is left alone.
    """
    out_dir = Path(out_dir)
    _check(out_dir, patients, defect_rate, workers)
    started = time.perf_counter()
    _prepare(out_dir)
    codes = load_codes()
    directory = build_directory(seed, patients, defect_rate, codes)
    plan = Plan(seed, float(defect_rate), directory.roster)
    if workers is None:
        workers = min(_available_cpus(), 8) if patients >= PARALLEL_THRESHOLD else 1
    workers = min(workers, math.ceil(patients / CHUNK_PATIENTS))
    counts = dict.fromkeys(OUTPUT_FILES, 0)
    defects = count_by_kind(directory.defects)
    encounters: dict[int, int] = {}
    with ExitStack() as stack:
        files: dict[str, IO] = {}
        for name in OUTPUT_FILES:
            text = name.endswith(".csv")
            mode = {"mode": "w", "encoding": "utf-8", "newline": ""} if text else {"mode": "wb"}
            files[name] = stack.enter_context((out_dir / name).open(**mode))
        _write_directory(files, directory, counts)
        for size, chunk in _chunks(plan, patients, workers):
            for name, data in chunk.data.items():
                files[name].write(data)
                counts[name] += chunk.counts[name]
            for kind, n in chunk.defects.items():
                defects[kind] += n
            for key, n in chunk.encounters.items():
                encounters[key] = encounters.get(key, 0) + n
            if progress:
                progress(size)
        counts[ACTIVITIES_FILE] = _csv(
            files[ACTIVITIES_FILE], ACTIVITY_COLUMNS, activity_rows(directory, encounters, seed)
        )
    manifest = {
        "generator": f"clinhub.synth {__version__}",
        "seed": seed,
        "patients": patients,
        "defect_rate": float(defect_rate),
        "reference_date": REFERENCE_DATE.isoformat(),
        "encounter_window": {"start": WINDOW_START.date().isoformat(), "end": REFERENCE_DATE.isoformat()},
        "counts": counts,
        "defects": defects,
        "defect_kinds": DEFECT_KINDS,
        "sources": SOURCES,
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return SynthResult(
        out_dir=out_dir,
        patients=patients,
        seed=seed,
        defect_rate=float(defect_rate),
        counts=counts,
        defects=defects,
        elapsed_seconds=time.perf_counter() - started,
    )
