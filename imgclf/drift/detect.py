"""Is a window of the prediction log drifted from the reference profile, on which signals, by how much?

Four signals, each a group of columns of the prediction log (imgclf.monitoring.record):
- image_statistics: brightness, contrast, saturation, sharpness, entropy, clipped share (two-sample
  Kolmogorov-Smirnov per column);
- prediction: confidence, margin, entropy of the probabilities (Kolmogorov-Smirnov);
- predicted_class: the top-1 label (total variation distance, a seeded permutation test: Evidently's
  chi-square treats the reference counts as exact and raised false alarms on like-for-like windows);
- embedding: the model's projected embedding, by a domain classifier (Evidently's ModelDriftMethod:
  a fixed-seed logistic SGD told to tell window from reference; its ROC AUC is the score, drift above a
  threshold). Deterministic: the same window and reference give the same decision.

The column tests share one false-alarm budget `alpha` (Bonferroni: each test at alpha / number of tests),
so an in-distribution window raises a false alarm on about `alpha` of windows at most, not once per
column. Evidently computes every figure and renders the report; the decision is ours, from its values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from imgclf.drift.columns import (
    CLASS_COLUMN,
    EMBEDDING_COLUMN,
    PREDICTION_COLUMNS,
    STAT_COLUMNS,
    has_embeddings,
)

SIGNALS = ("image_statistics", "prediction", "predicted_class", "embedding")


class DriftConfig(BaseModel):
    """What is compared and how strictly. A false alarm starts a retraining, so the default budget is 1%
    of in-distribution windows (bench/drift_sensitivity.py measures the rate)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signals: tuple[str, ...] = Field(SIGNALS, description="which signals may raise drift")
    min_rows: int = Field(200, ge=20, description="below this many rows the answer is 'not enough data'")
    alpha: float = Field(0.01, gt=0, lt=1, description="false-alarm budget of one window's column tests")
    embedding_auc: float = Field(
        0.65, gt=0.5, le=1, description="domain-classifier ROC AUC above which embeddings drifted"
    )

    def model_post_init(self, _context: object) -> None:
        unknown = sorted(set(self.signals) - set(SIGNALS))
        if unknown or not self.signals:
            raise ValueError(f"signals must be a non-empty subset of {list(SIGNALS)}; got {list(self.signals)}")


@dataclass(frozen=True)
class SignalDrift:
    """One signal: drifted or not, its score (the smallest p-value, or the ROC AUC), the threshold it was
    held to, and each column's score."""

    signal: str
    drifted: bool
    score: float
    threshold: float
    columns: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftDecision:
    """The answer for one window. `enough_data` False: too few rows (or no reference) to say anything."""

    drifted: bool
    enough_data: bool
    window_rows: int
    reference_rows: int
    signals: tuple[SignalDrift, ...] = ()
    reason: str = ""

    @property
    def drifted_signals(self) -> list[str]:
        return [s.signal for s in self.signals if s.drifted]

    def summary(self) -> str:
        if not self.enough_data:
            return f"not enough data: {self.reason}"
        if not self.drifted:
            return f"no drift in {self.window_rows} rows against {self.reference_rows} reference rows"
        parts = [f"{s.signal} (score {s.score:.3g}, threshold {s.threshold:.3g})" for s in self.signals if s.drifted]
        return f"drift in {self.window_rows} rows: " + ", ".join(parts)


def _tested_columns(config: DriftConfig, window: pd.DataFrame, reference: pd.DataFrame) -> dict[str, list[str]]:
    groups = {
        "image_statistics": list(STAT_COLUMNS),
        "prediction": list(PREDICTION_COLUMNS),
        "predicted_class": [CLASS_COLUMN],
    }
    return {
        signal: [c for c in columns if c in window and c in reference and window[c].notna().any()]
        for signal, columns in groups.items()
        if signal in config.signals
    }


def detect_drift(window: pd.DataFrame, reference: pd.DataFrame, config: DriftConfig = DriftConfig()):
    """(DriftDecision, Evidently snapshot or None) for `window` against `reference` (both prediction-log
    shaped frames). The snapshot renders to HTML (`snapshot.save_html(path)`)."""
    if len(reference) < config.min_rows:
        reason = f"the reference has {len(reference)} rows; at least {config.min_rows} are needed"
        return DriftDecision(False, False, len(window), len(reference), reason=reason), None
    if len(window) < config.min_rows:
        reason = f"the window has {len(window)} rows; at least {config.min_rows} are needed"
        return DriftDecision(False, False, len(window), len(reference), reason=reason), None
    from imgclf.drift.evidently_report import run_report

    columns = _tested_columns(config, window, reference)
    use_embedding = "embedding" in config.signals and has_embeddings(reference) and has_embeddings(window)
    tests = sum(len(c) for c in columns.values())
    per_test = config.alpha / max(1, tests)
    values, snapshot = run_report(window, reference, columns, per_test, config.embedding_auc if use_embedding else None)
    signals = [
        SignalDrift(
            signal,
            min(values[c] for c in cols) < per_test,
            min(values[c] for c in cols),
            per_test,
            {c: values[c] for c in cols},
        )
        for signal, cols in columns.items()
        if cols
    ]
    if use_embedding:
        auc = values[EMBEDDING_COLUMN]
        signals.append(SignalDrift("embedding", auc > config.embedding_auc, auc, config.embedding_auc))
    drifted = any(s.drifted for s in signals)
    return DriftDecision(drifted, True, len(window), len(reference), tuple(signals)), snapshot
