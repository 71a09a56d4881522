"""Metrics per value of the user's extra manifest columns (site, scanner, ...), with the worst
subgroup called out: an average can hide a site where the model fails."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from imgclf.evaluate.stats import bootstrap_ci, metric_value


@dataclass
class SubgroupRow:
    column: str
    value: str
    n_images: int
    accuracy: float
    accuracy_ci_low: float
    accuracy_ci_high: float
    macro_f1: float


@dataclass
class SubgroupReport:
    rows: list[SubgroupRow] = field(default_factory=list)
    worst: dict[str, SubgroupRow] = field(default_factory=dict)  # column -> its lowest-accuracy subgroup
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it has no table
    min_images: int = 5


def subgroup_metrics(
    metadata: pd.DataFrame,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    *,
    min_images: int = 5,
    max_values: int = 50,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> SubgroupReport:
    """Accuracy (with a seeded bootstrap CI) and macro F1 per value of every column of `metadata`
    (rows aligned with `y_true`/`y_pred`). Missing values form their own subgroup, "(missing)".

    The worst subgroup of a column is the one with the lowest accuracy among those with at least
    `min_images` images (smaller ones are listed but too noisy to call out). A column with more than
    `max_values` distinct values (an id, a file name) is skipped with the reason."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if not len(metadata) == len(y_true) == len(y_pred):
        raise ValueError(
            f"subgroup_metrics: {len(metadata)} metadata rows, {len(y_true)} labels, {len(y_pred)} predictions"
        )
    report = SubgroupReport(min_images=min_images)
    for column in metadata.columns:
        values = metadata[column].astype("string").fillna("(missing)").to_numpy()
        distinct = pd.unique(values)
        why_not = _why_not_compared(distinct, max_values)
        if why_not:
            report.skipped[column] = why_not
            continue
        rows = [
            _subgroup_row(str(column), str(value), values == value, y_true, y_pred, n_classes, n_bootstrap, seed)
            for value in sorted(distinct, key=str)
        ]
        report.rows.extend(rows)
        eligible = [r for r in rows if r.n_images >= min_images]
        if eligible:
            report.worst[str(column)] = min(eligible, key=lambda r: (r.accuracy, -r.n_images))
        else:
            report.skipped[column] = (
                f"no subgroup has {min_images} or more test images: too small to call out a worst one"
            )
    return report


def _why_not_compared(distinct: np.ndarray, max_values: int) -> str:
    """Why a column with these distinct values gets no table ("" when it gets one)."""
    if len(distinct) > max_values:
        return f"{len(distinct)} distinct values (more than {max_values}): an identifier, not a subgroup"
    if len(distinct) < 2:
        return f"one value only ({distinct[0]!s}): nothing to compare" if len(distinct) else "no rows"
    return ""


def _subgroup_row(
    column: str,
    value: str,
    mask: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    n_bootstrap: int,
    seed: int,
) -> SubgroupRow:
    ci = bootstrap_ci("accuracy", y_true[mask], y_pred[mask], n=n_bootstrap, seed=seed, n_classes=n_classes)
    return SubgroupRow(
        column=column,
        value=value,
        n_images=int(mask.sum()),
        accuracy=ci["estimate"],
        accuracy_ci_low=ci["ci_low"],
        accuracy_ci_high=ci["ci_high"],
        macro_f1=metric_value("macro_f1", y_true[mask], y_pred[mask], n_classes),
    )
