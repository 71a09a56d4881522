"""The quality gate that decides whether a model may be deployed: `quality_gate(report, GateConfig(...))`
checks every configured threshold. A value that was not measured fails its check with a message
saying so; it never passes silently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imgclf.evaluate.metrics import EvaluationReport
from imgclf.evaluate.numbers import finite_or_none

Comparison = Literal[">=", "<="]
_NEGATION = {">=": "<", "<=": ">"}


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_accuracy: float = Field(0.9, ge=0, le=1)
    min_macro_f1: float = Field(0.0, ge=0, le=1)
    max_latency_p50_ms: float | None = Field(None, gt=0)  # None: latency is not gated


@dataclass
class GateCheck:
    """One threshold: the measured value (None: not measured, which fails) against what is required."""

    name: str
    value: float | None
    threshold: float
    comparison: Comparison
    passed: bool
    message: str


@dataclass
class GateResult:
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)

    def explain(self) -> str:
        return "; ".join(c.message for c in self.checks)

    @property
    def failed_checks(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


def _message(name: str, value: float | None, comparison: str, threshold: float, passed: bool) -> str:
    if value is None:
        return f"{name} was not measured (required {comparison} {threshold}) [FAIL]"
    op = comparison if passed else _NEGATION[comparison]
    return f"{name} {value:.4f} {op} {threshold} [{'ok' if passed else 'FAIL'}]"


def _check(name: str, value: float | None, comparison: Comparison, threshold: float) -> GateCheck:
    """`value` against `threshold`; a missing or undefined value fails."""
    v = finite_or_none(value)
    passed = v is not None and (v >= threshold if comparison == ">=" else v <= threshold)
    threshold = float(threshold)
    return GateCheck(name, v, threshold, comparison, bool(passed), _message(name, v, comparison, threshold, passed))


def quality_gate(report: EvaluationReport, config: GateConfig, latency: Any = None) -> GateResult:
    """Check each configured threshold. `latency` (a LatencyReport) overrides the report's latency
    fields; a latency threshold with no latency measured fails, saying so."""
    p50 = latency.p50_ms if latency is not None else report.latency_p50_ms
    checks = [
        _check("test_accuracy", report.accuracy, ">=", config.min_accuracy),
        _check("test_macro_f1", report.macro_f1, ">=", config.min_macro_f1),
    ]
    if config.max_latency_p50_ms is not None:
        checks.append(_check("latency_p50_ms", p50, "<=", config.max_latency_p50_ms))
    return GateResult(passed=all(c.passed for c in checks), checks=checks)
