"""Metrics per value of the user's extra manifest columns (site, scanner, ...), with the worst
subgroup called out: an average can hide a site where the model fails."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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

    def to_dict(self) -> dict:
        return asdict(self)


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
        raise ValueError(f"subgroup_metrics: {len(metadata)} metadata rows, {len(y_true)} labels, {len(y_pred)} predictions")
    report = SubgroupReport(min_images=min_images)
    for column in metadata.columns:
        values = metadata[column].astype("string").fillna("(missing)").to_numpy()
        distinct = pd.unique(values)
        if len(distinct) > max_values:
            report.skipped[column] = f"{len(distinct)} distinct values (more than {max_values}): an identifier, not a subgroup"
            continue
        if len(distinct) < 2:
            report.skipped[column] = f"one value only ({distinct[0]!s}): nothing to compare" if len(distinct) else "no rows"
            continue
        rows = []
        for value in sorted(distinct, key=str):
            mask = values == value
            ci = bootstrap_ci("accuracy", y_true[mask], y_pred[mask], n=n_bootstrap, seed=seed, n_classes=n_classes)
            rows.append(SubgroupRow(
                column=str(column), value=str(value), n_images=int(mask.sum()), accuracy=ci["estimate"],
                accuracy_ci_low=ci["ci_low"], accuracy_ci_high=ci["ci_high"],
                macro_f1=metric_value("macro_f1", y_true[mask], y_pred[mask], n_classes),
            ))
        report.rows.extend(rows)
        eligible = [r for r in rows if r.n_images >= min_images]
        if eligible:
            report.worst[str(column)] = min(eligible, key=lambda r: (r.accuracy, -r.n_images))
        else:
            report.skipped[column] = f"no subgroup has {min_images} or more test images: too small to call out a worst one"
    return report
