"""The synthetic hospital: same seed same bytes, valid FHIR R4 and HL7 v2, a defect manifest that is true."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import hl7
import pytest
from fhir.resources.R4B import get_fhir_model_class

from clinhub.errors import InvalidInput
from clinhub.store.schema import DIRECTORY_TABLES
from clinhub.synth import generate


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _ndjson(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "h"
    generate(out, patients=40, seed=5, defect_rate=0.1)
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", patients=25, seed=3)
    generate(tmp_path / "b", patients=25, seed=3)
    generate(tmp_path / "c", patients=25, seed=4)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a")["fhir/Patient.ndjson"] != _digests(tmp_path / "c")["fhir/Patient.ndjson"]


def test_every_resource_is_valid_fhir_r4(hospital: Path) -> None:
    checked = 0
    for path in sorted((hospital / "fhir").glob("*.ndjson")):
        model = get_fhir_model_class(path.stem)
        for resource in _ndjson(path):
            model.model_validate(resource)
            checked += 1
    assert checked > 500


def test_references_resolve_except_the_listed_orphans(hospital: Path) -> None:
    known = {
        f"{r['resourceType']}/{r['id']}" for p in (hospital / "fhir").glob("*.ndjson") for r in _ndjson(p)
    }
    dangling = set()
    for path in (hospital / "fhir").glob("*.ndjson"):
        for resource in _ndjson(path):
            stack = [resource]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    ref = node.get("reference")
                    if isinstance(ref, str) and ref not in known:
                        dangling.add(ref)
                    stack.extend(node.values())
                elif isinstance(node, list):
                    stack.extend(node)
    defects = _ndjson(hospital / "defects.ndjson")
    orphans = {
        d["related"] for d in defects if d["kind"] == "orphan_reference" and d["file"].startswith("fhir/")
    }
    assert dangling == orphans and orphans


def test_hl7_messages_parse_and_match_patients(hospital: Path) -> None:
    messages = [m for m in (hospital / "hl7" / "messages.hl7").read_bytes().decode().split("\n") if m]
    mrns = {
        i["value"] for p in _ndjson(hospital / "fhir" / "Patient.ndjson") for i in p.get("identifier", [])
    }
    control_ids = []
    for text in messages:
        message = hl7.parse(text)
        assert str(message.segment("MSH")[12]) == "2.5.1"
        control_ids.append(str(message.segment("MSH")[10]))
        pids = message.segments("PID")
        assert len(pids) == 1, str(message.segment("MSH")[9])
        assert str(pids[0][3][0][0]) in mrns
    assert len(control_ids) == len(set(control_ids)) > 50


def test_directory_columns_match_the_store(hospital: Path) -> None:
    files = {
        "provider": "providers.csv",
        "facility": "facilities.csv",
        "affiliation": "affiliations.csv",
        "activity": "activities.csv",
    }
    for table in DIRECTORY_TABLES:
        with (hospital / "directory" / files[table.name]).open() as handle:
            assert next(csv.reader(handle)) == [c.name for c in table.columns]


def _luhn_ok(npi: str) -> bool:
    digits = [int(c) for c in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def test_npi_defects_are_exactly_the_bad_npis(hospital: Path) -> None:
    with (hospital / "directory" / "providers.csv").open() as handle:
        providers = list(csv.DictReader(handle))
    bad = {
        p["provider_id"]
        for p in providers
        if p["npi"] and not (len(p["npi"]) == 10 and p["npi"].isdigit() and _luhn_ok(p["npi"]))
    }
    listed = {
        d["id"]
        for d in _ndjson(hospital / "defects.ndjson")
        if d["kind"] in ("npi_check_digit", "npi_malformed")
    }
    assert bad == listed


def test_no_defects_at_rate_zero(tmp_path: Path) -> None:
    result = generate(tmp_path, patients=30, seed=2, defect_rate=0)
    assert sum(result.defects.values()) == 0
    assert (tmp_path / "defects.ndjson").read_text() == ""


@pytest.mark.parametrize("kwargs", [{"patients": 0}, {"patients": 5, "defect_rate": 1.5}])
def test_bad_arguments_are_invalid_input(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(InvalidInput):
        generate(tmp_path, **{"seed": 1, **kwargs})
