"""Uncertainty: seeded bootstrap confidence intervals, the paired bootstrap and McNemar's test (the
tests behind `imgclf.evaluate.comparison`).

Pure numpy/scipy. The named metrics ("accuracy", "macro_f1") are computed for a whole block of
bootstrap resamples at once (bincounts over resample x class), so the bootstrap costs little next to
inference; any other metric may be passed as a callable and is evaluated per resample (slow on big
test sets, so its progress is logged).

Conventions
- Predictions may be hard labels (N,) or scores (N, K); scores are turned into labels by argmax.
- Macro F1 averages over the classes present in y_true or y_pred of the (re)sample, like
  ``sklearn.metrics.f1_score(average="macro")`` without ``labels``; a class that a resample happens
  to leave out is not counted as an F1 of 0.
- Confidence intervals are percentile intervals at level 1 - alpha. Deltas are challenger minus
  champion (``pred_b - pred_a``), so a positive delta means the challenger is better.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy import stats as _sps

from imgclf.logs import Progress

log = logging.getLogger(__name__)

MetricLike = str | Callable[[np.ndarray, np.ndarray], float]

# Resamples are drawn in blocks so that a block holds at most this many indices (bounded memory on
# large test sets); the block size depends only on the number of items, so a seed is reproducible.
_MAX_BLOCK_ITEMS = 2_000_000
# McNemar: exact binomial test below this many discordant pairs, chi-square with continuity above.
MCNEMAR_EXACT_BELOW = 25


# -- inputs --------------------------------------------------------------------------------------
def as_labels(pred_or_probs: np.ndarray) -> np.ndarray:
    """Hard labels from labels (N,) or scores (N, K) (argmax; ties go to the lowest class index)."""
    arr = np.asarray(pred_or_probs)
    if arr.ndim == 2:
        return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim != 1:
        raise ValueError(f"predictions must be labels (N,) or scores (N, K), got shape {arr.shape}")
    return arr.astype(np.int64)


def count_classes(y_true: np.ndarray, *preds: np.ndarray, n_classes: int | None = None) -> int:
    """`n_classes` when given, else the most that labels (highest + 1) or score columns imply."""
    if n_classes is not None:
        return int(n_classes)
    k = 0
    for arr in (y_true, *preds):
        arr = np.asarray(arr)
        if arr.ndim == 2:
            k = max(k, arr.shape[1])
        elif arr.size:
            k = max(k, int(arr.max()) + 1)
    return k


def check_same_length(*arrays: np.ndarray) -> int:
    """The common number of items; a clear error for unequal or empty inputs."""
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"inputs must have the same number of items, got lengths {sorted(lengths)}")
    n = lengths.pop()
    if n == 0:
        raise ValueError("cannot bootstrap an empty test set")
    return n


def resample_blocks(n_items: int, n: int, seed: int) -> Iterator[np.ndarray]:
    """`n` bootstrap resamples of `n_items` indices, as (block, n_items) int arrays, seeded."""
    rng = np.random.default_rng(seed)
    block = max(1, _MAX_BLOCK_ITEMS // max(1, n_items))
    done = 0
    while done < n:
        size = min(block, n - done)
        yield rng.integers(0, n_items, size=(size, n_items))
        done += size


# -- batched metrics: (B, N) labels -> (B,) values ------------------------------------------------
def _batch_accuracy(yt: np.ndarray, yp: np.ndarray, k: int) -> np.ndarray:
    return (yt == yp).mean(axis=1)


def _batch_macro_f1(yt: np.ndarray, yp: np.ndarray, k: int) -> np.ndarray:
    b = yt.shape[0]
    offset = (np.arange(b, dtype=np.int64) * k)[:, None]
    size = b * k
    true_count = np.bincount((yt + offset).ravel(), minlength=size).reshape(b, k)
    pred_count = np.bincount((yp + offset).ravel(), minlength=size).reshape(b, k)
    hit = yt == yp
    tp = np.bincount((yt + offset)[hit], minlength=size).reshape(b, k)
    denom = true_count + pred_count
    present = denom > 0
    f1 = np.divide(2.0 * tp, denom, out=np.zeros((b, k)), where=present)
    return f1.sum(axis=1) / np.maximum(present.sum(axis=1), 1)


BATCHED_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "accuracy": _batch_accuracy,
    "macro_f1": _batch_macro_f1,
}


def metric_value(
    metric: MetricLike, y_true: np.ndarray, y_pred_or_probs: np.ndarray, n_classes: int | None = None
) -> float:
    """The metric on the full sample (the point estimate the bootstrap is centred on)."""
    if callable(metric):
        return float(metric(np.asarray(y_true), np.asarray(y_pred_or_probs)))
    fn = _batched(metric)
    yt = np.asarray(y_true, dtype=np.int64)
    yp = as_labels(y_pred_or_probs)
    return float(fn(yt[None, :], yp[None, :], count_classes(yt, yp, n_classes=n_classes))[0])


def _batched(metric: str) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    try:
        return BATCHED_METRICS[metric]
    except KeyError:
        raise ValueError(
            f"unknown metric {metric!r}: use one of {sorted(BATCHED_METRICS)} or pass a callable"
        ) from None


def _replicates(
    metric: MetricLike, y_true: np.ndarray, preds: Sequence[np.ndarray], n: int, seed: int, n_classes: int | None
) -> list[np.ndarray]:
    """Metric values over `n` seeded resamples, one array per prediction set (same resamples for all)."""
    name = metric if isinstance(metric, str) else getattr(metric, "__name__", "metric")
    progress = Progress(f"bootstrap of {name}", n, log, unit="resamples")
    y_true = np.asarray(y_true)
    if callable(metric):
        parts = _callable_replicates(metric, y_true, [np.asarray(p) for p in preds], n, seed, progress)
    else:
        parts = _batched_replicates(_batched(metric), y_true, preds, n, seed, n_classes, progress)
    progress.finish()
    return [np.concatenate(p) for p in parts]


def _callable_replicates(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: np.ndarray,
    preds: list[np.ndarray],
    n: int,
    seed: int,
    progress: Progress,
) -> list[list[np.ndarray]]:
    out: list[list[np.ndarray]] = [[] for _ in preds]
    for block in resample_blocks(len(y_true), n, seed):
        for idx in block:
            for j, p in enumerate(preds):
                out[j].append(np.array([metric(y_true[idx], p[idx])], dtype=float))
            progress.advance()
    return out


def _batched_replicates(
    fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
    y_true: np.ndarray,
    preds: Sequence[np.ndarray],
    n: int,
    seed: int,
    n_classes: int | None,
    progress: Progress,
) -> list[list[np.ndarray]]:
    yt = y_true.astype(np.int64)
    labels = [as_labels(p) for p in preds]
    k = count_classes(yt, *labels, n_classes=n_classes)
    out: list[list[np.ndarray]] = [[] for _ in preds]
    for block in resample_blocks(len(yt), n, seed):
        ytb = yt[block]
        for j, lab in enumerate(labels):
            out[j].append(fn(ytb, lab[block], k))
        progress.advance(len(block))
    return out


# -- public API ----------------------------------------------------------------------------------
def bootstrap_ci(
    metric_fn: MetricLike,
    y_true: np.ndarray,
    y_pred_or_probs: np.ndarray,
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    n_classes: int | None = None,
) -> dict[str, float]:
    """Percentile bootstrap CI at level 1 - alpha: {estimate, ci_low, ci_high, level, n, seed}.

    `metric_fn` is "accuracy", "macro_f1" (vectorised) or a callable ``f(y_true, y_pred) -> float``
    that receives the resampled rows of `y_pred_or_probs` as given (labels or scores).
    """
    if n < 1:
        raise ValueError(f"n (bootstrap resamples) must be >= 1, got {n}")
    check_same_length(y_true, y_pred_or_probs)
    estimate = metric_value(metric_fn, y_true, y_pred_or_probs, n_classes)
    (values,) = _replicates(metric_fn, y_true, [y_pred_or_probs], n, seed, n_classes)
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {
        "estimate": estimate,
        "ci_low": float(low),
        "ci_high": float(high),
        "level": 1 - alpha,
        "n": int(n),
        "seed": int(seed),
    }


def paired_bootstrap(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    metric: MetricLike = "accuracy",
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    n_classes: int | None = None,
) -> dict[str, float]:
    """Paired bootstrap of metric(b) - metric(a) over the same resampled items.

    Returns {delta, ci_low, ci_high, p_value, level, n, seed}. The two-sided p-value is
    2 * min(P*(delta <= 0), P*(delta >= 0)) with the +1 correction, capped at 1: identical models
    give p = 1, and 0 lies outside the CI roughly when p < alpha.
    """
    if n < 1:
        raise ValueError(f"n (bootstrap resamples) must be >= 1, got {n}")
    check_same_length(y_true, pred_a, pred_b)
    k = (
        n_classes
        if callable(metric)
        else count_classes(np.asarray(y_true), as_labels(pred_a), as_labels(pred_b), n_classes=n_classes)
    )
    delta = metric_value(metric, y_true, pred_b, k) - metric_value(metric, y_true, pred_a, k)
    va, vb = _replicates(metric, y_true, [pred_a, pred_b], n, seed, k)
    d = vb - va
    low, high = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    tol = 1e-12  # float noise on identical predictions must not count as a difference
    le = (np.count_nonzero(d <= tol) + 1) / (n + 1)
    ge = (np.count_nonzero(d >= -tol) + 1) / (n + 1)
    p = min(1.0, 2 * min(le, ge))
    return {
        "delta": float(delta),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p),
        "level": 1 - alpha,
        "n": int(n),
        "seed": int(seed),
    }


def mcnemar(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, float | int | str]:
    """McNemar's test on paired correctness.

    b = items model A gets right and B wrong, c = items A gets wrong and B right. Exact two-sided
    binomial test when b + c < 25 (statistic = min(b, c)); otherwise chi-square with continuity
    correction, (|b - c| - 1)^2 / (b + c), 1 degree of freedom. b + c = 0 gives p = 1.
    """
    check_same_length(y_true, pred_a, pred_b)
    yt = np.asarray(y_true, dtype=np.int64)
    ok_a, ok_b = as_labels(pred_a) == yt, as_labels(pred_b) == yt
    b = int(np.count_nonzero(ok_a & ~ok_b))
    c = int(np.count_nonzero(~ok_a & ok_b))
    if b + c == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p_value": 1.0, "method": "exact"}
    if b + c < MCNEMAR_EXACT_BELOW:
        stat = float(min(b, c))
        p = min(1.0, 2.0 * float(_sps.binom.cdf(min(b, c), b + c, 0.5)))
        return {"b": b, "c": c, "statistic": stat, "p_value": p, "method": "exact"}
    stat = (abs(b - c) - 1.0) ** 2 / (b + c)
    return {
        "b": b,
        "c": c,
        "statistic": float(stat),
        "p_value": float(_sps.chi2.sf(stat, 1)),
        "method": "chi2_continuity",
    }
