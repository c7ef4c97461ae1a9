"""Data quality: declarative checks compiled to DuckDB SQL, rule sets, scores, stored runs, reports."""

from clinhub.quality.checks import Check, RuleSet, load_ruleset, parse_check, parse_ruleset, ruleset_names
from clinhub.quality.runner import CheckResult, RunResult, Snapshot, failing_rows, run_checks
from clinhub.quality.scores import Scores

__all__ = [
    "Check",
    "CheckResult",
    "RuleSet",
    "RunResult",
    "Scores",
    "Snapshot",
    "failing_rows",
    "load_ruleset",
    "parse_check",
    "parse_ruleset",
    "ruleset_names",
    "run_checks",
]
