"""The Evidently 0.7 report behind a drift decision: its own `Report`, `Dataset` and `DataDefinition`
(not the legacy API ZenML's integration wraps), with every column's type stated, so nothing is inferred
from the data."""

from __future__ import annotations

import warnings

import pandas as pd

from imgclf.drift.columns import CLASS_COLUMN, EMBEDDING_COLUMN, embedding_frame


def _frame(data: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = data[columns].reset_index(drop=True)
    if CLASS_COLUMN in out:
        out[CLASS_COLUMN] = out[CLASS_COLUMN].astype(str)
    return out


def run_report(
    window: pd.DataFrame,
    reference: pd.DataFrame,
    columns: dict[str, list[str]],
    threshold: float,
    embedding_auc: float | None,
):
    """({column: p-value, "embedding": ROC AUC}, snapshot). Kolmogorov-Smirnov for numbers and the total
    variation distance (permutation p-value) for the label, each column at `threshold`; the embedding by a
    domain classifier when `embedding_auc` is given."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    tested = [c for cols in columns.values() for c in cols]
    numeric = [c for c in tested if c != CLASS_COLUMN]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=[c for c in tested if c == CLASS_COLUMN])
    metrics = [ValueDrift(column=c, method="ks", threshold=threshold) for c in numeric]
    if CLASS_COLUMN in tested:
        metrics.append(ValueDrift(column=CLASS_COLUMN, method="TVD", threshold=threshold))
    current, ref = (Dataset.from_pandas(_frame(d, tested), data_definition=definition) for d in (window, reference))
    with warnings.catch_warnings():  # Evidently's own deprecation chatter
        warnings.simplefilter("ignore")
        snapshot = Report(metrics).run(current, ref)
    values = [item["value"] for item in snapshot.dict()["metrics"]]
    names = numeric + ([CLASS_COLUMN] if CLASS_COLUMN in tested else [])
    scores = {name: float(value) for name, value in zip(names, values, strict=True)}
    if embedding_auc is not None:
        scores[EMBEDDING_COLUMN] = embedding_drift_auc(window, reference, embedding_auc)
    return scores, snapshot


def embedding_drift_auc(window: pd.DataFrame, reference: pd.DataFrame, threshold: float) -> float:
    """ROC AUC of Evidently's domain classifier (ModelDriftMethod, fixed seeds) telling the window's
    embeddings from the reference's. Called directly: the report's embedding widget runs t-SNE, which
    took minutes on two cores for a few hundred rows."""
    from evidently.metrics.embeddings import ModelDriftMethod

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score, _, _ = ModelDriftMethod(threshold=threshold, bootstrap=False)(
            embedding_frame(window.reset_index(drop=True)), embedding_frame(reference.reset_index(drop=True))
        )
    return float(score)
