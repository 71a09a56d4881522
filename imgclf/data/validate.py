"""Validation: per-file image checks (quarantine with a reason) and a Great Expectations suite on the
manifest of kept images. Nothing is dropped silently: `kept + quarantined == received`."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from imgclf.data.decode import DEFAULT_MAX_PIXELS, ImageRejected, open_image
from imgclf.data.ingest import resolve_inside
from imgclf.data.manifest import QUARANTINE_COLUMNS, DatasetManifest, Quarantine


class ValidationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_size: int = Field(8, ge=1, description="smallest accepted image side in pixels")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="decompression-bomb cap (width*height), never decoded")
    max_size: int = Field(20_000, ge=1, description="largest accepted image side in pixels")
    classes: list[str] | None = Field(None, description="expected class names; None accepts the folders found")
    min_images_per_class: int = Field(3, ge=1)
    fail_on_suite_error: bool = Field(True, description="a failed GX expectation stops the run")


class DataValidationError(ValueError):
    """The dataset as a whole failed validation; the message names each failed check."""


@dataclass
class SuiteResult:
    """The outcome of the GX suite, in plain data (one row per expectation)."""

    success: bool
    checks: list[dict[str, Any]] = field(default_factory=list)

    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["success"]]

    def summary(self) -> str:
        lines = [f"{'PASS' if c['success'] else 'FAIL'} {c['expectation']}({c['column']}) {c['observed']}" for c in self.checks]
        return "\n".join(lines)


def check_images(
    manifest: DatasetManifest, config: ValidationConfig, workers: int | None = None
) -> tuple[DatasetManifest, Quarantine]:
    """Decode every file once; split the manifest into kept rows and a quarantine list."""
    root = Path(manifest.root)
    rows = manifest.records.to_dict("records")
    workers = workers or min(8, (os.cpu_count() or 2) * 2)

    def verdict(row: dict) -> tuple[str, str] | None:
        if not row["label"]:
            return ("no_label", "file is not inside a class folder")
        real = resolve_inside(root, row["path"])
        if real is None:
            return ("outside_root", "path or link resolves outside the data root; not read")
        if not real.is_file():
            return ("not_a_file", "path is not a regular file")
        try:
            open_image(real, max_pixels=config.max_pixels, min_size=config.min_size)
        except ImageRejected as exc:
            return (exc.reason, exc.detail)
        except OSError as exc:
            return ("unreadable", str(exc))
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(verdict, rows))
    kept_mask = [v is None for v in verdicts]
    rejected = [
        {"path": row["path"], "reason": v[0], "detail": v[1]} for row, v in zip(rows, verdicts) if v is not None
    ]
    kept = DatasetManifest(manifest.root, manifest.records[kept_mask])
    quarantine = Quarantine(pd.DataFrame(rejected, columns=QUARANTINE_COLUMNS))
    assert len(kept) + len(quarantine) == len(manifest), "validation lost rows"
    return kept, quarantine


def run_suite(manifest: DatasetManifest, config: ValidationConfig) -> SuiteResult:
    """Great Expectations 1.x suite on the kept manifest (ephemeral context, nothing written)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe

    df = manifest.records.copy()
    counts = df.groupby("label")["path"].count().rename("images").reset_index()
    classes = config.classes if config.classes is not None else sorted(df["label"].astype(str).unique())

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas("imgclf")
    per_image = context.suites.add(
        gx.ExpectationSuite(
            name="manifest",
            expectations=[
                gxe.ExpectColumnValuesToNotBeNull(column="label"),
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
                gxe.ExpectColumnValuesToBeUnique(column="path"),
                gxe.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
                gxe.ExpectColumnValuesToBeBetween(column="width", min_value=config.min_size, max_value=config.max_size),
                gxe.ExpectColumnValuesToBeBetween(column="height", min_value=config.min_size, max_value=config.max_size),
            ],
        )
    )
    per_class = context.suites.add(
        gx.ExpectationSuite(
            name="class_counts",
            expectations=[
                gxe.ExpectColumnValuesToBeBetween(column="images", min_value=config.min_images_per_class),
                gxe.ExpectTableRowCountToBeBetween(min_value=2),
            ],
        )
    )
    checks: list[dict[str, Any]] = []
    for suite, frame in ((per_image, df), (per_class, counts)):
        batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all")
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=suite.name, data=batch, suite=suite))
        result = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
        for r in result.results:
            res = r.result or {}
            observed = res.get("observed_value")
            if observed is None:
                observed = {"unexpected": res.get("unexpected_count", 0), "examples": res.get("partial_unexpected_list", [])[:5]}
            checks.append(
                {
                    "suite": suite.name,
                    "expectation": r.expectation_config.type,
                    "column": r.expectation_config.kwargs.get("column", ""),
                    "success": bool(r.success),
                    "observed": observed,
                }
            )
    return SuiteResult(success=all(c["success"] for c in checks), checks=checks)


def validate(manifest: DatasetManifest, config: ValidationConfig) -> tuple[DatasetManifest, Quarantine, SuiteResult]:
    """Image checks, then the dataset suite. Raises DataValidationError naming failed checks if configured to."""
    kept, quarantine = check_images(manifest, config)
    if len(kept) == 0:
        raise DataValidationError(
            f"no usable images in {manifest.root}: all {len(manifest)} files were quarantined ({quarantine.reasons()})"
        )
    suite = run_suite(kept, config)
    if not suite.success and config.fail_on_suite_error:
        raise DataValidationError(f"data validation failed for {manifest.root}:\n" + "\n".join(
            f"  {c['expectation']}({c['column']}): {c['observed']}" for c in suite.failures()
        ))
    return kept, quarantine, suite
