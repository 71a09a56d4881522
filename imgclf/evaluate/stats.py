"""Uncertainty and model comparison: seeded bootstrap confidence intervals, the paired bootstrap,
McNemar's test, and `compare_models`, which says in plain words whether a challenger really beats
the production model on the same test split.

Pure numpy/scipy. The named metrics ("accuracy", "macro_f1") are computed for a whole block of
bootstrap resamples at once (bincounts over resample x class), so 1,000 resamples of a few hundred
images take milliseconds; any other metric may be passed as a callable and is evaluated per resample.

Conventions
- Predictions may be hard labels (N,) or scores (N, K); scores are turned into labels by argmax.
- Macro F1 averages over the classes present in y_true or y_pred of the (re)sample, like
  ``sklearn.metrics.f1_score(average="macro")`` without ``labels``; a class that a resample happens
  to leave out is not counted as an F1 of 0.
- Confidence intervals are percentile intervals at level 1 - alpha. Deltas are challenger minus
  champion (``pred_b - pred_a``), so a positive delta means the challenger is better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from scipy import stats as _sps

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


def _n_classes(y_true: np.ndarray, *preds: np.ndarray, n_classes: int | None = None) -> int:
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


def _check_same_length(*arrays: np.ndarray) -> int:
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


def metric_value(metric: MetricLike, y_true: np.ndarray, y_pred_or_probs: np.ndarray, n_classes: int | None = None) -> float:
    """The metric on the full sample (the point estimate the bootstrap is centred on)."""
    if callable(metric):
        return float(metric(np.asarray(y_true), np.asarray(y_pred_or_probs)))
    fn = _batched(metric)
    yt = np.asarray(y_true, dtype=np.int64)
    yp = as_labels(y_pred_or_probs)
    return float(fn(yt[None, :], yp[None, :], _n_classes(yt, yp, n_classes=n_classes))[0])


def _batched(metric: str) -> Callable[[np.ndarray, np.ndarray, int], np.ndarray]:
    try:
        return BATCHED_METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}: use one of {sorted(BATCHED_METRICS)} or pass a callable") from None


def _replicates(metric: MetricLike, y_true: np.ndarray, preds: Sequence[np.ndarray], n: int, seed: int, n_classes: int | None) -> list[np.ndarray]:
    """Metric values over `n` seeded resamples, one array per prediction set (same resamples for all)."""
    y_true = np.asarray(y_true)
    out: list[list[np.ndarray]] = [[] for _ in preds]
    if callable(metric):
        raw = [np.asarray(p) for p in preds]
        for block in resample_blocks(len(y_true), n, seed):
            for idx in block:
                for j, p in enumerate(raw):
                    out[j].append(np.array([metric(y_true[idx], p[idx])], dtype=float))
    else:
        fn = _batched(metric)
        yt = y_true.astype(np.int64)
        labels = [as_labels(p) for p in preds]
        k = _n_classes(yt, *labels, n_classes=n_classes)
        for block in resample_blocks(len(yt), n, seed):
            ytb = yt[block]
            for j, lab in enumerate(labels):
                out[j].append(fn(ytb, lab[block], k))
    return [np.concatenate(parts) for parts in out]


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
    _check_same_length(y_true, y_pred_or_probs)
    estimate = metric_value(metric_fn, y_true, y_pred_or_probs, n_classes)
    (values,) = _replicates(metric_fn, y_true, [y_pred_or_probs], n, seed, n_classes)
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"estimate": estimate, "ci_low": float(low), "ci_high": float(high), "level": 1 - alpha, "n": int(n), "seed": int(seed)}


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
    _check_same_length(y_true, pred_a, pred_b)
    k = n_classes if callable(metric) else _n_classes(np.asarray(y_true), as_labels(pred_a), as_labels(pred_b), n_classes=n_classes)
    delta = metric_value(metric, y_true, pred_b, k) - metric_value(metric, y_true, pred_a, k)
    va, vb = _replicates(metric, y_true, [pred_a, pred_b], n, seed, k)
    d = vb - va
    low, high = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    tol = 1e-12  # float noise on identical predictions must not count as a difference
    le = (np.count_nonzero(d <= tol) + 1) / (n + 1)
    ge = (np.count_nonzero(d >= -tol) + 1) / (n + 1)
    p = min(1.0, 2 * min(le, ge))
    return {"delta": float(delta), "ci_low": float(low), "ci_high": float(high), "p_value": float(p), "level": 1 - alpha, "n": int(n), "seed": int(seed)}


def mcnemar(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, float | int | str]:
    """McNemar's test on paired correctness.

    b = items model A gets right and B wrong, c = items A gets wrong and B right. Exact two-sided
    binomial test when b + c < 25 (statistic = min(b, c)); otherwise chi-square with continuity
    correction, (|b - c| - 1)^2 / (b + c), 1 degree of freedom. b + c = 0 gives p = 1.
    """
    _check_same_length(y_true, pred_a, pred_b)
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
    return {"b": b, "c": c, "statistic": float(stat), "p_value": float(_sps.chi2.sf(stat, 1)), "method": "chi2_continuity"}


@dataclass
class ModelComparison:
    """Champion (production) vs challenger on the same test items. Deltas are challenger - champion.

    Significance: the paired-bootstrap CI of the `primary` metric's delta at `level` excludes 0
    (equivalently its p-value < 1 - level). McNemar's test on paired correctness is reported beside it.
    """

    n_images: int
    primary: str
    level: float
    champion_accuracy: float
    challenger_accuracy: float
    champion_macro_f1: float
    challenger_macro_f1: float
    accuracy_delta: float
    accuracy_ci_low: float
    accuracy_ci_high: float
    accuracy_p_value: float
    macro_f1_delta: float
    macro_f1_ci_low: float
    macro_f1_ci_high: float
    macro_f1_p_value: float
    mcnemar_b: int  # champion right, challenger wrong
    mcnemar_c: int  # champion wrong, challenger right
    mcnemar_statistic: float
    mcnemar_p_value: float
    mcnemar_method: str
    significant: bool
    verdict: str  # "challenger better" | "challenger worse" | "no significant difference at 95%"
    n_bootstrap: int = 1000
    seed: int = 0

    def explain(self) -> str:
        d = getattr(self, f"{self.primary}_delta")
        lo, hi = getattr(self, f"{self.primary}_ci_low"), getattr(self, f"{self.primary}_ci_high")
        p = getattr(self, f"{self.primary}_p_value")
        pct = f"{100 * self.level:g}%"
        return (
            f"{self.verdict}: {self.primary} {getattr(self, f'challenger_{self.primary}'):.4f} vs production "
            f"{getattr(self, f'champion_{self.primary}'):.4f}, delta {d:+.4f} ({pct} CI {lo:+.4f} to {hi:+.4f}, "
            f"paired bootstrap p={p:.3g}, n={self.n_images}); McNemar: production-only correct {self.mcnemar_b}, "
            f"challenger-only correct {self.mcnemar_c}, p={self.mcnemar_p_value:.3g}"
        )

    def metrics(self) -> dict[str, float]:
        """Flat numbers for step metadata / MLflow (prefix `production_` = the champion)."""
        return {
            "production_test_accuracy": self.champion_accuracy,
            "production_test_macro_f1": self.champion_macro_f1,
            "compare_accuracy_delta": self.accuracy_delta,
            "compare_accuracy_ci_low": self.accuracy_ci_low,
            "compare_accuracy_ci_high": self.accuracy_ci_high,
            "compare_accuracy_p_value": self.accuracy_p_value,
            "compare_macro_f1_delta": self.macro_f1_delta,
            "compare_macro_f1_ci_low": self.macro_f1_ci_low,
            "compare_macro_f1_ci_high": self.macro_f1_ci_high,
            "compare_macro_f1_p_value": self.macro_f1_p_value,
            "compare_mcnemar_p_value": self.mcnemar_p_value,
        }

    def to_dict(self) -> dict:
        return asdict(self)


def compare_models(
    y_true: np.ndarray,
    probs_champion: np.ndarray,
    probs_challenger: np.ndarray,
    *,
    primary: str = "accuracy",
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_classes: int | None = None,
) -> ModelComparison:
    """Is the challenger really better than the champion on these test items? (scores or labels)."""
    if primary not in BATCHED_METRICS:
        raise ValueError(f"primary must be one of {sorted(BATCHED_METRICS)}, got {primary!r}")
    yt = np.asarray(y_true, dtype=np.int64)
    a, b = as_labels(probs_champion), as_labels(probs_challenger)
    n = _check_same_length(yt, a, b)
    k = _n_classes(yt, np.asarray(probs_champion), np.asarray(probs_challenger), n_classes=n_classes)
    acc = paired_bootstrap(yt, a, b, "accuracy", n_bootstrap, seed, alpha, n_classes=k)
    f1 = paired_bootstrap(yt, a, b, "macro_f1", n_bootstrap, seed, alpha, n_classes=k)
    mc = mcnemar(yt, a, b)
    main = acc if primary == "accuracy" else f1
    significant = main["p_value"] < alpha and (main["ci_low"] > 0 or main["ci_high"] < 0)
    if significant:
        verdict = "challenger better" if main["delta"] > 0 else "challenger worse"
    else:
        verdict = f"no significant difference at {100 * (1 - alpha):g}%"
    return ModelComparison(
        n_images=n,
        primary=primary,
        level=1 - alpha,
        champion_accuracy=metric_value("accuracy", yt, a, k),
        challenger_accuracy=metric_value("accuracy", yt, b, k),
        champion_macro_f1=metric_value("macro_f1", yt, a, k),
        challenger_macro_f1=metric_value("macro_f1", yt, b, k),
        accuracy_delta=acc["delta"],
        accuracy_ci_low=acc["ci_low"],
        accuracy_ci_high=acc["ci_high"],
        accuracy_p_value=acc["p_value"],
        macro_f1_delta=f1["delta"],
        macro_f1_ci_low=f1["ci_low"],
        macro_f1_ci_high=f1["ci_high"],
        macro_f1_p_value=f1["p_value"],
        mcnemar_b=int(mc["b"]),
        mcnemar_c=int(mc["c"]),
        mcnemar_statistic=float(mc["statistic"]),
        mcnemar_p_value=float(mc["p_value"]),
        mcnemar_method=str(mc["method"]),
        significant=bool(significant),
        verdict=verdict,
        n_bootstrap=int(n_bootstrap),
        seed=int(seed),
    )
