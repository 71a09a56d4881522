"""Champion (the registered version a new model would replace) against challenger on the same test items:
`compare_models` says in plain words whether the challenger really is better, from the paired bootstrap
and McNemar's test. Deltas are challenger minus champion, so a positive delta means the challenger is better."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgclf.evaluate.stats import (
    BATCHED_METRICS,
    as_labels,
    check_same_length,
    count_classes,
    mcnemar,
    metric_value,
    paired_bootstrap,
)


@dataclass
class ModelComparison:
    """Champion vs challenger on the same test items. Deltas are challenger - champion.

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
            f"{self.verdict}: {self.primary} {getattr(self, f'challenger_{self.primary}'):.4f} vs champion "
            f"{getattr(self, f'champion_{self.primary}'):.4f}, delta {d:+.4f} ({pct} CI {lo:+.4f} to {hi:+.4f}, "
            f"paired bootstrap p={p:.3g}, n={self.n_images}); McNemar: champion-only correct {self.mcnemar_b}, "
            f"challenger-only correct {self.mcnemar_c}, p={self.mcnemar_p_value:.3g}"
        )

    def metrics(self) -> dict[str, float]:
        """Flat numbers for step metadata / MLflow (prefix `champion_` = the champion)."""
        return {
            "champion_test_accuracy": self.champion_accuracy,
            "champion_test_macro_f1": self.champion_macro_f1,
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
    n = check_same_length(yt, a, b)
    k = count_classes(yt, np.asarray(probs_champion), np.asarray(probs_challenger), n_classes=n_classes)
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
