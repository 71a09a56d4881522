"""Test-split metrics and the quality gate that decides whether a model may be deployed.

Single-label: `evaluate_probabilities(y_true, probs, class_names)` (softmax outputs; `softmax` turns
logits into them) fills an `EvaluationReport` with accuracy, top-k accuracy, precision / recall / F1
(macro, weighted, per class), the confusion matrix (counts and row-normalised), one-vs-rest ROC-AUC
(macro and per class), per-class accuracy, calibration (ECE and reliability-diagram data) and seeded
95% bootstrap CIs for accuracy and macro F1. `evaluate_predictions` does the label-only part for hard
predictions. `EvaluationReport.metrics()` is the flat dict of numbers used for step metadata and MLflow.

Multi-label: `tune_thresholds` on the validation split, then `evaluate_multilabel` on test (per-label
average precision, mAP, F1 at the tuned thresholds).

Quality gate: `quality_gate(report, GateConfig(...))` checks every configured threshold; a value
that was not measured fails its check with a message saying so, it never passes silently.

Every field of the reports is a plain JSON value (float / int / str / None, lists and dicts of them):
the report materializer stores them with `dataclasses.asdict` + JSON and rebuilds them with `Report(**d)`.
Undefined numbers are None (not NaN) so they stay valid JSON everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_fscore_support

from imgclf.evaluate.stats import ModelComparison, bootstrap_ci


def _num(x: Any) -> float | None:
    """A JSON-safe float, or None for missing / NaN / inf."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# -- single-label report ------------------------------------------------------------------------
@dataclass
class EvaluationReport:
    class_names: list[str]
    n_images: int
    accuracy: float
    macro_f1: float  # mean over classes present in y_true or y_pred (sklearn's average="macro")
    confusion: list[list[int]]  # rows = true class, columns = predicted
    per_class_accuracy: dict[str, float] = field(default_factory=dict)  # None where a class has no test images
    # label-based metrics
    macro_precision: float | None = None
    macro_recall: float | None = None
    weighted_precision: float | None = None
    weighted_recall: float | None = None
    weighted_f1: float | None = None
    per_class: dict[str, dict[str, float | None]] = field(default_factory=dict)  # precision, recall, f1, support, roc_auc
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
    # latency on this machine (see imgclf.evaluate.latency; attach with `with_latency`)
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    batch32_images_per_s: float | None = None
    notes: list[str] = field(default_factory=list)
    # filled in by imgclf.evaluate.evaluation: subgroups (SubgroupReport.to_dict()), the comparison with
    # the production model (ModelComparison.to_dict(), None when there is none) and why / why not
    subgroups: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] | None = None
    comparison_note: str = ""
    # multi-label data: `accuracy` is exact-match accuracy, `macro_f1` is at thresholds tuned on
    # validation, and this holds the MultiLabelReport (per-label AP, mAP, thresholds)
    multi_label: dict[str, Any] | None = None

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
        if self.multi_label:
            optional["test_map"] = self.multi_label.get("mean_average_precision")
            optional["test_micro_f1"] = self.multi_label.get("micro_f1")
        if self.comparison:
            optional.update(ModelComparison(**self.comparison).metrics())
        out.update({k: float(v) for k, v in optional.items() if _num(v) is not None})
        return out

    def with_latency(self, latency: Any) -> "EvaluationReport":
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
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{what} must hold integer class indices")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= n_classes)
    if bad.any():
        raise ValueError(f"{what} has {int(bad.sum())} labels outside 0..{n_classes - 1} (first: {int(y[bad][0])})")
    return y


def _label_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    k = len(class_names)
    labels = list(range(k))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = (support + predicted) > 0  # sklearn's default label set: classes in y_true or y_pred
    weights = support / support.sum()
    row_norm = np.divide(cm, support[:, None], out=np.zeros(cm.shape), where=support[:, None] > 0)
    per_class_accuracy = {name: _num(cm[i, i] / support[i]) if support[i] else None for i, name in enumerate(class_names)}
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
        notes.append(f"no test images for {len(absent)} class(es): {', '.join(absent[:10])}"
                     f"{' ...' if len(absent) > 10 else ''}; macro averages use the classes present")
    return dict(
        class_names=list(class_names),
        n_images=int(len(y_true)),
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


def _bootstrap_fields(y_true: np.ndarray, y_pred: np.ndarray, k: int, n_bootstrap: int, seed: int, level: float) -> dict[str, Any]:
    if n_bootstrap <= 0:
        return {}
    alpha = 1 - level
    acc = bootstrap_ci("accuracy", y_true, y_pred, n_bootstrap, seed, alpha, n_classes=k)
    f1 = bootstrap_ci("macro_f1", y_true, y_pred, n_bootstrap, seed, alpha, n_classes=k)
    return dict(
        accuracy_ci_low=acc["ci_low"],
        accuracy_ci_high=acc["ci_high"],
        macro_f1_ci_low=f1["ci_low"],
        macro_f1_ci_high=f1["ci_high"],
        ci_level=float(level),
        n_bootstrap=int(n_bootstrap),
        bootstrap_seed=int(seed),
    )


def evaluate_predictions(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str], *, n_bootstrap: int = 1000, seed: int = 0, ci_level: float = 0.95
) -> EvaluationReport:
    """Label-only metrics for hard predictions (no top-k, ROC-AUC or calibration: those need scores)."""
    k = len(class_names)
    y_true = _check_labels(y_true, k)
    y_pred = _check_labels(y_pred, k, "y_pred")
    if len(y_pred) != len(y_true):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    return EvaluationReport(**_label_metrics(y_true, y_pred, class_names), **_bootstrap_fields(y_true, y_pred, k, n_bootstrap, seed, ci_level))


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


def top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    """Share of items whose true class is among the k highest scores (ties as in `true_class_rank`)."""
    return float((true_class_rank(y_true, probs) < k).mean())


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


def roc_auc_ovr(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> tuple[float | None, dict[str, float], dict[str, str]]:
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
            f"row sums range {sums.min():.4g}..{sums.max():.4g}. Logits? Use imgclf.evaluate.metrics.softmax first."
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
    fields = _label_metrics(y_true, y_pred, class_names)
    macro_auc, auc_per_class, auc_skipped = roc_auc_ovr(y_true, probs, class_names)
    for name, value in auc_per_class.items():
        fields["per_class"][name]["roc_auc"] = value
    notes = fields.pop("notes")
    if auc_skipped:
        notes.append("ROC-AUC skipped for " + "; ".join(f"{n!r} ({why})" for n, why in auc_skipped.items()))
    ece, diagram = calibration(y_true, probs, ece_bins)
    ks = sorted({int(t) for t in top_k if 1 <= int(t) <= k})
    dropped = sorted({int(t) for t in top_k} - set(ks))
    rank = true_class_rank(y_true, probs)
    if dropped:
        notes.append(f"top-k accuracy for k={dropped} not computed: only {k} classes")
    return EvaluationReport(
        **fields,
        top_k_accuracy={str(t): float((rank < t).mean()) for t in ks},
        roc_auc_macro=macro_auc,
        roc_auc_per_class=auc_per_class,
        roc_auc_skipped=auc_skipped,
        ece=ece,
        reliability=diagram,
        notes=notes,
        **_bootstrap_fields(y_true, y_pred, k, n_bootstrap, seed, ci_level),
    )


# -- multi-label ----------------------------------------------------------------------------------
@dataclass
class MultiLabelReport:
    class_names: list[str]
    n_images: int
    mean_average_precision: float | None  # mean AP over labels with at least one positive
    micro_f1: float
    macro_f1: float  # over all labels, at `thresholds`
    average_precision: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    per_label: dict[str, dict[str, float]] = field(default_factory=dict)  # precision, recall, f1, support
    ap_skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        out = {"test_micro_f1": float(self.micro_f1), "test_macro_f1": float(self.macro_f1)}
        if _num(self.mean_average_precision) is not None:
            out["test_map"] = float(self.mean_average_precision)
        return out


def _check_multilabel(y: np.ndarray, scores: np.ndarray | None = None, n_labels: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
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


def _thresholds_array(thresholds: float | Sequence[float] | np.ndarray | dict[str, float] | None, class_names: list[str]) -> np.ndarray:
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


def evaluate_multilabel(
    y_true_multi_hot: np.ndarray,
    scores: np.ndarray,
    class_names: list[str],
    thresholds: float | Sequence[float] | np.ndarray | dict[str, float] | None = None,
) -> MultiLabelReport:
    """Per-label average precision and mAP (threshold-free), and F1 at `thresholds` (score >= t is
    positive; one per label, e.g. from `tune_thresholds` on validation; default 0.5)."""
    y, s = _check_multilabel(y_true_multi_hot, scores, len(class_names))
    thr = _thresholds_array(thresholds, class_names)
    ap, skipped = {}, {}
    for j, name in enumerate(class_names):
        positives = int(y[:, j].sum())
        if positives == 0:
            skipped[name] = "no positive test images: average precision undefined"
        else:
            ap[name] = float(average_precision_score(y[:, j], s[:, j]))
    pred = (s >= thr[None, :]).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    tp, fp, fn = (int(((pred == 1) & (y == 1)).sum()), int(((pred == 1) & (y == 0)).sum()), int(((pred == 0) & (y == 1)).sum()))
    micro = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
    notes = [f"average precision skipped for {', '.join(skipped)}"] if skipped else []
    return MultiLabelReport(
        class_names=list(class_names),
        n_images=int(len(y)),
        mean_average_precision=float(np.mean(list(ap.values()))) if ap else None,
        micro_f1=float(micro),
        macro_f1=float(np.mean(f1)),
        average_precision=ap,
        thresholds={n: float(t) for n, t in zip(class_names, thr)},
        per_label={
            n: {"precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]), "support": int(support[j])}
            for j, n in enumerate(class_names)
        },
        ap_skipped=skipped,
        notes=notes,
    )


def tune_thresholds(y_val: np.ndarray, scores_val: np.ndarray, *, default: float = 0.5) -> np.ndarray:
    """Per-label thresholds that maximise F1 on validation (prediction: score >= threshold).

    For each label every cut between distinct scores is tried; the chosen threshold sits halfway
    between the lowest score kept positive and the next lower score, so test scores just below the
    validation ones are not lost to a knife-edge. Among equal F1s the lowest threshold wins (recall).
    A label with no positive validation image gets `default`.
    """
    y, s = _check_multilabel(y_val, scores_val)
    n, n_labels = y.shape
    out = np.full(n_labels, float(default))
    for j in range(n_labels):
        positives = int(y[:, j].sum())
        if positives == 0:
            continue
        order = np.argsort(-s[:, j], kind="stable")
        ss, yy = s[order, j], y[order, j]
        tp = np.cumsum(yy)
        kept = np.arange(1, n + 1)
        # only cut where the next score is strictly lower (ties must go the same way)
        cut = np.append(ss[1:] < ss[:-1], True)
        f1 = np.where(cut, 2 * tp / (kept + positives), -1.0)
        best = np.flatnonzero(f1 == f1.max())[-1]  # the last = the lowest threshold among equal F1s
        out[j] = ss[best] if best == n - 1 else (ss[best] + ss[best + 1]) / 2
    return out


# -- quality gate ---------------------------------------------------------------------------------
class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_accuracy: float = Field(0.9, ge=0, le=1)
    min_macro_f1: float = Field(0.0, ge=0, le=1)
    max_latency_p50_ms: float | None = Field(None, gt=0)  # None: latency is not gated


@dataclass
class GateResult:
    passed: bool
    checks: list[dict] = field(default_factory=list)  # {name, value, threshold, comparison, passed, message}

    def explain(self) -> str:
        return "; ".join(c.get("message") or _check_message(c) for c in self.checks)

    @property
    def failed_checks(self) -> list[dict]:
        return [c for c in self.checks if not c["passed"]]


_NEGATION = {">=": "<", "<=": ">"}


def _check_message(c: dict) -> str:
    if c["value"] is None:
        return f"{c['name']} was not measured (required {c['comparison']} {c['threshold']}) [FAIL]"
    op = c["comparison"] if c["passed"] else _NEGATION[c["comparison"]]
    return f"{c['name']} {c['value']:.4f} {op} {c['threshold']} [{'ok' if c['passed'] else 'FAIL'}]"


def _check(name: str, value: float | None, comparison: str, threshold: float) -> dict:
    v = _num(value)
    if v is None:
        passed = False
    elif comparison == ">=":
        passed = v >= threshold
    else:
        passed = v <= threshold
    c = {"name": name, "value": v, "threshold": float(threshold), "comparison": comparison, "passed": bool(passed)}
    c["message"] = _check_message(c)
    return c


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
    return GateResult(passed=all(c["passed"] for c in checks), checks=checks)
