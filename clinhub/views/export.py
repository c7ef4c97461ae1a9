"""Exports of views to files: the job behind `$viewdefinition-export`, and the same work run directly.

An export writes one file per view (`NAME.FORMAT`, rows streamed by DuckDB's COPY) into a folder of its
own, `$CLINHUB_DATA_DIR/exports/<export id>`, and then `manifest.json`, which lists the files; a folder
without a manifest is an export still running or one that stopped. A cancelled export leaves a marker
`exports/<export id>.cancelled` beside the folders, which a running export looks for between views.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from clinhub.config import Settings
from clinhub.engine import AnalyticEngine
from clinhub.errors import Conflict, InvalidInput, NotFound
from clinhub.platform.jobs import JobContext, job_kind
from clinhub.views.model import parse_view
from clinhub.views.runner import FORMATS, StoreSource, write_view

KIND = "views.export"
EXPORTS = "exports"
MANIFEST = "manifest.json"
#: an output's name becomes its file name: letters, digits, '_' and '-'
_OUTPUT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_EXPORT_ID = re.compile(r"[A-Za-z0-9\-]{1,64}")


class ExportCancelled(Conflict):
    """The export was cancelled while it ran."""


@dataclass(frozen=True)
class ExportView:
    """One view of an export: the output's name, what the caller named the view by, the ViewDefinition."""

    name: str
    label: str
    view: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "view": self.view}


def export_views_of(items: Sequence[tuple[str | None, str, dict[str, Any]]]) -> list[ExportView]:
    """ExportViews from (name or None, label, view), validating each view first. An output takes the
    name given, else the view's `name`, else `view_N`; names must be unique within an export."""
    found: list[ExportView] = []
    for number, (name, label, view) in enumerate(items, start=1):
        model = parse_view(view)
        chosen = name or model.name or f"view_{number}"
        if not _OUTPUT_NAME.fullmatch(chosen):
            raise InvalidInput(
                f"output name {chosen!r} must be letters, digits, '_' or '-' (at most 64), starting with a"
                " letter or digit; give the view a 'name' part"
            )
        if any(other.name == chosen for other in found):
            raise InvalidInput(f"two views export as {chosen!r}; give each a 'name' part of its own")
        found.append(ExportView(chosen, label, view))
    if not found:
        raise InvalidInput("an export needs at least one view")
    return found


# ------------------------------------------------------------------ where exports live
def exports_root(settings: Settings) -> Path:
    return settings.data_dir / EXPORTS


def export_folder(settings: Settings, export_id: str) -> Path:
    if not _EXPORT_ID.fullmatch(export_id):
        raise NotFound(f"no export {export_id!r}")
    return exports_root(settings) / export_id


def _marker(settings: Settings, export_id: str) -> Path:
    return exports_root(settings) / f"{export_id}.cancelled"


def is_cancelled(settings: Settings, export_id: str) -> bool:
    return _marker(settings, export_id).exists()


def cancel(settings: Settings, export_id: str) -> None:
    """Mark an export cancelled and remove its files; a running export stops after its current view."""
    folder = export_folder(settings, export_id)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _marker(settings, export_id).touch()
    shutil.rmtree(folder, ignore_errors=True)


def read_manifest(settings: Settings, export_id: str) -> dict[str, Any] | None:
    """The manifest of a finished export, or None while it runs or after it was cancelled."""
    path = export_folder(settings, export_id) / MANIFEST
    if is_cancelled(settings, export_id) or not path.is_file():
        return None
    return orjson.loads(path.read_bytes())


def output_file(settings: Settings, export_id: str, file_name: str) -> Path:
    """A file a finished export lists in its manifest; NotFound for any other name."""
    manifest = read_manifest(settings, export_id)
    listed = {output["file"] for output in (manifest or {}).get("output", [])}
    if file_name not in listed:
        raise NotFound(f"export {export_id} has no file {file_name!r}")
    path = export_folder(settings, export_id) / file_name
    if not path.is_file():
        raise NotFound(f"export {export_id} has no file {file_name!r}")
    return path


# ------------------------------------------------------------------ the work
def export_views(
    engine: AnalyticEngine,
    views: Sequence[ExportView],
    folder: Path,
    fmt: str,
    source: str | Path | StoreSource = "store",
    *,
    progress: Callable[[float, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
    client_tracking_id: str | None = None,
) -> dict[str, Any]:
    """Write each view's rows to `folder/NAME.FORMAT`, then `manifest.json`; returns the manifest.

    Files of the same names are replaced, others in the folder left alone. `stop` is asked before each
    view and before the manifest; when it says so, the export raises ExportCancelled.
    """
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    started = datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # until the new one is written, the export is not done
    outputs = []
    for done, item in enumerate(views):
        _check_stop(stop)
        file_name = f"{item.name}.{fmt}"
        rows = write_view(engine, item.view, source, folder / file_name, fmt)
        outputs.append({"name": item.name, "view": item.label, "file": file_name, "rows": rows})
        if progress is not None:
            progress(done + 1, len(views))
    _check_stop(stop)
    manifest = {
        "clientTrackingId": client_tracking_id,
        "format": fmt,
        "started": _instant(started),
        "finished": _instant(datetime.now(UTC)),
        "output": outputs,
    }
    # written to a temporary name and renamed: a manifest is either complete or absent
    partial = folder / f".{MANIFEST}.partial"
    partial.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    os.replace(partial, folder / MANIFEST)
    return manifest


def _check_stop(stop: Callable[[], bool] | None) -> None:
    if stop is not None and stop():
        raise ExportCancelled("the export was cancelled")


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_export(
    settings: Settings,
    export_id: str,
    views: list[dict[str, Any]],
    output_format: str,
    patients: list[str],
    since: str | None,
    client_tracking_id: str | None = None,
    *,
    progress: Callable[[float, float], None] | None = None,
) -> dict[str, Any]:
    """The export `export_id` over the store, into its folder under the data dir (what its job runs)."""
    items = [ExportView(v["name"], v["label"], v["view"]) for v in views]
    moment = datetime.fromisoformat(since) if since is not None else None
    source = StoreSource(tuple(patients), moment)
    folder = export_folder(settings, export_id)
    # the folder is this export's alone: a retried job starts clean, a cancelled one leaves nothing
    shutil.rmtree(folder, ignore_errors=True)
    try:
        with AnalyticEngine(settings.store_url) as engine:
            return export_views(
                engine,
                items,
                folder,
                output_format,
                source,
                progress=progress,
                stop=lambda: is_cancelled(settings, export_id),
                client_tracking_id=client_tracking_id,
            )
    except ExportCancelled:
        shutil.rmtree(folder, ignore_errors=True)
        raise


@job_kind(KIND, permission="views:run", retries=2)
def export_job(
    ctx: JobContext,
    views: list[dict[str, Any]],
    output_format: str,
    patients: list[str],
    since: str | None,
    client_tracking_id: str | None,
) -> dict[str, Any]:
    """Export views over the store to files (the $viewdefinition-export operation)."""
    return run_export(
        ctx.hub.settings,
        ctx.job_id,
        views,
        output_format,
        patients,
        since,
        client_tracking_id,
        progress=ctx.progress,
    )
