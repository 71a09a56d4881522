"""The shards put back together, and the count checked: every listed input is in the merged predictions
exactly once (predicted or rejected with a reason), or the batch fails naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from imgclf.batch.classify import PREDICTED, PREDICTION_COLUMNS, REJECTED
from imgclf.batch.shards import ShardPlan
from imgclf.monitoring.record import COLUMNS


class BatchIncomplete(RuntimeError):
    """The merged predictions do not account for every input exactly once."""


class BatchSummary(BaseModel):
    """What a batch did: inputs listed, predicted and rejected (by reason), over how many shards, by which
    model version(s), and where the merged files are."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    total: int
    predicted: int
    rejected: int
    reasons: dict[str, int]
    shards: int
    model_versions: tuple[str, ...]
    predictions_path: str | None = None
    monitoring_path: str | None = None

    def line(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons.items())) or "none"
        return (
            f"{self.total} inputs over {self.shards} shards: {self.predicted} predicted, "
            f"{self.rejected} rejected ({reasons}); model {', '.join(self.model_versions)}"
        )


def merge(
    plan: ShardPlan, predictions: list[pd.DataFrame], monitoring: list[pd.DataFrame]
) -> tuple[pd.DataFrame, pd.DataFrame, BatchSummary]:
    """(merged predictions sorted by file, merged monitoring rows, summary); BatchIncomplete when an input
    is missing, repeated or unknown."""
    merged = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame(columns=PREDICTION_COLUMNS)
    merged = merged.sort_values("file", ignore_index=True)
    check_accounted(plan, merged)
    rows = [frame for frame in monitoring if len(frame)]
    logged = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(COLUMNS))
    predicted = int((merged["status"] == PREDICTED).sum())
    if len(logged) != predicted:
        raise BatchIncomplete(f"{predicted} images predicted but {len(logged)} monitoring rows")
    rejected = merged[merged["status"] == REJECTED]
    summary = BatchSummary(
        total=len(merged),
        predicted=predicted,
        rejected=len(rejected),
        reasons={str(k): int(v) for k, v in rejected["error_reason"].value_counts().items()},
        shards=len(plan.shards),
        model_versions=tuple(sorted(set(merged["model_version"].astype(str)))),
    )
    return merged, logged, summary


def check_accounted(plan: ShardPlan, merged: pd.DataFrame) -> None:
    listed = set(plan.source.files)
    counts = merged["file"].value_counts()
    missing = sorted(listed - set(counts.index))
    repeated = sorted(counts[counts > 1].index)
    unknown = sorted(set(counts.index) - listed)
    unstatused = merged[~merged["status"].isin((PREDICTED, REJECTED))]["file"].tolist()
    problems = [
        f"{len(items)} {what} (first: {', '.join(map(str, items[:5]))})"
        for what, items in (
            ("inputs missing", missing),
            ("inputs repeated", repeated),
            ("unlisted files", unknown),
            ("rows neither predicted nor rejected", unstatused),
        )
        if items
    ]
    if problems:
        raise BatchIncomplete(f"the batch of {plan.total} inputs is not accounted for: {'; '.join(problems)}")


def write_merged(folder: str | Path, predictions: pd.DataFrame, monitoring: pd.DataFrame, summary: BatchSummary):
    """predictions.parquet, monitoring.parquet and summary.json in `folder`; the summary with their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(folder / "predictions.parquet", index=False)
    monitoring.to_parquet(folder / "monitoring.parquet", index=False)
    summary = summary.model_copy(
        update={
            "predictions_path": str(folder / "predictions.parquet"),
            "monitoring_path": str(folder / "monitoring.parquet"),
        }
    )
    (folder / "summary.json").write_text(summary.model_dump_json(indent=2))
    return summary


def read_shards(folder: str | Path) -> tuple[list[pd.DataFrame], list[pd.DataFrame]]:
    """The predictions-*.parquet and monitoring-*.parquet a run of ShardOutput.write left in `folder`."""
    folder = Path(folder)
    read = lambda pattern: [pd.read_parquet(p) for p in sorted(folder.glob(pattern))]  # noqa: E731
    return read("predictions-*.parquet"), read("monitoring-*.parquet")
