"""The evaluation in table rows and sentences: the headline metrics, the subgroups and how the model
fails. The HTML report, the model card and the evaluate step's log all say it the same way."""

from __future__ import annotations

import math
from typing import Any

from imgclf.evaluate.metrics import EvaluationReport
from imgclf.evaluate.plots import confused_pairs

SUBGROUP_HEADER = ["column", "value", "test images", "accuracy [95% CI]", "macro F1"]


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell; n/a for missing or undefined values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ci(value: Any, low: Any, high: Any) -> str:
    """`0.9963 [0.9888, 1.0000]`, or the value alone when no interval was computed."""
    return fmt(value) if low is None or high is None else f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def worst_classes(report: EvaluationReport, n: int = 3) -> list[tuple[str, float, int]]:
    """Up to `n` classes with the lowest accuracy (recall) below 1: (name, accuracy, test images)."""
    scored = [
        (name, acc, int(report.per_class.get(name, {}).get("support") or 0))
        for name, acc in report.per_class_accuracy.items()
        if acc is not None and acc < 1.0
    ]
    return sorted(scored, key=lambda t: (t[1], t[0]))[:n]


def failure_lines(report: EvaluationReport, top: int = 5) -> list[str]:
    """How the model fails, in words: the most frequent confusions (`true 8 predicted as 1: 3 of 27
    (11.1%)`) and the weakest classes; for multi-label data the labels with the lowest AP."""
    if report.multi_label is not None:
        low = sorted(report.multi_label.average_precision.items(), key=lambda kv: kv[1])[:3]
        return ["Lowest average precision: " + ", ".join(f"{n} ({v:.4f})" for n, v in low)] if low else []
    names = report.class_names
    lines = []
    for t, p, count in confused_pairs(report.confusion, top):
        support = sum(report.confusion[t])
        lines.append(f"true {names[t]} predicted as {names[p]}: {count} of {support} ({100 * count / support:.1f}%)")
    worst = worst_classes(report)
    if worst:
        lines.append("Lowest per-class accuracy: " + ", ".join(f"{n} {a:.4f} (n={s})" for n, a, s in worst))
    return lines or ["No confusions on the test split."]


def headline_rows(report: EvaluationReport) -> list[list[str]]:
    """[metric, value] rows of the headline metrics, CIs included (report and model card)."""
    ml = report.multi_label
    rows = [
        [
            "exact-match accuracy" if ml is not None else "accuracy",
            ci(report.accuracy, report.accuracy_ci_low, report.accuracy_ci_high),
        ],
        ["macro F1", ci(report.macro_f1, report.macro_f1_ci_low, report.macro_f1_ci_high)],
    ]
    if ml is not None:
        rows += [["mAP", fmt(ml.mean_average_precision)], ["micro F1", fmt(ml.micro_f1)]]
    else:
        rows += [
            ["weighted F1", fmt(report.weighted_f1)],
            ["macro precision / recall", f"{fmt(report.macro_precision)} / {fmt(report.macro_recall)}"],
            *[[f"top-{k} accuracy", fmt(v)] for k, v in report.top_k_accuracy.items()],
            ["ROC-AUC (one-vs-rest, macro)", fmt(report.roc_auc_macro)],
            ["expected calibration error", fmt(report.ece)],
        ]
    return [
        *rows,
        ["latency batch 1, p50 / p95 (ms)", f"{fmt(report.latency_p50_ms, 2)} / {fmt(report.latency_p95_ms, 2)}"],
        ["throughput batch 32 (images/s)", fmt(report.batch32_images_per_s, 1)],
    ]


def subgroup_rows(report: EvaluationReport) -> list[list[Any]]:
    """One row per subgroup, in the columns of `SUBGROUP_HEADER`."""
    return [
        [r.column, r.value, r.n_images, ci(r.accuracy, r.accuracy_ci_low, r.accuracy_ci_high), fmt(r.macro_f1)]
        for r in report.subgroups.rows
    ]


def worst_subgroup_lines(report: EvaluationReport) -> list[str]:
    """`Worst site: B, accuracy 0.7000 [0.6300, 0.8010] on 100 images`, one per column."""
    return [
        f"Worst {column}: {row.value}, accuracy {ci(row.accuracy, row.accuracy_ci_low, row.accuracy_ci_high)} "
        f"on {row.n_images} images"
        for column, row in report.subgroups.worst.items()
    ]
