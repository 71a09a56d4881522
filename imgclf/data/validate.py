"""Validation: per-file image checks, then a Great Expectations 1.x suite on the manifest.

1. Every file is read and decoded once (`imgclf.data.file_checks`); an unusable one is quarantined
   with its reason.
2. The readable rows go through the GX suite (`imgclf.data.gx_suite`). Row-level checks name the rows
   they fail; those rows never train, whatever the severity: they are quarantined (no_label,
   unknown_class, label_conflict, too_large), except exact duplicates (same sha256 and label), which
   are kept once and listed with the copies they replace. Class-level checks (images per class,
   number of classes, imbalance) run on what is finally kept.
3. A failed check with severity "error" stops the run with a summary naming every failure;
   "warning" is reported and the run goes on.

Accounting, always: received == kept + quarantined + duplicates.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from imgclf.data.file_checks import check_files
from imgclf.data.gx_suite import run_suite
from imgclf.data.manifest import QUARANTINE_COLUMNS, DatasetManifest, Quarantine
from imgclf.data.validation_config import ValidationConfig
from imgclf.data.validation_result import Duplicate, SuiteResult, short

# Row-level check -> the quarantine reason given to the rows it fails (first match wins).
_ROW_REASONS = {
    "labels_not_null": "no_label",
    "labels_in_classes": "unknown_class",
    "label_conflicts": "label_conflict",
    "image_size_range": "too_large",
}
QUARANTINE_LISTED = 20  # quarantined files named on the console; the quarantine artifact lists them all


def _row_verdicts(
    frame: pd.DataFrame, label_rows: pd.DataFrame, classes: list[str], config: ValidationConfig
) -> pd.DataFrame:
    """Quarantine records for readable rows that fail a row-level check (first reason wins)."""
    label = frame["label"]
    sides = frame[["width", "height"]]
    unknown = label_rows[~label_rows["label"].isin(classes)]
    failing = {
        "labels_not_null": label.isna(),
        "labels_in_classes": pd.Series(frame.index.isin(unknown.index), index=frame.index),
        "label_conflicts": frame["labels_per_sha256"] > 1,
        "image_size_range": (sides > config.max_size).any(axis=1) | (sides < config.min_size).any(axis=1),
    }
    copies: dict[str, list[tuple[str, Any]]] = {}
    for path, sha, lbl in frame.loc[failing["label_conflicts"], ["path", "sha256", "label"]].itertuples(index=False):
        copies.setdefault(sha, []).append((path, lbl))

    def detail(check: str, row: Any) -> str:
        if check == "labels_not_null":
            return "the file has no label (files directly in the data root have none)"
        if check == "labels_in_classes":
            outside = sorted(set(unknown.loc[[row.Index], "label"]))
            return f"label {row.label!r}: {short(outside)} not among the configured classes {short(classes)}"
        if check == "label_conflicts":
            labels = sorted({lbl for _, lbl in copies[row.sha256]})
            others = [f"{p} ({lbl})" for p, lbl in copies[row.sha256] if p != row.path]
            return (
                f"the same image (sha256 {row.sha256[:12]}…) is labelled {', '.join(labels)} across its copies;"
                f" the other copies: {short(others)}"
            )
        return f"{row.width}x{row.height} is outside the accepted sides {config.min_size}..{config.max_size} px"

    records: dict[Any, tuple[str, str, str]] = {}
    for check, mask in failing.items():
        for row in frame[mask.to_numpy()].itertuples():
            if row.Index not in records:
                records[row.Index] = (row.path, _ROW_REASONS[check], detail(check, row))
    return pd.DataFrame(list(records.values()), columns=QUARANTINE_COLUMNS, index=list(records.keys()))


def find_duplicates(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with the same sha256 and label: the lexicographically first path is kept, the others are
    copies. Returns one row per copy (kept, duplicate, sha256, label), indexed like `frame`."""
    ordered = frame.sort_values("path", kind="stable")
    keeper = ordered.groupby(["sha256", "label"], dropna=False)["path"].transform("first")
    copies = ordered[ordered["path"] != keeper]
    table = {
        "kept": keeper[copies.index],
        "duplicate": copies["path"],
        "sha256": copies["sha256"],
        "label": copies["label"],
    }
    return pd.DataFrame(table, columns=["kept", "duplicate", "sha256", "label"])


def validate(
    manifest: DatasetManifest, config: ValidationConfig, *, raise_on_error: bool = True
) -> tuple[DatasetManifest, Quarantine, SuiteResult]:
    """Image checks, then the dataset suite. Returns (kept manifest, quarantine, suite result).

    With `raise_on_error` (the default) a failed error check raises DataValidationError naming every
    failure; callers that want to publish the result first pass False and call
    `suite.raise_for_errors()` themselves.
    """
    readable, rejected = check_files(manifest, config)
    images = readable.copy()
    images["label"] = images["label"].map(lambda v: None if pd.isna(v) or not str(v).strip("|") else str(v))
    label_rows = _label_rows(images)
    classes = list(config.classes) if config.classes is not None else sorted(label_rows["label"].unique())
    # distinct labels of each row's content; unlabelled rows are in no conflict (no_label covers them)
    labels_per_sha256 = images.groupby("sha256")["label"].transform("nunique")
    images["labels_per_sha256"] = labels_per_sha256.where(images["label"].notna())

    failed_rows = _row_verdicts(images, label_rows, classes, config)
    survivors = images.drop(index=failed_rows.index)
    duplicates = find_duplicates(survivors)
    kept_rows = survivors.drop(index=duplicates.index).drop(columns="labels_per_sha256").sort_index()
    kept = DatasetManifest(manifest.root, kept_rows)
    quarantined = pd.concat([f for f in (rejected, failed_rows) if len(f)] or [rejected])
    quarantine = Quarantine(quarantined.sort_index().reset_index(drop=True))  # in the manifest's file order

    counts = {
        "received": len(manifest),
        "kept": len(kept),
        "quarantined": len(quarantine),
        "duplicates": len(duplicates),
    }
    if counts["received"] != counts["kept"] + counts["quarantined"] + counts["duplicates"]:
        raise RuntimeError(f"validation lost track of files: {counts}")  # a bug here, never bad input

    checks = run_suite(images, label_rows, _label_rows(kept.records), classes, config)
    suite = SuiteResult(
        success=all(c.success for c in checks),
        checks=checks,
        counts=counts,
        quarantine_reasons=quarantine.reasons(),
        duplicates=[Duplicate(**row) for row in duplicates.to_dict("records")],
        fail_on_error=config.fail_on_suite_error,
    )
    if raise_on_error:
        suite.raise_for_errors(manifest.root)
    return kept, quarantine, suite


def _label_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """(path, label) once per class of each labelled row, indexed like `frame`: a multi-label row
    (see DatasetManifest.label_sets) counts towards each of its classes."""
    labelled = frame[frame["label"].notna()]
    sets = DatasetManifest("", labelled).label_sets() if len(labelled) else []
    rows = pd.DataFrame({"path": labelled["path"], "label": pd.Series(sets, index=labelled.index, dtype=object)})
    return rows.explode("label").dropna(subset=["label"])


def console_report(
    suite: SuiteResult, quarantine: Quarantine, listed: int = QUARANTINE_LISTED
) -> list[tuple[int, str]]:
    """(log level, line) pairs for the console: the verdict with the accounting, each failed check, and
    the first `listed` quarantined files. Passed checks and the full lists stay in the artifacts."""
    lines = [(logging.INFO, f"data validation {suite.verdict()}; {suite.accounting()}")]
    lines += [
        (logging.ERROR if c.severity == "error" else logging.WARNING, c.line())
        for c in suite.failures("error") + suite.failures("warning")
    ]
    if len(quarantine):
        lines.append((logging.WARNING, f"quarantined {len(quarantine)} file(s): {quarantine.reasons()}"))
        for row in quarantine.records.head(listed).itertuples():
            lines.append((logging.WARNING, f"  {row.path}: {row.reason} ({row.detail})"))
        if len(quarantine) > listed:
            lines.append((logging.WARNING, f"  ... and {len(quarantine) - listed} more (quarantine artifact)"))
    return lines
