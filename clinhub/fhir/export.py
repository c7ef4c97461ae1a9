"""Bulk Data export: the store's resources as one NDJSON file per type, at system, Patient or Group level.

System level writes every resource type; Patient level the Patient compartment (patients and what
references them through `patient`/`subject`); Group level the compartment of a Group's members. `_type`
narrows the types and `_since` keeps resources stored after an instant. Each file is written in id
order from pages of the store, so memory stays flat whatever the size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, Text, cast, false, select

from clinhub.errors import InvalidInput, NotFound
from clinhub.fhir.index import PARAMS, REFERENCE
from clinhub.fhir.validation import is_resource_type
from clinhub.store.schema import fhir_resource, fhir_search_reference

LEVELS = ("system", "patient", "group")
PAGE = 5000
_MEMBER_CHUNK = 500


def compartment_types() -> list[str]:
    """Patient and every type whose `patient` parameter finds Patients."""
    found = ["Patient"]
    found += sorted(t for t, params in PARAMS.items() if t != "Patient" and "patient" in params)
    return found


@dataclass
class ExportResult:
    transaction_time: str
    output: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"transactionTime": self.transaction_time, "output": self.output}


def parse_types(value: str | None) -> list[str] | None:
    if not value:
        return None
    types = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in types if not is_resource_type(t)]
    if unknown:
        raise InvalidInput(f"_type names no FHIR resource type: {', '.join(unknown)}")
    return types


def parse_since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"_since must be an instant such as 2024-01-31T12:00:00Z, got {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _group_members(engine: Engine, group_id: str) -> list[str]:
    with engine.connect() as conn:
        row = conn.execute(
            select(fhir_resource.c.resource).where(
                fhir_resource.c.resource_type == "Group",
                fhir_resource.c.id == group_id,
                fhir_resource.c.deleted == false(),
            )
        ).scalar()
    if row is None:
        raise NotFound(f"no Group/{group_id}")
    members = []
    for member in row.get("member", []) if isinstance(row, dict) else []:
        reference = (member.get("entity") or {}).get("reference", "") if isinstance(member, dict) else ""
        if isinstance(reference, str) and reference.startswith("Patient/"):
            members.append(reference.removeprefix("Patient/"))
    return members


def _compartment_ids(engine: Engine, resource_type: str, members: list[str] | None) -> set[str] | None:
    """Ids of `resource_type` in the compartment of `members` (None: of every patient); None = no filter."""
    if resource_type == "Patient":
        return None if members is None else set(members)
    param = PARAMS[resource_type]["patient"]
    assert param.kind == REFERENCE
    t = fhir_search_reference
    base = select(t.c.resource_id).where(
        t.c.resource_type == resource_type, t.c.param == param.stored, t.c.target_type == "Patient"
    )
    found: set[str] = set()
    with engine.connect() as conn:
        if members is None:
            found.update(conn.execute(base).scalars())
        else:
            for start in range(0, len(members), _MEMBER_CHUNK):
                chunk = members[start : start + _MEMBER_CHUNK]
                found.update(conn.execute(base.where(t.c.target_id.in_(chunk))).scalars())
    return found


def _stored_types(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        types = conn.execute(
            select(fhir_resource.c.resource_type).where(fhir_resource.c.deleted == false()).distinct()
        ).scalars()
        return sorted(t for t in types if is_resource_type(t))


def export(
    engine: Engine,
    out_dir: Path,
    *,
    level: str = "system",
    group_id: str | None = None,
    types: list[str] | None = None,
    since: datetime | None = None,
    progress: Callable[[float], None] | None = None,
) -> ExportResult:
    """Write `{Type}.ndjson` files into `out_dir`; returns the transaction time and per-file counts."""
    if level not in LEVELS:
        raise InvalidInput(f"level must be one of {', '.join(LEVELS)}")
    started = datetime.now(UTC)
    result = ExportResult(started.isoformat().replace("+00:00", "Z"))
    members = _group_members(engine, group_id or "") if level == "group" else None
    if level == "system":
        wanted = types or _stored_types(engine)
    else:
        compartment = compartment_types()
        wanted = [t for t in (types or compartment) if t in compartment]
    out_dir.mkdir(parents=True, exist_ok=True)
    for done, resource_type in enumerate(wanted):
        allowed = None if level == "system" else _compartment_ids(engine, resource_type, members)
        count = _write_type(
            engine, out_dir / f"{resource_type}.ndjson", resource_type, since, started, allowed
        )
        if count:
            result.output.append({"type": resource_type, "file": f"{resource_type}.ndjson", "count": count})
        else:
            (out_dir / f"{resource_type}.ndjson").unlink(missing_ok=True)
        if progress:
            progress(100 * (done + 1) / max(1, len(wanted)))
    return result


def _write_type(
    engine: Engine,
    path: Path,
    resource_type: str,
    since: datetime | None,
    until: datetime,
    allowed: set[str] | None,
) -> int:
    r = fhir_resource
    where = [r.c.resource_type == resource_type, r.c.deleted == false(), r.c.last_updated <= until]
    if since is not None:
        where.append(r.c.last_updated > since)
    count = 0
    after = ""
    with path.open("w", encoding="utf-8") as handle, engine.connect() as conn:
        while True:
            rows = conn.execute(
                select(r.c.id, cast(r.c.resource, Text))
                .where(*where, r.c.id > after)
                .order_by(r.c.id)
                .limit(PAGE)
            ).all()
            if not rows:
                break
            for resource_id, text in rows:
                if allowed is None or resource_id in allowed:
                    handle.write(text)
                    handle.write("\n")
                    count += 1
            after = rows[-1][0]
    return count
