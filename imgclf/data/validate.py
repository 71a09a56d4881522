"""Validation: per-file image checks, then a Great Expectations 1.x suite on the manifest.

1. Every file is read and decoded once (`check_images`); an unusable one is quarantined with the
   reason from `imgclf.data.decode` (or outside_root / not_a_file / unreadable / changed_since_ingest).
2. The readable rows go through the GX suite. Row-level checks name the rows they fail; those rows
   never train, whatever the severity: they are quarantined (no_label, unknown_class, label_conflict,
   too_large), except exact duplicates (same sha256 and label), which are kept once and listed with
   the copies they replace. Class-level checks (images per class, number of classes, imbalance) run
   on what is finally kept.
3. A failed check with severity "error" stops the run with a summary naming every failure;
   "warning" is reported and the run goes on.

Accounting, always: received == kept + quarantined + duplicates.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from imgclf.data.decode import DEFAULT_MAX_PIXELS, ImageRejected, open_image
from imgclf.data.ingest import resolve_inside
from imgclf.data.manifest import QUARANTINE_COLUMNS, DatasetManifest, Quarantine

CheckName = Literal[
    "labels_not_null",
    "labels_in_classes",
    "label_conflicts",
    "exact_duplicates",
    "image_size_range",
    "min_images_per_class",
    "min_classes",
    "class_imbalance",
]
Severity = Literal["error", "warning"]

DEFAULT_SEVERITY: dict[str, Severity] = {
    "labels_not_null": "warning",  # a stray file in the data root: quarantined, the run goes on
    "labels_in_classes": "error",  # a folder outside the declared class set is a setup mistake
    "label_conflicts": "error",  # the same image under two labels: the labels cannot be trusted
    "exact_duplicates": "warning",  # harmless once deduplicated, but worth knowing
    "image_size_range": "error",
    "min_images_per_class": "error",
    "min_classes": "error",
    "class_imbalance": "warning",
}

# Row-level check -> the quarantine reason given to the rows it fails (first match wins).
_ROW_REASONS = {
    "labels_not_null": "no_label",
    "labels_in_classes": "unknown_class",
    "label_conflicts": "label_conflict",
    "image_size_range": "too_large",
}
_EXAMPLES = 20  # files or classes named per failed check in the result (the full lists are artifacts)


class ValidationConfig(BaseModel):
    """Thresholds of the image checks and the suite, and each dataset check's severity."""

    model_config = ConfigDict(extra="forbid")

    min_size: int = Field(8, ge=1, description="smallest accepted image side in pixels (per file: too_small)")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="decompression-bomb cap (width*height); never decoded")
    max_size: int = Field(20_000, ge=1, description="largest accepted image side in pixels (image_size_range)")
    classes: list[str] | None = Field(None, description="expected class names; None accepts the folders found")
    min_images_per_class: int = Field(3, ge=1, description="fewer kept images in a class fails min_images_per_class")
    min_classes: int = Field(2, ge=1, description="fewer kept classes fails min_classes")
    max_imbalance_ratio: float = Field(
        10.0, ge=1.0, description="largest class / smallest class (kept images) above this fails class_imbalance"
    )
    severity: dict[CheckName, Severity] = Field(
        default_factory=lambda: dict(DEFAULT_SEVERITY),
        description="per check: error stops the run, warning reports and goes on; unnamed checks keep their default",
    )
    fail_on_suite_error: bool = Field(True, description="false: failed error checks are reported, the run goes on")

    @field_validator("severity")
    @classmethod
    def _merge_defaults(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        return {**DEFAULT_SEVERITY, **value}

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value) or "" in value):
            raise ValueError(f"classes must be distinct, non-empty names, got {value}")
        return value

    @model_validator(mode="after")
    def _size_order(self) -> "ValidationConfig":
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) is below min_size ({self.min_size})")
        return self


class DataValidationError(ValueError):
    """The dataset as a whole failed validation; the message names each failed check and its files."""


@dataclass
class SuiteResult:
    """The `data_validation` artifact: one row per GX expectation, the file accounting, and the
    exact duplicates that were dropped (each with the copy that was kept)."""

    success: bool  # every expectation passed, warnings included
    checks: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # received, kept, quarantined, duplicates
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    duplicates: list[dict[str, str]] = field(default_factory=list)  # kept, duplicate, sha256, label
    fail_on_error: bool = True

    def failures(self, severity: Severity | None = None) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"] and severity in (None, c["severity"])]

    @property
    def stops_run(self) -> bool:
        """A check with severity error failed and the config lets errors stop the run."""
        return self.fail_on_error and bool(self.failures("error"))

    def verdict(self) -> str:
        errors, warns = len(self.failures("error")), len(self.failures("warning"))
        if errors:
            outcome = "FAILED (run stopped)" if self.fail_on_error else "FAILED (errors reported, run not stopped)"
            return f"{outcome}: {errors} error(s), {warns} warning(s)"
        return f"PASSED with {warns} warning(s)" if warns else "PASSED"

    def accounting(self) -> str:
        c = self.counts
        return (
            f"received {c.get('received', 0)} = kept {c.get('kept', 0)} + quarantined {c.get('quarantined', 0)}"
            f" + duplicates {c.get('duplicates', 0)}"
        )

    def summary(self) -> str:
        """One line per check, for logs."""
        return "\n".join(_check_line(c) for c in self.checks)

    def failure_report(self, root: str = "") -> str:
        """The error message when the run stops: verdict, accounting and every failed check."""
        where = f" for {root}" if root else ""
        lines = [f"data validation {self.verdict()}{where}", f"  {self.accounting()}"]
        if self.quarantine_reasons:
            lines.append(f"  quarantine reasons: {self.quarantine_reasons}")
        lines += [f"  {_check_line(c)}" for c in self.failures("error") + self.failures("warning")]
        return "\n".join(lines)

    def raise_for_errors(self, root: str = "") -> None:
        if self.stops_run:
            raise DataValidationError(self.failure_report(root))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SuiteResult":
        return cls(**data)

    def to_html(self) -> str:
        """A self-contained page (ZenML dashboard, MLflow artifact): verdict, accounting, each
        expectation with pass/fail, severity, observed value, threshold and the files it names."""
        colour = "#b00020" if self.failures("error") else "#b26a00" if self.failures("warning") else "#1b5e20"
        rows = []
        for c in self.checks:
            status = "pass" if c["success"] else f"FAIL ({c['severity']})"
            tone = "" if c["success"] else (" class='error'" if c["severity"] == "error" else " class='warning'")
            named = ", ".join(html.escape(str(x)) for x in c["unexpected"])
            if c["unexpected_count"] > len(c["unexpected"]):
                named += f" … ({c['unexpected_count']} in all)"
            rows.append(
                f"<tr{tone}><td>{html.escape(c['check'])}</td><td>{status}</td><td>{c['severity']}</td>"
                f"<td><code>{html.escape(c['expectation'])}</code>({html.escape(c['column'])})</td>"
                f"<td>{html.escape(_plain_text(c['observed']))}</td><td>{html.escape(c['threshold'])}</td>"
                f"<td>{named}</td></tr>"
            )
        reasons = ", ".join(f"{html.escape(k)}: {v}" for k, v in self.quarantine_reasons.items()) or "none"
        shown = self.duplicates[:500]
        dup_rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(d[k]))}</td>" for k in ("kept", "duplicate", "label")) + "</tr>"
            for d in shown
        )
        more = f"<p>… and {len(self.duplicates) - len(shown)} more</p>" if len(self.duplicates) > len(shown) else ""
        duplicates = (
            f"<h3>Exact duplicates ({len(self.duplicates)}): kept once, copies dropped</h3>"
            f"<table><tr><th>kept</th><th>duplicate (dropped)</th><th>label</th></tr>{dup_rows}</table>{more}"
            if self.duplicates
            else "<h3>Exact duplicates: none</h3>"
        )
        return (
            "<html><head><meta charset='utf-8'><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
            "text-align:left;vertical-align:top}tr.error{background:#fde7e9}tr.warning{background:#fff4e0}"
            "</style></head><body>"
            f"<h2 style='color:{colour}'>Data validation {html.escape(self.verdict())}</h2>"
            f"<p>{html.escape(self.accounting())}</p><p>quarantine reasons: {reasons}</p>"
            "<table><tr><th>check</th><th>result</th><th>severity</th><th>expectation</th><th>observed</th>"
            f"<th>threshold</th><th>files / classes</th></tr>{''.join(rows)}</table>{duplicates}</body></html>"
        )


def check_images(
    manifest: DatasetManifest, config: ValidationConfig, workers: int | None = None
) -> tuple[DatasetManifest, Quarantine]:
    """The per-file half of `validate`: (readable images, quarantined files). Labels are not checked."""
    readable, rejected = _check_files(manifest, config, workers)
    return DatasetManifest(manifest.root, readable), Quarantine(rejected.reset_index(drop=True))


def _check_files(
    manifest: DatasetManifest, config: ValidationConfig, workers: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and decode every file once, in parallel. Returns (readable rows, rejected rows).

    Readable rows carry the sha256 of the bytes that were decoded. Rejected rows are quarantine
    records (path, reason, detail) with the manifest's index, so the caller can keep file order.
    """
    root = Path(manifest.root)
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    chunk = 2048  # rows in flight at once: memory stays flat however many files there are
    results: list[tuple[str | None, str, str]] = []
    with warnings.catch_warnings():  # PIL warns about odd EXIF/TIFF tags; the verdict is what counts
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(manifest.records), chunk):
                rows = manifest.records.iloc[start : start + chunk].to_dict("records")
                results.extend(pool.map(lambda row: _check_file(root, row, config), rows))
    records = manifest.records.copy()
    records["sha256"] = [sha for _, _, sha in results]
    rejected_mask = [reason is not None for reason, _, _ in results]
    rejected = pd.DataFrame(
        [(path, reason, detail) for path, (reason, detail, _) in zip(records["path"], results) if reason is not None],
        columns=QUARANTINE_COLUMNS,
        index=records.index[rejected_mask],
    )
    return records[[not r for r in rejected_mask]], rejected


def _check_file(root: Path, row: dict, config: ValidationConfig) -> tuple[str | None, str, str]:
    """(reason or None, detail, sha256) for one file. Never raises: a bad file is a verdict, not a crash."""
    sha = row["sha256"] if isinstance(row["sha256"], str) else ""
    real = resolve_inside(root, row["path"])
    if real is None:
        return "outside_root", "path or link resolves outside the data root; not read", sha
    if not real.is_file():
        return "not_a_file", "path is not a regular file", sha
    try:
        data = real.read_bytes()
    except OSError as exc:
        return "unreadable", f"cannot read the file ({exc})", sha
    actual = hashlib.sha256(data).hexdigest()
    if sha and sha != actual:
        return "changed_since_ingest", f"content hash {actual[:12]}… differs from {sha[:12]}… recorded at ingest", sha
    try:
        open_image(data, max_pixels=config.max_pixels, min_size=config.min_size)
    except ImageRejected as exc:
        return exc.reason, exc.detail, actual
    except Exception as exc:  # a decoder bug must neither stop the run nor lose the file
        return "corrupt", f"unexpected decoder error ({type(exc).__name__}: {exc})", actual
    return None, "", actual


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
            return f"label {row.label!r}: {_short(outside)} not among the configured classes {_short(classes)}"
        if check == "label_conflicts":
            labels = sorted({lbl for _, lbl in copies[row.sha256]})
            others = [f"{p} ({lbl})" for p, lbl in copies[row.sha256] if p != row.path]
            return (
                f"the same image (sha256 {row.sha256[:12]}…) is labelled {', '.join(labels)} across its copies;"
                f" the other copies: {_short(others)}"
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
    table = {"kept": keeper[copies.index], "duplicate": copies["path"], "sha256": copies["sha256"], "label": copies["label"]}
    return pd.DataFrame(table, columns=["kept", "duplicate", "sha256", "label"])


def run_suite(
    images: pd.DataFrame, label_rows: pd.DataFrame, kept_label_rows: pd.DataFrame, classes: list[str],
    config: ValidationConfig,
) -> list[dict[str, Any]]:
    """The GX suite (ephemeral context, nothing written), as plain check records.

    `images` are the readable rows (label None when missing, plus `labels_per_sha256`); `label_rows`
    and `kept_label_rows` hold one (path, label) row per class of each labelled / kept image (a
    multi-label image has several), for the class-set check and the class-level checks.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe

    found = sorted(set(classes) | set(kept_label_rows["label"]))
    counts = kept_label_rows.groupby("label")["path"].count().reindex(found, fill_value=0)
    per_class = pd.DataFrame({"label": counts.index.astype(str), "images": counts.to_numpy(dtype=np.int64)})
    per_class["imbalance"] = (per_class["images"].max() / per_class["images"]).where(per_class["images"] > 0)

    def expect(kind, check: str, threshold: str, **kwargs):
        gx_severity = "critical" if config.severity[check] == "error" else "warning"
        return getattr(gxe, kind)(severity=gx_severity, meta={"check": check, "threshold": threshold}, **kwargs)

    sides = f"{config.min_size}..{config.max_size} px"
    suites = {
        "images": (
            images,
            "path",
            [
                expect("ExpectColumnValuesToNotBeNull", "labels_not_null", "every file has a label", column="label"),
                expect("ExpectColumnValuesToBeBetween", "label_conflicts", "one label per sha256",
                       column="labels_per_sha256", max_value=1),
                expect("ExpectCompoundColumnsToBeUnique", "exact_duplicates", "unique (sha256, label)",
                       column_list=["sha256", "label"], ignore_row_if="any_value_is_missing"),
                expect("ExpectColumnValuesToBeBetween", "image_size_range", sides,
                       column="width", min_value=config.min_size, max_value=config.max_size),
                expect("ExpectColumnValuesToBeBetween", "image_size_range", sides,
                       column="height", min_value=config.min_size, max_value=config.max_size),
            ],
        ),
        "labels": (
            label_rows,
            "path",
            [
                expect("ExpectColumnValuesToBeInSet", "labels_in_classes", f"in {_short(classes)}",
                       column="label", value_set=classes),
            ],
        ),
        "kept": (
            kept_label_rows,
            "path",
            [
                expect("ExpectColumnUniqueValueCountToBeBetween", "min_classes", f">= {config.min_classes} classes",
                       column="label", min_value=config.min_classes),
            ],
        ),
        "class_counts": (
            per_class,
            "label",
            [
                expect("ExpectColumnValuesToBeBetween", "min_images_per_class",
                       f">= {config.min_images_per_class} images",
                       column="images", min_value=config.min_images_per_class),
                expect("ExpectColumnMaxToBeBetween", "class_imbalance",
                       f"largest/smallest <= {config.max_imbalance_ratio:g}",
                       column="imbalance", max_value=config.max_imbalance_ratio),
            ],
        ),
    }

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas("imgclf")
    checks: list[dict[str, Any]] = []
    for name, (frame, id_column, expectations) in suites.items():
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        result = definition.run(
            batch_parameters={"dataframe": frame.reset_index(drop=True)},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [id_column]},
        )
        by_id = {r.expectation_config.id: r for r in result.results}
        for expectation in suite.expectations:  # suite order, not GX's result order
            checks.append(_check_record(name, by_id[expectation.id], id_column, config))
    return checks


def _check_record(suite: str, r: Any, id_column: str, config: ValidationConfig) -> dict[str, Any]:
    cfg = r.expectation_config
    res = r.result or {}
    kwargs = cfg.kwargs
    unexpected = [str(row[id_column]) for row in res.get("unexpected_index_list") or []]
    if "observed_value" in res:
        observed: Any = _plain(res["observed_value"])
    elif "element_count" in res:
        observed = f"{res.get('unexpected_count', 0)} of {res['element_count']} rows unexpected"
    else:
        observed = None
    exception = (r.exception_info or {}).get("exception_message") if not r.success else None
    if exception:
        observed = f"GX could not evaluate: {exception}"
    return {
        "suite": suite,
        "check": cfg.meta["check"],
        "severity": config.severity[cfg.meta["check"]],
        "expectation": cfg.type,
        "column": kwargs.get("column") or ",".join(kwargs.get("column_list") or []),
        "success": bool(r.success),
        "observed": observed,
        "threshold": cfg.meta["threshold"],
        "unexpected_count": int(res.get("unexpected_count", len(unexpected)) or 0),
        "unexpected": unexpected[:_EXAMPLES],
    }


def validate(
    manifest: DatasetManifest, config: ValidationConfig, *, raise_on_error: bool = True
) -> tuple[DatasetManifest, Quarantine, SuiteResult]:
    """Image checks, then the dataset suite. Returns (kept manifest, quarantine, suite result).

    With `raise_on_error` (the default) a failed error check raises DataValidationError naming every
    failure; callers that want to publish the result first pass False and call
    `suite.raise_for_errors()` themselves.
    """
    readable, rejected = _check_files(manifest, config)
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

    counts = dict(received=len(manifest), kept=len(kept), quarantined=len(quarantine), duplicates=len(duplicates))
    if counts["received"] != counts["kept"] + counts["quarantined"] + counts["duplicates"]:
        raise RuntimeError(f"validation lost track of files: {counts}")  # a bug here, never bad input

    checks = run_suite(images, label_rows, _label_rows(kept.records), classes, config)
    suite = SuiteResult(
        success=all(c["success"] for c in checks),
        checks=checks,
        counts=counts,
        quarantine_reasons=quarantine.reasons(),
        duplicates=duplicates.to_dict("records"),
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


def _check_line(c: dict[str, Any]) -> str:
    status = "PASS" if c["success"] else ("ERROR" if c["severity"] == "error" else "WARNING")
    line = (
        f"{status} {c['check']} [{c['severity']}]: {c['expectation']}({c['column']}) "
        f"observed {_plain_text(c['observed'])}, expected {c['threshold']}"
    )
    if not c["success"] and c["unexpected"]:
        hidden = c["unexpected_count"] - len(c["unexpected"])
        line += f"; {', '.join(c['unexpected'])}" + (f" (+{hidden} more)" if hidden > 0 else "")
    return line


def _plain(value: Any) -> Any:
    """GX observed values as JSON-safe Python (numpy scalars, NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 4)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _plain_text(value: Any) -> str:
    return "n/a" if value is None else str(value)


def _short(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}]"
