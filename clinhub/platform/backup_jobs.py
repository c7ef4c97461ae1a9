"""Backups as jobs: `backup.create` and `backup.verify` run on the job system, off the request path,
and a periodic task submits a backup every `backup_interval_hours` (then prunes by the retention
settings). Registered through jobs.KIND_MODULES."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from clinhub.errors import Conflict
from clinhub.hub import Hub
from clinhub.platform import backup, jobs
from clinhub.platform.logging import get_logger

log = get_logger("clinhub.backup")

#: how often each worker asks whether a scheduled backup is due
SCHEDULE_CHECK_SECONDS = 60.0
SCHEDULER = "scheduler"


def _prune_after(hub: Hub) -> list[int]:
    settings = hub.settings
    result = backup.prune_backups(hub, settings.backup_keep_days, settings.backup_keep_min)
    return [info.id for info in result.removed]


@jobs.job_kind("backup.create", permission="backup:manage", retries=1, retry_delay=60.0)
def create(ctx: jobs.JobContext, prune: bool = False) -> dict:
    """Take an online backup of the store and the analytic files (then prune by the retention settings)."""
    steps = iter(range(1, 10))

    def note(_phase: str) -> None:
        ctx.progress(next(steps, 9), 10)

    with backup.audited(ctx.hub, actor=ctx.created_by or SCHEDULER, action="backup.create") as audit_note:
        info = backup.create_backup(ctx.hub, progress=note)
        audit_note.resource_id = str(info.id)
        audit_note.detail = {"name": info.name, "size_bytes": info.size_bytes, "job": ctx.job_id}
    result = info.as_dict()
    if prune:
        result["pruned"] = _prune_after(ctx.hub)
    return result


@jobs.job_kind("backup.verify", permission="backup:manage", retries=0)
def verify(ctx: jobs.JobContext, backup_id: str = "latest") -> dict:
    """Check a backup's checksums and test-restore it into a scratch database."""
    with backup.audited(
        ctx.hub, actor=ctx.created_by or SCHEDULER, action="backup.verify", resource_id=backup_id
    ) as audit_note:
        result = backup.verify_backup(ctx.hub, backup_id, progress=lambda _phase: None)
        audit_note.resource_id = str(result.backup.id)
        audit_note.outcome = "success" if result.ok else "failure"
        audit_note.detail = {"reason": result.reason, "job": ctx.job_id}
    return result.as_dict()


def due(hub: Hub, now: datetime | None = None) -> str | None:
    """The id of the scheduled backup job that is due now, or None when none is (or none is set up).

    The id names the interval slot, so workers that decide at the same time submit it once."""
    hours = hub.settings.backup_interval_hours
    if hours <= 0:
        return None
    now = now or datetime.now(UTC)
    interval = timedelta(hours=hours)
    last = backup.last_success(hub)
    if last is not None and now - last < interval:
        return None
    slot = int(now.timestamp() // interval.total_seconds())
    return f"scheduled-backup-{slot}"


@jobs.periodic("backup.schedule", every_seconds=SCHEDULE_CHECK_SECONDS)
def schedule(hub: Hub) -> str | None:
    """Submit the scheduled backup when one is due; returns the job id it submitted, if any."""
    job_id = due(hub)
    if job_id is None:
        return None
    try:
        jobs.new_job(hub.store, "backup.create", {"prune": True}, SCHEDULER, job_id=job_id)
    except Conflict:
        return None  # another worker submitted it, or this slot's backup ran and failed: wait for the next
    jobs.submit_recorded(hub, job_id)
    log.info("scheduled backup submitted", job_id=job_id)
    return job_id
