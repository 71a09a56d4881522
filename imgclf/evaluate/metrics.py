"""Test-split metrics and the quality gate that decides whether a model may be deployed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


@dataclass
class EvaluationReport:
    class_names: list[str]
    n_images: int
    accuracy: float
    macro_f1: float
    confusion: list[list[int]]  # rows = true class, columns = predicted
    per_class_accuracy: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """The scalar metrics, under the names used for MLflow metrics and ZenML metadata."""
        return {"test_accuracy": self.accuracy, "test_macro_f1": self.macro_f1}


def evaluate_predictions(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> EvaluationReport:
    labels = list(range(len(class_names)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    per_class = {name: float(cm[i, i] / support[i]) if support[i] else float("nan") for i, name in enumerate(class_names)}
    return EvaluationReport(
        class_names=list(class_names),
        n_images=int(len(y_true)),
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        confusion=cm.astype(int).tolist(),
        per_class_accuracy=per_class,
    )


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_accuracy: float = Field(0.9, ge=0, le=1)


@dataclass
class GateResult:
    passed: bool
    checks: list[dict] = field(default_factory=list)  # {name, value, threshold, passed}

    def explain(self) -> str:
        return "; ".join(
            f"{c['name']} {c['value']:.4f} {'>=' if c['passed'] else '<'} {c['threshold']}" for c in self.checks
        )


def quality_gate(report: EvaluationReport, config: GateConfig) -> GateResult:
    checks = [{"name": "test_accuracy", "value": report.accuracy, "threshold": config.min_accuracy, "passed": report.accuracy >= config.min_accuracy}]
    return GateResult(passed=all(c["passed"] for c in checks), checks=checks)
