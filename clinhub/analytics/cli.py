"""`clinhub analytics`: the hub's figures in the terminal (Rich tables) or as JSON."""

from __future__ import annotations

import json
from datetime import date, datetime

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clinhub.analytics.anomalies import METRICS
from clinhub.analytics.service import AnalyticsService
from clinhub.errors import InvalidInput
from clinhub.hub import Hub

app = typer.Typer(
    help="Analytics: patient and message statistics, clinical insights, risk, forecasts, anomalies.",
    no_args_is_help=True,
)
console = Console()
JSON = typer.Option(False, "--json", help="Print the result as JSON.")


def _service(hub: Hub) -> AnalyticsService:
    return AnalyticsService(hub.engine)  # the terminal computes afresh: no cache between runs


def _day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"not a date (YYYY-MM-DD): {text!r}") from None


def _json(value: object) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(escape("" if v is None else str(v)) for v in row))
    console.print(table)


@app.command("patients")
def patients_command(
    as_of: str = typer.Option(None, "--as-of", help="Ages and new patients as of this date."),
    as_json: bool = JSON,
) -> None:
    """Patients: totals, sex, age bands, top states, new patients and growth."""
    with Hub() as hub:
        stats = _service(hub).patient_statistics(_day(as_of))
    if as_json:
        return _json(stats)
    new = stats["new_patients"]
    _table(
        f"Patients as of {stats['as_of']}",
        ["figure", "value"],
        [
            ["total", stats["total"]],
            ["living", stats["living"]],
            ["deceased", stats["deceased"]],
            ["new, last 30 days", new["last_30_days"]],
            ["new, 30 days before", new["previous_30_days"]],
            ["growth %", new["growth_rate_percent"]],
        ],
    )
    _table("Sex", ["gender", "patients"], [[g, n] for g, n in stats["by_gender"].items()])
    _table("Age bands", ["band", "patients"], [[b["band"], b["count"]] for b in stats["age_bands"]])


@app.command("messages")
def messages_command(
    since: str = typer.Option(None, "--since", help="Only messages received since (ISO date-time)."),
    as_json: bool = JSON,
) -> None:
    """HL7 messages: volumes by type, error rates, ACK codes, processing latency."""
    moment = None
    if since:
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            raise InvalidInput(f"not a date-time: {since!r}") from None
    with Hub() as hub:
        stats = _service(hub).message_analytics(moment)
    if as_json:
        return _json(stats)
    latency = stats["latency_ms"]
    _table(
        "HL7 messages",
        ["total", "processed", "errors", "pending", "error rate", "p50 ms", "p95 ms", "p99 ms"],
        [
            [
                stats["total"],
                stats["processed"],
                stats["errors"],
                stats["pending"],
                stats["error_rate"],
                latency["p50"],
                latency["p95"],
                latency["p99"],
            ]
        ],
    )
    _table(
        "By type",
        ["type", "messages", "errors", "error rate"],
        [[t["type"], t["count"], t["errors"], t["error_rate"]] for t in stats["by_type"]],
    )


@app.command("clinical")
def clinical_command(top: int = typer.Option(10, "--top"), as_json: bool = JSON) -> None:
    """Top diagnoses and medications, co-occurrences with lift, abnormal lab rates."""
    with Hub() as hub:
        insights = _service(hub).clinical_insights(top)
    if as_json:
        return _json(insights)
    for name in ("diagnoses", "medications"):
        _table(
            f"Top {name}",
            ["system", "code", "display", "patients"],
            [[i["system"], i["code"], i["display"], i["patients"]] for i in insights[name]],
        )
    for kind, rows in insights["co_occurrences"].items():
        _table(
            f"Co-occurring ({kind})",
            ["a", "b", "patients", "support", "lift"],
            [[r["a_display"], r["b_display"], r["both_patients"], r["support"], r["lift"]] for r in rows],
        )


@app.command("risk")
def risk_command(
    patient: str = typer.Argument(None, help="A patient id: explain that patient's score."),
    as_json: bool = JSON,
) -> None:
    """The risk distribution, or one patient's score and its parts."""
    with Hub() as hub:
        service = _service(hub)
        result = service.patient_risk(patient) if patient else service.risk_distribution()
    if as_json:
        return _json(result)
    if patient:
        parts = result["parts"]
        _table(
            f"{result['patient_id']}: {result['score']} ({result['level']})",
            ["part", "value", "weight", "points"],
            [[name, p["value"], p["weight"], p["points"]] for name, p in parts.items()],
        )
        return
    _table("Risk levels", ["level", "patients"], [[k, v] for k, v in result["levels"].items()])


@app.command("forecast")
def forecast_command(horizon: int = typer.Option(30, "--horizon"), as_json: bool = JSON) -> None:
    """New patients per day, `horizon` days ahead: Holt-Winters against the naive trend, with back-test."""
    with Hub() as hub:
        result = _service(hub).patient_volume_forecast(horizon)
    if as_json:
        return _json(result)
    backtest = result["backtest"] or {}
    _table(
        f"Patient volume forecast, {horizon} days",
        ["model", "first day", "last day", "back-test MAPE %"],
        [
            [
                name,
                (result[name][0]["forecast"] if result[name] else None),
                (result[name][-1]["forecast"] if result[name] else None),
                (backtest.get(name) or {}).get("mape"),
            ]
            for name in ("holt_winters", "naive")
        ],
    )


@app.command("anomalies")
def anomalies_command(
    metric: str = typer.Option("message_count", "--metric", help=f"One of {', '.join(METRICS)}."),
    as_json: bool = JSON,
) -> None:
    """Anomalies in an hourly HL7 metric: plain z-score and seasonal (STL) findings."""
    with Hub() as hub:
        result = _service(hub).anomalies(metric)
    if as_json:
        return _json(result)
    for detector in ("zscore", "seasonal"):
        findings = result.get(detector) or []
        _table(
            f"{detector}: {len(findings)} findings over {result['hours']} hours",
            ["time", "value", "expected", "z", "severity"],
            [[f["time"], f["value"], f.get("expected"), f["z"], f["severity"]] for f in findings[:20]],
        )
    if result.get("seasonal_skipped"):
        console.print(f"[yellow]seasonal: {escape(result['seasonal_skipped'])}[/]")


@app.command("dashboard")
def dashboard_command(as_json: bool = JSON) -> None:
    """The KPIs."""
    with Hub() as hub:
        kpis = _service(hub).kpis()
    if as_json:
        return _json(kpis)
    _table("KPIs", ["figure", "value"], [[k, v] for k, v in kpis.items()])
