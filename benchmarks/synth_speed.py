"""Benchmark: how fast clinhub.synth writes a synthetic hospital, and whether its memory stays flat.

Runs generate() for N patients into a temporary directory and prints patients/s, FHIR resources/s,
HL7 messages/s, the elapsed time, the size of every file, and the peak resident memory of this process
and of its worker processes (resource.getrusage). Exits 1 when the run takes longer than the target.
Usage: python benchmarks/synth_speed.py [N=100000] [--seed 42] [--workers W] [--target 120]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

from clinhub.synth import generate


def _megabytes(kilobytes: int) -> str:
    return f"{kilobytes / 1024:,.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("patients", nargs="?", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")
    parser.add_argument("--target", type=float, default=120.0, help="seconds allowed (default 120)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synth-speed-") as tmp:
        out = Path(tmp) / "hospital"
        result = generate(out, patients=args.patients, seed=args.seed, workers=args.workers)
        sizes = {name: (out / name).stat().st_size for name in result.counts}
    elapsed = result.elapsed_seconds
    resources = sum(n for name, n in result.counts.items() if name.startswith("fhir/"))
    messages = result.counts["hl7/messages.hl7"]
    print(f"clinhub.synth: {args.patients:,} patients, seed {args.seed}, defect rate {result.defect_rate}")
    print(f"{'file':<34}{'records':>12}{'MB':>10}")
    for name, count in result.counts.items():
        print(f"{name:<34}{count:>12,}{sizes[name] / 1e6:>10,.1f}")
    print(f"{'total':<34}{'':>12}{sum(sizes.values()) / 1e6:>10,.1f}")
    print(f"elapsed            {elapsed:.1f} s (target {args.target:.0f} s)")
    print(f"patients/s         {args.patients / elapsed:,.0f}")
    print(f"FHIR resources/s   {resources / elapsed:,.0f}  ({resources:,} resources)")
    print(f"HL7 messages/s     {messages / elapsed:,.0f}  ({messages:,} messages)")
    print(f"peak RSS, this process       {_megabytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}")
    print(
        f"peak RSS, largest worker     {_megabytes(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)}"
    )
    if elapsed > args.target:
        print(f"FAIL: {elapsed:.1f} s is over the {args.target:.0f} s target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
