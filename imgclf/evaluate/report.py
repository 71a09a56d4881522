"""The evaluation as one self-contained HTML page (template `report.html.j2`): every figure is embedded
as a data URI, so the file can be opened from the ZenML dashboard, an MLflow run or an e-mail without
anything beside it. This module only shapes the numbers into tables; the page is the template's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from imgclf.evaluate.comparison import ModelComparison
from imgclf.evaluate.gate import GateResult
from imgclf.evaluate.metrics import EvaluationReport
from imgclf.evaluate.plots import png_data_uri
from imgclf.evaluate.summary import (
    SUBGROUP_HEADER,
    failure_lines,
    fmt,
    headline_rows,
    subgroup_rows,
    worst_subgroup_lines,
)
from imgclf.render import render

MAX_CONFUSION_CLASSES = 60  # a larger matrix is unreadable in a page; it stays in confusion_matrix.json


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    left: int = 1  # how many leading columns are left-aligned labels


@dataclass
class ConfusionCell:
    count: int
    style: str  # background shaded by the row-normalised share
    title: str


@dataclass
class Figure:
    name: str
    uri: str


def _gate_table(gate: GateResult) -> Table:
    rows = [
        [c.name, fmt(c.value), f"{c.comparison} {c.threshold}", "pass" if c.passed else "FAIL"] for c in gate.checks
    ]
    return Table(["check", "value", "required", "result"], rows)


def _delta(c: ModelComparison, metric: str) -> str:
    delta, low, high = (getattr(c, f"{metric}_{part}") for part in ("delta", "ci_low", "ci_high"))
    return f"{delta:+.4f} [{low:+.4f}, {high:+.4f}]"


def _comparison_table(c: ModelComparison) -> Table:
    rows = [
        [
            label,
            fmt(getattr(c, f"champion_{m}")),
            fmt(getattr(c, f"challenger_{m}")),
            _delta(c, m),
            f"{getattr(c, f'{m}_p_value'):.3g}",
        ]
        for label, m in (("accuracy", "accuracy"), ("macro F1", "macro_f1"))
    ]
    return Table(["metric", "champion", "this model", "delta [95% CI]", "paired bootstrap p"], rows)


def _per_class_table(report: EvaluationReport) -> Table:
    ml = report.multi_label
    if ml is not None:
        header = ["label", "average precision", "threshold (tuned on val)", "precision", "recall", "F1", "positives"]
        rows = [
            [
                n,
                fmt(ml.average_precision.get(n)),
                fmt(ml.thresholds.get(n)),
                fmt(v["precision"]),
                fmt(v["recall"]),
                fmt(v["f1"]),
                v["support"],
            ]
            for n, v in ml.per_label.items()
        ]
        return Table(header, rows)
    rows = [
        [
            n,
            fmt(v.get("accuracy")),
            fmt(v["precision"]),
            fmt(v["recall"]),
            fmt(v["f1"]),
            fmt(v.get("roc_auc")),
            v["support"],
        ]
        for n, v in report.per_class.items()
    ]
    return Table(["class", "accuracy", "precision", "recall", "F1", "ROC-AUC", "test images"], rows)


def _confusion_rows(report: EvaluationReport) -> list[list[ConfusionCell]]:
    """Counts, shaded by the row-normalised share (so a small class's errors still stand out)."""
    names, rows = report.class_names, []
    for i, row in enumerate(report.confusion):
        cells = []
        for j, count in enumerate(row):
            share = report.confusion_normalized[i][j] if report.confusion_normalized else 0.0
            colour = "52,168,83" if i == j else "217,48,37"
            alpha = 0.08 + 0.7 * share if count else 0
            cells.append(
                ConfusionCell(count, f"background:rgba({colour},{alpha:.2f})", f"{100 * share:.1f}% of true {names[i]}")
            )
        rows.append(cells)
    return rows


def render_html(
    report: EvaluationReport,
    gate: GateResult,
    figures: Mapping[str, bytes],
    title: str,
    facts: Mapping[str, Any] | None = None,
) -> str:
    """The report page. `facts`: a few lines about the model and data (architecture, data hash, ...)."""
    comparison = report.comparison
    show_confusion = bool(report.confusion) and len(report.class_names) <= MAX_CONFUSION_CLASSES
    return render(
        "report.html.j2",
        title=title,
        facts=list((facts or {}).items()),
        report=report,
        gate=gate,
        gate_table=_gate_table(gate),
        metrics_table=Table(["metric", "value"], headline_rows(report)),
        ci_level=f"{100 * report.ci_level:g}%",
        comparison=comparison,
        comparison_table=_comparison_table(comparison) if comparison is not None else None,
        failures=failure_lines(report),
        worst_subgroups=worst_subgroup_lines(report),
        subgroup_table=Table(SUBGROUP_HEADER, subgroup_rows(report), left=2),
        per_class_table=_per_class_table(report),
        confusion_rows=_confusion_rows(report) if show_confusion else None,
        max_confusion_classes=MAX_CONFUSION_CLASSES,
        figures=[Figure(name, png_data_uri(png)) for name, png in figures.items()],
    )
