"""Job kinds of the FHIR domain: Bulk Data `$export` runs on the job system."""

from __future__ import annotations

from pathlib import Path

from clinhub.fhir.export import export, parse_since
from clinhub.platform.jobs import JobContext, job_kind


def export_dir(data_dir: Path, job_id: str) -> Path:
    """Where the files of export job `job_id` go (and are served from)."""
    return data_dir / "exports" / job_id


@job_kind("fhir.export", permission="health_data:read", retries=2)
def fhir_export(
    ctx: JobContext,
    level: str = "system",
    group_id: str | None = None,
    types: list[str] | None = None,
    since: str | None = None,
) -> dict:
    """Bulk Data export: one NDJSON file per resource type (system, Patient or Group level)."""
    result = export(
        ctx.hub.store,
        export_dir(ctx.hub.settings.data_dir, ctx.job_id),
        level=level,
        group_id=group_id,
        types=types,
        since=parse_since(since),
        progress=ctx.progress,
    )
    return result.as_dict()
