"""The CI regression gate: budgets parsed into objects, and ``check()`` returning violations (no exit codes)."""

from copyhunt.gate.budget import Allow, Budget, Limit, Rule, load_budget, parse_budget
from copyhunt.gate.check import GateResult, Violation, check, check_increase, evaluate, find_budget, merge

__all__ = [
    "Allow",
    "Budget",
    "Limit",
    "Rule",
    "load_budget",
    "parse_budget",
    "GateResult",
    "Violation",
    "check",
    "check_increase",
    "evaluate",
    "find_budget",
    "merge",
]
