"""The HTML report of a quality run: one self-contained file (inline CSS and an SVG trend chart)."""

from __future__ import annotations

from html import escape
from typing import Any

from clinhub.quality.checks import DIMENSIONS, KAHN

TOP_FAILING = 10
_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}
h1{margin-bottom:.2rem} .muted{color:#666}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.grade{font-size:3rem;font-weight:700;padding:0 1rem}
.passed{color:#17743a} .failed{color:#b3261e;font-weight:600} .error{color:#8a4b00;font-weight:600}
.not_applicable{color:#777} .cards{display:flex;gap:1rem;align-items:center;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else _e(value)


def trend_svg(points: list[dict], width: int = 640, height: int = 180) -> str:
    """An inline SVG line of the overall score (0-100) over runs, oldest left."""
    values = [p.get("overall") for p in points if p.get("overall") is not None]
    if len(values) < 2:
        return '<p class="muted">The trend appears after two runs.</p>'
    pad = 30
    step = (width - 2 * pad) / (len(values) - 1)

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * v / 100

    path = " ".join(f"{pad + i * step:.1f},{y(v):.1f}" for i, v in enumerate(values))
    dots = "".join(
        f'<circle cx="{pad + i * step:.1f}" cy="{y(v):.1f}" r="3"><title>{v:.2f}</title></circle>'
        for i, v in enumerate(values)
    )
    grid = "".join(
        f'<line x1="{pad}" x2="{width - pad}" y1="{y(g):.1f}" y2="{y(g):.1f}" stroke="#eee"/>'
        f'<text x="2" y="{y(g) + 4:.1f}" font-size="10" fill="#888">{g}</text>'
        for g in (0, 65, 75, 85, 95, 100)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="overall score over runs">{grid}'
        f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{path}"/>{dots}</svg>'
    )


def _sample_table(sample: list[dict]) -> str:
    if not sample:
        return ""
    columns = list(sample[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(row.get(c))}</td>" for c in columns) + "</tr>" for row in sample
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(run: dict, history: list[dict] | None = None) -> str:
    """The report of `run` (RunResult.as_dict() or a stored run) with the trend of `history`."""
    scores = run.get("scores") or {}
    results = run.get("results") or []
    run_id = run.get("run_id") or run.get("id")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>clinhub quality report {_e(run.get('ruleset'))}</title><style>{_CSS}</style></head><body>",
        f"<h1>Data quality: {_e(run.get('ruleset'))}</h1>",
        f"<p class='muted'>run {_e(run_id)} · started {_e(run.get('started_at'))} · "
        f"as of {_e(run.get('as_of'))}</p>",
        "<div class='cards'>",
        f"<div class='grade'>{_e(scores.get('grade') or '–')}</div>",
        f"<div class='card'>overall score<br><b>{_num(scores.get('overall'))}</b></div>",
        f"<div class='card'>checks passed (DQD)<br><b>{_num(scores.get('percent_passed'))}%</b></div>",
    ]
    for category in KAHN:
        value = (scores.get("categories") or {}).get(category)
        parts.append(f"<div class='card'>{_e(category)}<br><b>{_num(value)}%</b></div>")
    parts.append("</div><h2>Dimensions</h2><table><tr><th>dimension</th><th>weight</th><th>score</th></tr>")
    for dimension, weight in DIMENSIONS.items():
        value = (scores.get("dimensions") or {}).get(dimension)
        parts.append(
            f"<tr><td>{_e(dimension)}</td><td class='n'>{weight:.2f}</td>"
            f"<td class='n'>{_num(value)}</td></tr>"
        )
    parts.append("</table><h2>Trend</h2>")
    parts.append(trend_svg(history or []))
    failing = sorted(
        (r for r in results if r["status"] == "failed"),
        key=lambda r: (-_severity_rank(r["severity"]), -r["rows_failed"]),
    )[:TOP_FAILING]
    parts.append("<h2>Top failing checks</h2>")
    if not failing:
        parts.append("<p>No check failed.</p>")
    for r in failing:
        parts.append(
            f"<h3>{_e(r['check_id'])} <span class='muted'>({_e(r['severity'])})</span></h3>"
            f"<p>{_e(r.get('description'))} — {_num(r['rows_failed'])} of {_num(r['rows_checked'])} rows "
            f"({_num(r['percent_failed'])}%, threshold {_num(r['threshold'])}%)</p>"
        )
        parts.append(_sample_table(r.get("sample") or []))
    for category in KAHN:
        mine = [r for r in results if r["category"] == category]
        if not mine:
            continue
        parts.append(
            f"<h2>{_e(category.capitalize())}</h2><table><tr><th>check</th><th>subcategory</th>"
            "<th>dimension</th><th>severity</th><th>status</th><th>failed</th><th>checked</th><th>%</th></tr>"
        )
        for r in mine:
            status = r["status"] if r["status"] != "error" else f"error: {r.get('error')}"
            parts.append(
                f"<tr><td>{_e(r['check_id'])}</td><td>{_e(r['subcategory'])}</td><td>{_e(r['dimension'])}</td>"
                f"<td>{_e(r['severity'])}</td><td class='{_e(r['status'])}'>{_e(status)}</td>"
                f"<td class='n'>{_num(r['rows_failed'])}</td><td class='n'>{_num(r['rows_checked'])}</td>"
                f"<td class='n'>{_num(r['percent_failed'])}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def _severity_rank(severity: str) -> int:
    return {"CRITICAL": 4, "HIGH": 3, "MEDIUM": 2, "LOW": 1}.get(severity, 0)
