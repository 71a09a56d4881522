"""The decision rule of a multi-label model: label j is present when sigmoid(logit_j) >= threshold_j.

The thresholds are tuned once on the validation split at the end of training and travel with the model
(`TrainedModel.thresholds`, the bundle's model.json, the ONNX metadata), so evaluation and the service
decide with the same numbers (the sigmoid itself: `imgclf.scores.sigmoid`). Numpy only: training and
evaluation both import it (they are peers).
"""

from __future__ import annotations

import numpy as np


def check_multi_hot(
    y: np.ndarray, scores: np.ndarray | None = None, n_labels: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Multi-hot targets (n_images, n_labels) of 0/1 as int64, and `scores` of the same shape as float64;
    ValueError naming the problem otherwise."""
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


def tune_thresholds(y_val: np.ndarray, scores_val: np.ndarray, *, default: float = 0.5) -> np.ndarray:
    """Per-label thresholds that maximise F1 on validation (prediction: score >= threshold).

    For each label every cut between distinct scores is tried; the chosen threshold sits halfway
    between the lowest score kept positive and the next lower score, so test scores just below the
    validation ones are not lost to a knife-edge. Among equal F1s the lowest threshold wins (recall).
    A label with no positive validation image gets `default`.
    """
    y, s = check_multi_hot(y_val, scores_val)
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
