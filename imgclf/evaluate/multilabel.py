"""Multi-label test metrics: `tune_thresholds` on the validation split, then `evaluate_multilabel` on
test (per-label average precision, mAP, and F1 at the tuned thresholds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from imgclf.evaluate.numbers import finite_or_none

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


def _check_multilabel(
    y: np.ndarray, scores: np.ndarray | None = None, n_labels: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"multi-label targets must be multi-hot (n_images, n_labels), got shape {y.shape}")
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty set (0 images)")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("multi-label targets must be 0/1")
    if n_labels is not None and y.shape[1] != n_labels:
        raise ValueError(f"targets have {y.shape[1]} labels but {n_labels} class names were given")
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != y.shape:
            raise ValueError(f"scores shape {scores.shape} differs from targets shape {y.shape}")
        if not np.all(np.isfinite(scores)):
            raise ValueError("scores contain NaN or inf")
    return y.astype(np.int64), scores


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
    y, s = _check_multilabel(y_true_multi_hot, scores, len(class_names))
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


def tune_thresholds(y_val: np.ndarray, scores_val: np.ndarray, *, default: float = 0.5) -> np.ndarray:
    """Per-label thresholds that maximise F1 on validation (prediction: score >= threshold).

    For each label every cut between distinct scores is tried; the chosen threshold sits halfway
    between the lowest score kept positive and the next lower score, so test scores just below the
    validation ones are not lost to a knife-edge. Among equal F1s the lowest threshold wins (recall).
    A label with no positive validation image gets `default`.
    """
    y, s = _check_multilabel(y_val, scores_val)
    out = np.full(y.shape[1], float(default))
    for j in range(y.shape[1]):
        if y[:, j].any():
            out[j] = _best_threshold(y[:, j], s[:, j])
    return out


def _best_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """The F1-maximising cut of one label's scores (see `tune_thresholds`)."""
    n, positives = len(y), int(y.sum())
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    tp = np.cumsum(yy)
    kept = np.arange(1, n + 1)
    # only cut where the next score is strictly lower (ties must go the same way)
    cut = np.append(ss[1:] < ss[:-1], True)
    f1 = np.where(cut, 2 * tp / (kept + positives), -1.0)
    best = np.flatnonzero(f1 == f1.max())[-1]  # the last = the lowest threshold among equal F1s
    return float(ss[best] if best == n - 1 else (ss[best] + ss[best + 1]) / 2)
