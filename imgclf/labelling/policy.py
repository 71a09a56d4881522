"""What the queue accepts and how much it keeps: the uncertainty signal and its threshold, the quotas,
and the limits that bound what is stored (items, bytes, age) and the size of each kept image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# a prediction is uncertain enough when margin <= threshold, or normalised entropy >= threshold
DEFAULT_THRESHOLDS = {"margin": 0.25, "entropy": 0.5}


class QueuePolicy(BaseModel):
    """The queue's settings. `signal` "margin" takes predictions whose top-1 minus top-2 probability is at
    most `threshold`; "entropy" takes those whose entropy divided by log(classes) (0..1) is at least it."""

    model_config = ConfigDict(extra="forbid")

    signal: Literal["margin", "entropy"] = "margin"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # None: DEFAULT_THRESHOLDS[signal]
    per_class_quota: int = Field(default=200, ge=1)  # most items queued per predicted class
    max_items: int = Field(default=2000, ge=1)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)  # of the re-encoded PNGs together
    max_age_days: float = Field(default=30.0, gt=0)  # older items are deleted on every offer
    max_side: int = Field(default=512, ge=8, le=4096)  # longer side of a kept image, px (downscaled)

    @model_validator(mode="after")
    def _threshold(self) -> QueuePolicy:
        if self.threshold is None:
            self.threshold = DEFAULT_THRESHOLDS[self.signal]
        return self

    def accepts(self, signals: Signals) -> bool:
        """Uncertain enough by the chosen signal."""
        if self.signal == "margin":
            return signals.margin <= self.threshold
        return signals.entropy >= self.threshold


@dataclass(frozen=True)
class Signals:
    """One prediction's uncertainty: margin = top-1 minus top-2 probability (0: a tie), entropy =
    Shannon entropy over log(classes) (1: uniform)."""

    margin: float
    entropy: float


def uncertainty(probabilities: Sequence[float] | np.ndarray) -> Signals:
    """Margin and normalised entropy of one single-label prediction (softmax probabilities, summing to 1)."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if p.size < 2:
        raise ValueError(f"need the probabilities of at least 2 classes, got {p.size}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or abs(p.sum() - 1.0) > 1e-3:
        raise ValueError("probabilities must be finite, non-negative and sum to 1 (a softmax)")
    top2 = np.sort(p)[-2:]
    nonzero = p[p > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / math.log(p.size))
    return Signals(margin=float(top2[1] - top2[0]), entropy=min(max(entropy, 0.0), 1.0))
