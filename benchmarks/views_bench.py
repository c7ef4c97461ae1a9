"""Benchmark (issue #4): SQL on FHIR v2 views, clinhub against its PyPI peers on the same NDJSON.

Data: clinhub.synth.generate at each --patients size (cached in a temporary directory for the run, or
in --data-dir across runs). Three views: patient demographics (forEach over the official name and over
address), observations flattened (`where` status = 'final', getReferenceKey(Patient), ofType(Quantity))
and patient identifiers (forEach over identifier). Every tool reads the same file (fhir/Patient.ndjson
or fhir/Observation.ndjson) and writes the view's rows to a CSV file, each in a fresh process:

- clinhub: `write_view(AnalyticEngine(), view, ndjson, out, "csv")` (one DuckDB query, COPY to CSV);
- pysof (Rust): `process_ndjson_to_file(view, ndjson, out, "csv_with_header")`;
- fhir4ds (DuckDB): its loaders cannot read NDJSON, so its own connection loads the file into its
  `fhir_resources` table with read_json_objects; its SQL (`execute_view_definition(view).sql`) is then
  COPYed to CSV by that connection (no rows through Python, as for clinhub);
- sqlonfhir (pure Python, fhirpathpy): json.loads every line, `evaluate(resources, view)`, csv writer;
- floor: the issue's "DuckDB plain `read_json` count": `count(*)` over `read_json` of the same file;
  also shown, a stricter line-splitting floor, `count(*)` over `read_json_objects` (no parsing).

Peers run in their own venv (created on first run with pinned versions, default in the temp folder) so
their dependencies never touch clinhub's. A time is the median of --repeat runs, measured inside the
process from just before reading the NDJSON to the closed output file (interpreter start and imports
excluded); a run over --timeout seconds is stopped and reported as timed out, and a run over 60 s is not
repeated. Row counts and the non-empty count of every column are compared across tools (WARNING when
they differ). Ratios: peer time / clinhub time (above 1: clinhub is faster) and clinhub time / floor.
Goal: clinhub at least 2x the fastest peer and within 3x of the floor.

Usage: python benchmarks/views_bench.py [--patients 10000,100000] [--repeat 3] [--timeout 300]
       [--tools clinhub,pysof,fhir4ds,sqlonfhir] [--peers-venv DIR] [--data-dir DIR] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from clinhub.synth import generate

PEERS = {"pysof": "0.2.6", "fhir4ds": "0.5.1", "sqlonfhir": "0.0.2"}
IMPORTS = {"pysof": "import pysof._pysof", "fhir4ds": "import fhir4ds", "sqlonfhir": "import sqlonfhir"}
TOOLS = ["clinhub", *PEERS]
FLOORS = ["read_json_objects", "read_json"]
NO_REPEAT_AFTER = 60.0  # seconds: a slower run is not repeated

VIEWS: dict[str, dict] = {
    "patient_demographics": {
        "resourceType": "ViewDefinition",
        "status": "active",
        "resource": "Patient",
        "select": [
            {
                "column": [
                    {"name": "id", "path": "getResourceKey()", "type": "string"},
                    {"name": "gender", "path": "gender", "type": "code"},
                    {"name": "birth_date", "path": "birthDate", "type": "date"},
                ]
            },
            {
                "forEach": "name.where(use = 'official').first()",
                "column": [
                    {"name": "family", "path": "family", "type": "string"},
                    {"name": "given", "path": "given.first()", "type": "string"},
                ],
            },
            {
                "forEach": "address",
                "column": [
                    {"name": "city", "path": "city", "type": "string"},
                    {"name": "state", "path": "state", "type": "string"},
                    {"name": "postal_code", "path": "postalCode", "type": "string"},
                ],
            },
        ],
    },
    "observations_flat": {
        "resourceType": "ViewDefinition",
        "status": "active",
        "resource": "Observation",
        "where": [{"path": "status = 'final'"}],
        "select": [
            {
                "column": [
                    {"name": "id", "path": "id", "type": "id"},
                    {"name": "patient", "path": "subject.getReferenceKey(Patient)", "type": "string"},
                    {"name": "code", "path": "code.coding.first().code", "type": "code"},
                    {"name": "code_system", "path": "code.coding.first().system", "type": "uri"},
                    {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
                    {"name": "unit", "path": "value.ofType(Quantity).unit", "type": "string"},
                    {"name": "effective", "path": "effective.ofType(dateTime)", "type": "dateTime"},
                ]
            }
        ],
    },
    "patient_identifiers": {
        "resourceType": "ViewDefinition",
        "status": "active",
        "resource": "Patient",
        "select": [
            {"column": [{"name": "id", "path": "id", "type": "id"}]},
            {
                "forEach": "identifier",
                "column": [
                    {"name": "system", "path": "system", "type": "uri"},
                    {"name": "value", "path": "value", "type": "string"},
                ],
            },
        ],
    },
}

# Runs one tool once in a fresh process: argv tool, view.json, input.ndjson, output.csv.
# Prints {"seconds": ...} as its last line; any failure exits non-zero with the reason on stderr.
WORKER = r'''
import csv, json, sys, time

tool, view_path, source, out = sys.argv[1:5]
with open(view_path) as handle:
    view = json.load(handle)


def columns(selects):
    names = []
    for select in selects:
        names += [column["name"] for column in select.get("column", [])]
        names += columns(select.get("select", []))
        if select.get("unionAll"):
            names += columns(select["unionAll"][:1])
    return names


def quoted(text):
    return "'" + text.replace("'", "''") + "'"


if tool == "clinhub":
    from pathlib import Path
    from clinhub.engine import AnalyticEngine
    from clinhub.views import write_view

    def run():
        with AnalyticEngine() as engine:
            write_view(engine, view, source, Path(out), "csv")
elif tool == "pysof":
    import pysof

    def run():
        pysof.process_ndjson_to_file(view, source, out, "csv_with_header", fhir_version="R4")
elif tool == "fhir4ds":
    import duckdb
    from fhir4ds import DuckDBDialect, FHIRDataStore

    class Offline:
        """fhir4ds runs `INSTALL json` (a download); json is built into DuckDB, so skip only that."""

        def __init__(self, con):
            self._con = con

        def __getattr__(self, name):
            return getattr(self._con, name)

        def execute(self, sql, *args):
            if sql.strip() == "INSTALL json; LOAD json;":
                return self._con
            return self._con.execute(sql, *args)

    def run():
        store = FHIRDataStore(dialect=DuckDBDialect(connection=Offline(duckdb.connect())))
        con = store.dialect.connection
        con.execute(
            f"INSERT INTO {store.table_name} ({store.json_col}) "
            "SELECT json FROM read_json_objects(?, format = 'newline_delimited')",
            [source],
        )
        sql = store.view_runner().execute_view_definition(view).sql
        con.execute(f"COPY ({sql}) TO {quoted(out)} (FORMAT csv, HEADER true)")
        con.close()
elif tool == "sqlonfhir":
    from sqlonfhir import evaluate

    def run():
        with open(source, encoding="utf-8") as handle:
            resources = [json.loads(line) for line in handle if line.strip()]
        rows = evaluate(resources, view)
        with open(out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns(view["select"]), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
elif tool.startswith("floor:"):
    import duckdb

    reader = tool.split(":", 1)[1]

    def run():
        con = duckdb.connect()
        (count,) = con.execute(
            f"SELECT count(*) FROM {reader}(?, format = 'newline_delimited')", [source]
        ).fetchone()
        con.close()
        with open(out, "w") as handle:
            handle.write(f"count\n{count}\n")
else:
    sys.exit(f"unknown tool {tool}")

start = time.perf_counter()
run()
print(json.dumps({"seconds": time.perf_counter() - start}))
'''


@dataclass
class Result:
    tool: str
    view: str
    patients: int
    resources: int
    seconds: float | None = None
    times: list[float] = field(default_factory=list)
    rows: int | None = None
    filled: list[int] | None = None  # non-empty values per column
    error: str | None = None

    @property
    def per_second(self) -> float | None:
        return self.resources / self.seconds if self.seconds else None


def peers_venv(folder: Path) -> tuple[Path, dict[str, str]]:
    """The peers' venv (created and filled on first use) and, per peer that failed to install, why."""
    python = folder / "bin" / "python"
    failed: dict[str, str] = {}
    marker = folder / "installed.json"
    if marker.exists() and python.exists():
        return python, json.loads(marker.read_text())
    print(f"creating the peers' venv in {folder} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    for name, version in PEERS.items():
        # fhir4ds takes DuckDB from the venv: pin clinhub's version so both run the same engine
        extra = [f"duckdb=={duckdb.__version__}"] if name == "fhir4ds" else []
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"{name}=={version}", *extra],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            lines = [line for line in done.stderr.splitlines() if "ERROR" in line] or done.stderr.splitlines()
            failed[name] = f"pip install failed: {(lines or ['?'])[-1].strip()}"
            continue
        done = subprocess.run([str(python), "-c", IMPORTS[name]], capture_output=True, text=True)
        if done.returncode:  # e.g. pysof's wheel needs a newer glibc than the machine's
            failed[name] = f"installed but cannot import: {done.stderr.strip().splitlines()[-1][:200]}"
    marker.write_text(json.dumps(failed))
    return python, failed


def scan_csv(path: Path) -> tuple[int, list[int]]:
    """Data rows of a CSV with a header, and how many non-empty values each column has."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        filled = [0] * len(header)
        rows = 0
        for row in reader:
            rows += 1
            for i, value in enumerate(row[: len(filled)]):
                if value != "":
                    filled[i] += 1
    return rows, filled


def run_tool(
    python: Path,
    worker: Path,
    tool: str,
    view_file: Path,
    source: Path,
    out: Path,
    repeat: int,
    timeout: float,
    result: Result,
) -> None:
    for _ in range(repeat):
        out.unlink(missing_ok=True)
        try:
            done = subprocess.run(
                [str(python), str(worker), tool, str(view_file), str(source), str(out)],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            result.error = f"timed out after {timeout:.0f} s"
            break
        if done.returncode:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            # the exception line (a DuckDB error is followed by the SQL and a ^ pointer)
            errors = [line for line in lines if "Error" in line or "Exception" in line] or lines
            result.error = (errors or [f"exit {done.returncode}"])[-1].strip()[:160]
            break
        result.times.append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
        if result.times[-1] > NO_REPEAT_AFTER:
            break
    if result.times and result.error is None:
        result.seconds = statistics.median(result.times)
        if not tool.startswith("floor:"):
            result.rows, result.filled = scan_csv(out)
    out.unlink(missing_ok=True)


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value else "-"


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}" if value else "-"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", default="10000,100000", help="comma-separated sizes")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool, view and size (median)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a run is stopped")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--views", default=",".join(VIEWS))
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "clinhub-views-bench-peers-venv",
        help="venv for the peers (created on first run)",
    )
    parser.add_argument("--data-dir", type=Path, help="keep generated data here across runs (default: temp)")
    parser.add_argument("--markdown", type=Path, help="also write the markdown section to this file")
    args = parser.parse_args()
    sizes = [int(text.replace("_", "")) for text in args.patients.split(",")]
    tools = [tool for tool in args.tools.split(",") if tool]
    views = [name for name in args.views.split(",") if name]

    python_peers, install_failures = (None, {})
    if any(tool in PEERS for tool in tools):
        python_peers, install_failures = peers_venv(args.peers_venv)
    with tempfile.TemporaryDirectory(prefix="views-bench-") as tmp:
        work = Path(tmp)
        data_root = args.data_dir or work
        worker = work / "worker.py"
        worker.write_text(WORKER)
        results: list[Result] = []
        for patients in sizes:
            data = data_root / f"synth-{patients}-{args.seed}"
            if not (data / "fhir" / "Observation.ndjson").exists():
                print(f"generating {patients:,} patients ...", flush=True)
                generate(data, patients=patients, seed=args.seed)
            for name in views:
                view = VIEWS[name]
                source = data / "fhir" / f"{view['resource']}.ndjson"
                resources = count_lines(source)
                view_file = work / f"{name}.json"
                view_file.write_text(json.dumps(view))
                for tool in [*tools, *(f"floor:{reader}" for reader in FLOORS)]:
                    result = Result(tool, name, patients, resources)
                    results.append(result)
                    if tool in install_failures:
                        result.error = install_failures[tool]
                    else:
                        python = (
                            Path(sys.executable)
                            if tool == "clinhub" or tool.startswith("floor:")
                            else python_peers
                        )
                        out = work / f"out-{tool.replace(':', '-')}.csv"
                        run_tool(
                            python, worker, tool, view_file, source, out, args.repeat, args.timeout, result
                        )
                    shown = f"{result.seconds:.2f} s" if result.seconds else f"n/a: {result.error}"
                    print(f"  {patients:>7,} {name:<22} {tool:<26} {shown}  rows {result.rows}", flush=True)
        section = report(results, sizes, views, tools, args)
    print()
    print(section)
    if args.markdown:
        args.markdown.write_text(section)
    return 0


def report(results: list[Result], sizes: list[int], views: list[str], tools: list[str], args) -> str:
    """Warnings for mismatched rows, then the markdown section (printed and optionally written)."""
    by_key = {(r.patients, r.view, r.tool): r for r in results}
    sized = ",".join(str(s) for s in sizes)
    command = f"python benchmarks/views_bench.py --patients {sized} --repeat {args.repeat}"
    peers = ", ".join(f"{k} {v}" for k, v in PEERS.items())
    lines = [
        "## Views: SQL on FHIR v2, clinhub vs pysof, fhir4ds, sqlonfhir (issue #4)",
        "",
        f"`{command}`",
        f"({time.strftime('%Y-%m-%d')}; {os.cpu_count()} cores; peers {peers};"
        " every tool reads the same NDJSON file and writes the view's rows to CSV; median of"
        f" {args.repeat} runs in a fresh process;"
        " resources/s = input resources of the view's type per second)",
        "",
        "| patients | view | resources | rows | "
        + " | ".join(f"{t} res/s" for t in tools)
        + " | floor res/s (read_json) | peer/clinhub (fastest peer) | clinhub/floor"
        " | clinhub/read_json_objects |",
        "|" + "---|" * 2 + "---:|" * (2 + len(tools) + 4),
    ]
    warnings: list[str] = []
    notes: list[str] = []
    for patients in sizes:
        for name in views:
            row = [by_key[(patients, name, tool)] for tool in tools]
            floor = by_key[(patients, name, "floor:read_json")]
            lines_only = by_key[(patients, name, "floor:read_json_objects")]
            done = [r for r in row if r.seconds]
            counts = {r.tool: (r.rows, r.filled) for r in done}
            if len({c for c, _ in counts.values()}) > 1:
                warnings.append(
                    f"WARNING {patients:,} {name}: row counts differ: "
                    + ", ".join(f"{t} {c:,}" for t, (c, _) in counts.items())
                )
            elif len({tuple(f or []) for _, f in counts.values()}) > 1:
                warnings.append(
                    f"WARNING {patients:,} {name}: non-empty values per column differ: "
                    + ", ".join(f"{t} {f}" for t, (_, f) in counts.items())
                )
            for r in row:
                if r.error:
                    notes.append(f"{patients:,} {name} {r.tool}: n/a: {r.error}")
            clinhub = by_key.get((patients, name, "clinhub"))
            peers = [r for r in done if r.tool != "clinhub"]
            fastest = min(peers, key=lambda r: r.seconds) if peers else None
            vs_peer = (
                f"{fastest.seconds / clinhub.seconds:.2f} ({fastest.tool})"
                if fastest and clinhub and clinhub.seconds
                else "-"
            )

            def vs(base: Result, clinhub: Result | None = clinhub) -> float | None:
                if clinhub and clinhub.seconds and base.seconds:
                    return clinhub.seconds / base.seconds
                return None

            rows = next((r.rows for r in row if r.rows is not None), None)
            cells = [
                f"{r.per_second:,.0f}"
                if r.seconds
                else ("timeout" if "timed out" in (r.error or "") else "n/a")
                for r in row
            ]
            lines.append(
                f"| {patients:,} | {name} | {row[0].resources:,} | {rows:,} | "
                if rows is not None
                else f"| {patients:,} | {name} | {row[0].resources:,} | - | "
            )
            lines[-1] += " | ".join(cells) + (
                f" | {fmt_rate(floor.per_second)} | {vs_peer} | {fmt_ratio(vs(floor))}"
                f" | {fmt_ratio(vs(lines_only))} |"
            )
    lines.append("")
    lines.append(
        "Seconds (median), per tool: "
        + "; ".join(f"{r.patients:,} {r.view} {r.tool} {r.seconds:.2f}" for r in results if r.seconds)
    )
    if notes:
        lines += ["", "Not measured:", *(f"- {n}" for n in notes)]
    lines += [
        "",
        *(warnings or ["Row counts and non-empty values per column agree across the tools that ran."]),
    ]
    for warning in warnings:
        print(warning, file=sys.stderr)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
