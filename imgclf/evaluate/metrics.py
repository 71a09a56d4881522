"""Single-label test metrics.

`evaluate_probabilities(y_true, probs, class_names)` (softmax outputs; `imgclf.scores.softmax` turns logits
into them) fills an `EvaluationReport` with accuracy, top-k accuracy, precision / recall / F1 (macro,
weighted, per class), the confusion matrix (counts and row-normalised), one-vs-rest ROC-AUC (macro and
per class), per-class accuracy, calibration (ECE and reliability-diagram data) and seeded bootstrap
CIs for accuracy and macro F1. `evaluate_predictions` does the label-only part for hard predictions.
`EvaluationReport.metrics()` is the flat dict of numbers used for step metadata and MLflow.

The report also carries what `imgclf.evaluate.evaluation` adds: subgroups, the comparison with the
champion, and for multi-label data the `MultiLabelReport`. Every field is a plain JSON value or
one of those dataclasses, so `dataclasses.asdict` + JSON stores a report and
`pydantic.TypeAdapter(EvaluationReport).validate_python` rebuilds it. Undefined numbers are None (not
NaN) so they stay valid JSON everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from imgclf.evaluate.comparison import ModelComparison
from imgclf.evaluate.multilabel import MultiLabelReport
from imgclf.evaluate.numbers import finite_or_none as _num
from imgclf.evaluate.stats import bootstrap_ci
from imgclf.evaluate.subgroups import SubgroupReport


# -- single-label report ------------------------------------------------------------------------
@dataclass
class EvaluationReport:
    class_names: list[str]
    n_images: int
    accuracy: float
    macro_f1: float  # mean over classes present in y_true or y_pred (sklearn's average="macro")
    confusion: list[list[int]]  # rows = true class, columns = predicted
    per_class_accuracy: dict[str, float | None] = field(default_factory=dict)  # None: a class without test images
    # label-based metrics
    macro_precision: float | None = None
    macro_recall: float | None = None
    weighted_precision: float | None = None
    weighted_recall: float | None = None
    weighted_f1: float | None = None
    # class -> precision, recall, f1, support (int), accuracy, roc_auc
    per_class: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    confusion_normalized: list[list[float]] = field(default_factory=list)  # each row sums to 1 (all 0 without support)
    # probability-based metrics (None when only hard predictions were given)
    top_k_accuracy: dict[str, float] = field(default_factory=dict)  # "1", "5", ... (k <= number of classes)
    roc_auc_macro: float | None = None  # one-vs-rest, mean over the classes where it is defined
    roc_auc_per_class: dict[str, float] = field(default_factory=dict)
    roc_auc_skipped: dict[str, str] = field(default_factory=dict)  # class -> why ROC-AUC is undefined for it
    ece: float | None = None  # expected calibration error of the top-1 confidence
    reliability: dict[str, list] = field(default_factory=dict)  # bin_edges, confidence, accuracy, counts
    # bootstrap confidence intervals (percentile, seeded)
    accuracy_ci_low: float | None = None
    accuracy_ci_high: float | None = None
    macro_f1_ci_low: float | None = None
    macro_f1_ci_high: float | None = None
    ci_level: float = 0.95
    n_bootstrap: int = 0
    bootstrap_seed: int | None = None
    # latency on this machine (see imgclf.latency; attach with `with_latency`)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    batch32_images_per_s: float | None = None
    notes: list[str] = field(default_factory=list)
    # filled in by imgclf.evaluate.evaluation: subgroups, the comparison with the champion (the version a
    # new model would replace: the staging holder, else production; None when there is none) and why / why not
    subgroups: SubgroupReport = field(default_factory=SubgroupReport)
    comparison: ModelComparison | None = None
    comparison_note: str = ""
    champion_version: str = ""  # the registered version it would replace ("" when none could be loaded)
    champion_alias: str = ""  # the stage it held then
    # multi-label data: `accuracy` is exact-match accuracy, `macro_f1` is at thresholds tuned on
    # validation, and this holds the per-label AP, mAP and thresholds
    multi_label: MultiLabelReport | None = None

    def metrics(self) -> dict[str, float]:
        """The scalar metrics, under the names used for MLflow metrics and ZenML metadata.

        Always test_accuracy and test_macro_f1; the others only when they were measured and are finite.
        """
        out = {"test_accuracy": float(self.accuracy), "test_macro_f1": float(self.macro_f1)}
        optional = {
            "test_weighted_f1": self.weighted_f1,
            "test_ece": self.ece,
            "test_roc_auc_macro": self.roc_auc_macro,
            "test_top5_accuracy": self.top_k_accuracy.get("5"),
            "test_accuracy_ci_low": self.accuracy_ci_low,
            "test_accuracy_ci_high": self.accuracy_ci_high,
            "test_macro_f1_ci_low": self.macro_f1_ci_low,
            "test_macro_f1_ci_high": self.macro_f1_ci_high,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "batch32_images_per_s": self.batch32_images_per_s,
        }
        if self.multi_label is not None:
            optional["test_map"] = self.multi_label.mean_average_precision
            optional["test_micro_f1"] = self.multi_label.micro_f1
        if self.comparison is not None:
            optional.update(self.comparison.metrics())
        out.update({k: float(v) for k, v in optional.items() if _num(v) is not None})
        return out

    def with_latency(self, latency: Any) -> EvaluationReport:
        """A copy carrying a `LatencyReport`'s numbers (p50/p95 ms, batch-32 images/s)."""
        return dataclasses.replace(
            self,
            latency_p50_ms=_num(latency.p50_ms),
            latency_p95_ms=_num(latency.p95_ms),
            batch32_images_per_s=_num(latency.batch32_images_per_s),
        )


def _check_labels(y_true: np.ndarray, n_classes: int, what: str = "y_true") -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of class indices, got shape {y.shape}")
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty test set (0 images)")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"{what} must hold integer class indices")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise ValueError(f"{what} has {int(bad.sum())} labels outside 0..{n_classes - 1} (first: {int(y[bad][0])})")
    return y


def _label_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> EvaluationReport:
    """The metrics that need only labels: accuracy, precision / recall / F1, the confusion matrix."""
    k = len(class_names)
    labels = list(range(k))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = (support + predicted) > 0  # sklearn's default label set: classes in y_true or y_pred
    weights = support / support.sum()
    row_norm = np.divide(cm, support[:, None], out=np.zeros(cm.shape), where=support[:, None] > 0)
    per_class_accuracy = {
        name: _num(cm[i, i] / support[i]) if support[i] else None for i, name in enumerate(class_names)
    }
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "accuracy": per_class_accuracy[name],
        }
        for i, name in enumerate(class_names)
    }
    notes = []
    absent = [class_names[i] for i in range(k) if support[i] == 0]
    if absent:
        notes.append(
            f"no test images for {len(absent)} class(es): {', '.join(absent[:10])}"
            f"{' ...' if len(absent) > 10 else ''}; macro averages use the classes present"
        )
    return EvaluationReport(
        class_names=list(class_names),
        n_images=len(y_true),
        accuracy=float(np.mean(y_true == y_pred)),
        macro_f1=float(f1[present].mean()),
        confusion=cm.astype(int).tolist(),
        per_class_accuracy=per_class_accuracy,
        macro_precision=float(precision[present].mean()),
        macro_recall=float(recall[present].mean()),
        weighted_precision=float(weights @ precision),
        weighted_recall=float(weights @ recall),
        weighted_f1=float(weights @ f1),
        per_class=per_class,
        confusion_normalized=row_norm.tolist(),
        notes=notes,
    )


def _bootstrap_fields(
    y_true: np.ndarray, y_pred: np.ndarray, k: int, n_bootstrap: int, seed: int, level: float
) -> dict[str, Any]:
    if n_bootstrap <= 0:
        return {}
    alpha = 1 - level
    acc = bootstrap_ci("accuracy", y_true, y_pred, n_bootstrap, seed, alpha, n_classes=k)
    f1 = bootstrap_ci("macro_f1", y_true, y_pred, n_bootstrap, seed, alpha, n_classes=k)
    return {
        "accuracy_ci_low": acc["ci_low"],
        "accuracy_ci_high": acc["ci_high"],
        "macro_f1_ci_low": f1["ci_low"],
        "macro_f1_ci_high": f1["ci_high"],
        "ci_level": float(level),
        "n_bootstrap": int(n_bootstrap),
        "bootstrap_seed": int(seed),
    }


def evaluate_predictions(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci_level: float = 0.95,
) -> EvaluationReport:
    """Label-only metrics for hard predictions (no top-k, ROC-AUC or calibration: those need scores)."""
    k = len(class_names)
    y_true = _check_labels(y_true, k)
    y_pred = _check_labels(y_pred, k, "y_pred")
    if len(y_pred) != len(y_true):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    bootstrap = _bootstrap_fields(y_true, y_pred, k, n_bootstrap, seed, ci_level)
    return dataclasses.replace(_label_report(y_true, y_pred, class_names), **bootstrap)


def true_class_rank(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """0-based rank of the true class among each row's scores (0 = the argmax).

    Ties are broken towards the lower class index, like argmax, so top-1 equals accuracy
    (sklearn's top_k_accuracy_score breaks ties the other way; without ties they agree).
    """
    probs = np.asarray(probs)
    y = np.asarray(y_true)
    true_p = probs[np.arange(len(y)), y][:, None]
    ahead = (probs > true_p) | ((probs == true_p) & (np.arange(probs.shape[1])[None, :] < y[:, None]))
    return ahead.sum(axis=1)


def calibration(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> tuple[float, dict[str, list]]:
    """Expected calibration error of the top-1 confidence, and the reliability-diagram data.

    Equal-width bins on [0, 1], right-closed ((lo, hi]; a confidence of 0 goes to the first bin).
    ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|. Empty bins have confidence/accuracy None.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    probs = np.asarray(probs, dtype=np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    nonempty = counts > 0
    mean_conf = np.divide(conf_sum, counts, out=np.zeros(n_bins), where=nonempty)
    mean_acc = np.divide(acc_sum, counts, out=np.zeros(n_bins), where=nonempty)
    ece = float(np.sum(counts / counts.sum() * np.abs(mean_acc - mean_conf)))
    diagram = {
        "bin_edges": edges.tolist(),
        "confidence": [float(c) if n else None for c, n in zip(mean_conf, nonempty)],
        "accuracy": [float(a) if n else None for a, n in zip(mean_acc, nonempty)],
        "counts": counts.astype(int).tolist(),
    }
    return ece, diagram


def roc_auc_ovr(
    y_true: np.ndarray, probs: np.ndarray, class_names: list[str]
) -> tuple[float | None, dict[str, float], dict[str, str]]:
    """One-vs-rest ROC-AUC per class and their mean; classes where it is undefined are skipped and named.

    Computed for all classes at once as the Mann-Whitney statistic on average ranks (ties count
    half), which is exactly sklearn's ``roc_auc_score(y == k, probs[:, k])``.
    """
    y_true = np.asarray(y_true)
    n = len(y_true)
    k = len(class_names)
    positives = np.bincount(y_true, minlength=k)
    ranks = rankdata(probs, axis=0)  # average ranks per column
    pos_rank_sum = np.zeros(k)
    np.add.at(pos_rank_sum, y_true, ranks[np.arange(n), y_true])
    per_class, skipped = {}, {}
    for i, name in enumerate(class_names):
        p = int(positives[i])
        if p == 0:
            skipped[name] = "no test images of this class"
        elif p == n:
            skipped[name] = "every test image is of this class (no negatives)"
        else:
            per_class[name] = float((pos_rank_sum[i] - p * (p + 1) / 2) / (p * (n - p)))
    macro = float(np.mean(list(per_class.values()))) if per_class else None
    return macro, per_class, skipped


def _check_probs(probs: np.ndarray, n_items: int, n_classes: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (n_items, n_classes):
        raise ValueError(f"probs must have shape (n_images, n_classes) = ({n_items}, {n_classes}), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or inf")
    sums = p.sum(axis=1)
    if (p < 0).any() or not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            "probs must be probabilities (non-negative rows summing to 1); "
            f"row sums range {sums.min():.4g}..{sums.max():.4g}. Logits? Use imgclf.scores.softmax first."
        )
    return p


def evaluate_probabilities(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    *,
    top_k: Sequence[int] = (1, 5),
    n_bootstrap: int = 1000,
    seed: int = 0,
    ece_bins: int = 15,
    ci_level: float = 0.95,
) -> EvaluationReport:
    """Every single-label test metric from softmax outputs (N, K); predictions are the argmax."""
    k = len(class_names)
    y_true = _check_labels(y_true, k)
    probs = _check_probs(probs, len(y_true), k)
    y_pred = probs.argmax(axis=1)
    report = _label_report(y_true, y_pred, class_names)
    macro_auc, auc_per_class, auc_skipped = roc_auc_ovr(y_true, probs, class_names)
    for name, value in auc_per_class.items():
        report.per_class[name]["roc_auc"] = value
    notes = list(report.notes)
    if auc_skipped:
        notes.append("ROC-AUC skipped for " + "; ".join(f"{n!r} ({why})" for n, why in auc_skipped.items()))
    ece, diagram = calibration(y_true, probs, ece_bins)
    ks = sorted({int(t) for t in top_k if 1 <= int(t) <= k})
    dropped = sorted({int(t) for t in top_k} - set(ks))
    rank = true_class_rank(y_true, probs)
    if dropped:
        notes.append(f"top-k accuracy for k={dropped} not computed: only {k} classes")
    return dataclasses.replace(
        report,
        top_k_accuracy={str(t): float((rank < t).mean()) for t in ks},
        roc_auc_macro=macro_auc,
        roc_auc_per_class=auc_per_class,
        roc_auc_skipped=auc_skipped,
        ece=ece,
        reliability=diagram,
        notes=notes,
        **_bootstrap_fields(y_true, y_pred, k, n_bootstrap, seed, ci_level),
    )
