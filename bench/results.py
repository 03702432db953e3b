"""What a figure produces: rows of numbers, each with an optional goal, plus raw details."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

TITLES: dict[int, str] = {
    1: "Detach latency under a burst",
    2: "Sweep at scale",
    3: "Failover",
    4: "API writes per recording",
    5: "Memory",
    6: "Resend throughput",
    7: "JibriPool reconcile at scale",
}


@dataclass(frozen=True)
class Goal:
    op: str
    """One of ``<=``, ``>=``, ``==``."""
    target: float

    def met(self, value: float) -> bool:
        if self.op == "<=":
            return value <= self.target
        if self.op == ">=":
            return value >= self.target
        return value == self.target

    def __str__(self) -> str:
        return f"{self.op} {self.target:g}"


@dataclass
class Row:
    metric: str
    value: float | None
    unit: str
    goal: Goal | None = None

    @property
    def passed(self) -> bool | None:
        if self.goal is None:
            return None
        if self.value is None:
            return False
        return self.goal.met(self.value)

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "goal": None if self.goal is None else {"op": self.goal.op, "target": self.goal.target},
            "pass": self.passed,
        }


@dataclass
class FigureResult:
    figure: int
    impl: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": [r.to_json() for r in self.rows],
            "details": self.details,
            "notes": self.notes,
            "error": self.error,
        }

    def row(self, metric: str) -> Row | None:
        return next((r for r in self.rows if r.metric == metric), None)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``p`` % of values <= it."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def finite(value: float) -> float | None:
    """JSON has no NaN or infinity: a value that is not finite becomes None."""
    return value if math.isfinite(value) else None


def rounded(value: float, digits: int = 3) -> float:
    return round(value, digits) if math.isfinite(value) else value
