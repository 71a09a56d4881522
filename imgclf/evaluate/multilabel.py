"""Multi-label test metrics: `evaluate_multilabel` on test (per-label average precision, mAP, and F1 at
the thresholds tuned on the validation split by `tune_thresholds`, which lives with the model in
`imgclf.models.thresholds` because training tunes them too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from imgclf.evaluate.numbers import finite_or_none
from imgclf.models.thresholds import check_multi_hot, tune_thresholds

__all__ = ["MultiLabelReport", "evaluate_multilabel", "tune_thresholds"]

Thresholds = float | Sequence[float] | np.ndarray | dict[str, float] | None


@dataclass
class MultiLabelReport:
    class_names: list[str]
    n_images: int
    mean_average_precision: float | None  # mean AP over labels with at least one positive
    micro_f1: float
    macro_f1: float  # over all labels, at `thresholds`
    average_precision: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    per_label: dict[str, dict[str, float | int]] = field(default_factory=dict)  # precision, recall, f1, support
    ap_skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        out = {"test_micro_f1": float(self.micro_f1), "test_macro_f1": float(self.macro_f1)}
        if finite_or_none(self.mean_average_precision) is not None:
            out["test_map"] = float(self.mean_average_precision)
        return out


def _thresholds_array(thresholds: Thresholds, class_names: list[str]) -> np.ndarray:
    if thresholds is None:
        return np.full(len(class_names), 0.5)
    if isinstance(thresholds, dict):
        missing = [n for n in class_names if n not in thresholds]
        if missing:
            raise ValueError(f"thresholds missing for labels {missing}")
        return np.array([float(thresholds[n]) for n in class_names])
    arr = np.asarray(thresholds, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(len(class_names), float(arr))
    if arr.shape != (len(class_names),):
        raise ValueError(f"need one threshold per label ({len(class_names)}), got shape {arr.shape}")
    return arr


def _average_precision(
    y: np.ndarray, scores: np.ndarray, class_names: list[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """AP per label, and the labels where it is undefined (no positives) with the reason."""
    ap, skipped = {}, {}
    for j, name in enumerate(class_names):
        if int(y[:, j].sum()) == 0:
            skipped[name] = "no positive test images: average precision undefined"
        else:
            ap[name] = float(average_precision_score(y[:, j], scores[:, j]))
    return ap, skipped


def _micro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    tp = int(((pred == 1) & (y == 1)).sum())
    wrong = int((pred != y).sum())  # false positives + false negatives
    return 2 * tp / (2 * tp + wrong) if (2 * tp + wrong) else 0.0


def evaluate_multilabel(
    y_true_multi_hot: np.ndarray, scores: np.ndarray, class_names: list[str], thresholds: Thresholds = None
) -> MultiLabelReport:
    """Per-label average precision and mAP (threshold-free), and F1 at `thresholds` (score >= t is
    positive; one per label, e.g. from `tune_thresholds` on validation; default 0.5)."""
    y, s = check_multi_hot(y_true_multi_hot, scores, len(class_names))
    thr = _thresholds_array(thresholds, class_names)
    ap, skipped = _average_precision(y, s, class_names)
    pred = (s >= thr[None, :]).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    per_label = {
        n: {
            "precision": float(precision[j]),
            "recall": float(recall[j]),
            "f1": float(f1[j]),
            "support": int(support[j]),
        }
        for j, n in enumerate(class_names)
    }
    return MultiLabelReport(
        class_names=list(class_names),
        n_images=len(y),
        mean_average_precision=float(np.mean(list(ap.values()))) if ap else None,
        micro_f1=float(_micro_f1(y, pred)),
        macro_f1=float(np.mean(f1)),
        average_precision=ap,
        thresholds={n: float(t) for n, t in zip(class_names, thr)},
        per_label=per_label,
        ap_skipped=skipped,
        notes=[f"average precision skipped for {', '.join(skipped)}"] if skipped else [],
    )
