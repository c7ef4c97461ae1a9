"""Benchmark (issue #5): HL7 v2 in clinhub against its PyPI peers.

Part `parse` (--part parse): parsing speed. Data: clinhub.synth.generate(--patients, --seed) writes
hl7/messages.hl7 (segments end with CR, messages with LF); every tool gets the same first --messages
messages (0: all) as text and, for each message, parses it and reads the same ten values:
MSH-9-1, MSH-9-2, MSH-10, PID-3-1, PID-5-1, PID-5-2, PID-7, PID-8, PV1-2 and OBX-5 (first OBX).

- clinhub: `clinhub.hl7.parse(text)` and `msg.get(path)` (lazy: fields are split on first access);
- python-hl7: `hl7.parse(text)` and `msg.extract_field(...)` (its fastest documented accessor);
- hl7apy: `parse_message(text, find_groups=False)` (no group detection, no validation) and attribute
  access (`msg.pid.pid_5.pid_5_1.to_er7()`);
- floor: `str.split` of every segment into fields, no lookups (what any eager parser pays at least).

hl7apy runs in its own venv (created on first run with a pinned version, default in the temp folder)
so its dependencies never touch clinhub's; python-hl7 is a clinhub dev dependency. Each run is a fresh
process; a time is the median of --repeat runs, measured from the first parse to the last value read
(reading the file, interpreter start and imports excluded); a run over 60 s is not repeated. The number
of non-empty values read is compared across tools (WARNING when they differ). Ratio: tool time /
clinhub time (above 1: clinhub is faster). Goal: clinhub at least 10x python-hl7.

Part `mllp` (--part mllp): messages sent over MLLP to `clinhub hl7 listen` in another process, over
1 and 8 connections, in original mode (one message in flight) and with a window; every ACK checked,
then the time until all are stored and mapped (see benchmarks/hl7_mllp.py). Goal: 3,000 durably
stored messages per second on SQLite.

Usage: python benchmarks/hl7_bench.py --part parse [--patients 2000] [--messages 2000] [--repeat 3]
       [--tools clinhub,python-hl7,hl7apy,floor] [--peers-venv DIR] [--data-dir DIR] [--markdown FILE]
       python benchmarks/hl7_bench.py --part mllp --messages 100000 [--postgres URL] [--configs 1x1,8x50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from clinhub.synth import generate

PEERS = {"hl7apy": "1.3.5"}
TOOLS = ["clinhub", "python-hl7", "hl7apy", "floor"]
NO_REPEAT_AFTER = 60.0  # seconds: a slower run is not repeated

# Runs one tool once in a fresh process: argv tool, messages file, message count (0: all).
# Prints {"seconds", "messages", "values"} as its last line; a failure exits non-zero with the reason.
WORKER = r"""
import json, sys, time

tool, path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "rb") as handle:
    texts = [m.rstrip("\r") for m in handle.read().decode("utf-8").split("\n") if m.strip()]
if limit:
    texts = texts[:limit]

# (segment, field, component): component 0 reads the whole field; one list for every tool
WANTED = [("MSH", 9, 1), ("MSH", 9, 2), ("MSH", 10, 0), ("PID", 3, 1), ("PID", 5, 1),
          ("PID", 5, 2), ("PID", 7, 0), ("PID", 8, 0), ("PV1", 2, 0), ("OBX", 5, 0)]

if tool == "clinhub":
    from clinhub.hl7 import parse

    PATHS = [f"{s}-{f}-{c}" if c else f"{s}-{f}" for s, f, c in WANTED]

    def run():
        values = 0
        for text in texts:
            msg = parse(text)
            for path in PATHS:
                if msg.get(path):
                    values += 1
        return values
elif tool == "python-hl7":
    import hl7

    ARGS = [(s, 1, f, 1, c or 1, 1) for s, f, c in WANTED]

    def run():
        values = 0
        for text in texts:
            msg = hl7.parse(text)
            for args in ARGS:
                try:
                    if msg.extract_field(*args):
                        values += 1
                except KeyError:  # the message has no such segment
                    pass
        return values
elif tool == "hl7apy":
    from hl7apy.parser import parse_message

    NAMES = [(s.lower(), f"{s.lower()}_{f}", f"{s.lower()}_{f}_{c}" if c else None) for s, f, c in WANTED]

    def run():
        values = 0
        for text in texts:
            msg = parse_message(text, find_groups=False)
            for segment, field, component in NAMES:
                try:
                    element = getattr(getattr(msg, segment), field)
                    if component:
                        element = getattr(element, component)
                    if element.to_er7():
                        values += 1
                except (IndexError, AttributeError, LookupError):  # no such segment or child
                    pass
        return values
elif tool == "floor":
    def run():
        values = 0
        for text in texts:
            values += len([segment.split("|") for segment in text.split("\r")])
        return values
else:
    sys.exit(f"unknown tool {tool}")

start = time.perf_counter()
values = run()
print(json.dumps({"seconds": time.perf_counter() - start, "messages": len(texts), "values": values}))
"""


@dataclass
class Result:
    tool: str
    seconds: float | None = None
    times: list[float] = field(default_factory=list)
    messages: int = 0
    values: int | None = None
    error: str | None = None

    @property
    def per_second(self) -> float | None:
        return self.messages / self.seconds if self.seconds else None


def peers_venv(folder: Path) -> tuple[Path, dict[str, str]]:
    """The peers' venv (created and filled on first use) and, per peer that failed to install, why."""
    python = folder / "bin" / "python"
    marker = folder / "installed.json"
    if marker.exists() and python.exists():
        return python, json.loads(marker.read_text())
    print(f"creating the peers' venv in {folder} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    failed: dict[str, str] = {}
    for name, pinned in PEERS.items():
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"{name}=={pinned}"], capture_output=True, text=True
        )
        if done.returncode:
            lines = [line for line in done.stderr.splitlines() if "ERROR" in line] or done.stderr.splitlines()
            failed[name] = f"pip install failed: {(lines or ['?'])[-1].strip()}"
    marker.write_text(json.dumps(failed))
    return python, failed


def run_tool(python: Path, worker: Path, tool: str, source: Path, limit: int, args, result: Result) -> None:
    for _ in range(args.repeat):
        try:
            done = subprocess.run(
                [str(python), str(worker), tool, str(source), str(limit)],
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
        except subprocess.TimeoutExpired:
            result.error = f"timed out after {args.timeout:.0f} s"
            break
        if done.returncode:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            result.error = (lines or [f"exit {done.returncode}"])[-1].strip()[:160]
            break
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        result.times.append(figures["seconds"])
        result.messages, result.values = figures["messages"], figures["values"]
        if figures["seconds"] > NO_REPEAT_AFTER:
            break
    if result.times and result.error is None:
        result.seconds = statistics.median(result.times)


def part_parse(args) -> str:
    """Run the parsing benchmark and return its markdown section."""
    tools = [tool for tool in args.tools.split(",") if tool]
    python_peers, install_failures = (None, {})
    if any(tool in PEERS for tool in tools):
        python_peers, install_failures = peers_venv(args.peers_venv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="hl7-bench-") as tmp:
        work = Path(tmp)
        data = (args.data_dir or work) / f"synth-{args.patients}-{args.seed}"
        source = data / "hl7" / "messages.hl7"
        if not source.exists():
            print(f"generating {args.patients:,} patients ...", flush=True)
            generate(data, patients=args.patients, seed=args.seed)
        worker = work / "worker.py"
        worker.write_text(WORKER)
        for tool in tools:
            result = Result(tool)
            results.append(result)
            if tool in install_failures:
                result.error = install_failures[tool]
            else:
                python = python_peers if tool in PEERS else Path(sys.executable)
                run_tool(python, worker, tool, source, args.messages, args, result)
            shown = f"{result.per_second:,.0f} msg/s" if result.seconds else f"n/a: {result.error}"
            print(f"  {tool:<12} {shown}", flush=True)
    return report(results, args)


def report(results: list[Result], args) -> str:
    by_tool = {r.tool: r for r in results}
    clinhub = by_tool.get("clinhub")
    command = (
        f"python benchmarks/hl7_bench.py --part parse --patients {args.patients} "
        f"--messages {args.messages} --repeat {args.repeat}"
    )
    peers = f"python-hl7 {version('hl7')}, hl7apy {PEERS['hl7apy']}"
    measured = next((r.messages for r in results if r.messages), 0)
    lines = [
        "## HL7 v2 parsing: clinhub vs python-hl7, hl7apy (issue #5)",
        "",
        f"`{command}`",
        f"({time.strftime('%Y-%m-%d')}; {os.cpu_count()} cores; peers {peers}; {measured:,} synthetic"
        " messages (ADT, ORU, RDE) from `clinhub.synth`, the same text for every tool; parse each and read"
        f" the same 10 values; median of up to {args.repeat} runs, each in a fresh process; a run over"
        f" {NO_REPEAT_AFTER:.0f} s is not repeated)",
        "",
        "| tool | msg/s | µs/message | time / clinhub time | runs | non-empty values read |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    notes, counts = [], {}
    for r in results:
        if not r.seconds:
            lines.append(f"| {r.tool} | n/a | - | - | - | - |")
            notes.append(f"- {r.tool}: {r.error}")
            continue
        ratio = f"{r.seconds / clinhub.seconds:.1f}" if clinhub and clinhub.seconds else "-"
        values = f"{r.values:,}" if r.tool != "floor" else "(segments split)"
        lines.append(
            f"| {r.tool} | {r.per_second:,.0f} | {1e6 / r.per_second:,.1f} | {ratio} | {len(r.times)}"
            f" | {values} |"
        )
        if r.tool != "floor":
            counts[r.tool] = r.values
    lines += ["", "Seconds (median): " + "; ".join(f"{r.tool} {r.seconds:.3f}" for r in results if r.seconds)]
    if notes:
        lines += ["", "Not measured:", *notes]
    if len(set(counts.values())) > 1:
        warning = "WARNING: the tools read different numbers of non-empty values: " + ", ".join(
            f"{tool} {count:,}" for tool, count in counts.items()
        )
        print(warning, file=sys.stderr)
        lines += ["", warning]
    elif counts:
        lines += ["", "Every tool read the same number of non-empty values."]
    return "\n".join(lines) + "\n"


def part_mllp(args) -> str:
    """(b) MLLP end to end: benchmarks/hl7_mllp.py, with this script's --messages and --postgres."""
    sys.path.insert(0, str(Path(__file__).parent))
    import hl7_mllp

    argv = ["--messages", str(args.messages or 100_000)]
    if args.postgres:
        argv += ["--postgres", args.postgres]
    if args.configs:
        argv += ["--configs", args.configs]
    return hl7_mllp.main(argv)


PARTS = {"parse": part_parse, "mllp": part_mllp}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=sorted(PARTS), default="parse", help="which benchmark to run")
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--messages", type=int, default=2000, help="first N messages of the file (0: all)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool (median)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a run is stopped")
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "clinhub-hl7-bench-peers-venv",
        help="venv for the peers (created on first run)",
    )
    parser.add_argument("--data-dir", type=Path, help="keep generated data here across runs (default: temp)")
    parser.add_argument("--markdown", type=Path, help="also write the markdown section to this file")
    parser.add_argument("--postgres", help="mllp: also run on a scratch database of this PostgreSQL server")
    parser.add_argument("--configs", help="mllp: connections x window, e.g. 1x1,8x50")
    args = parser.parse_args()
    section = PARTS[args.part](args)
    print()
    print(section)
    if args.markdown:
        args.markdown.write_text(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
