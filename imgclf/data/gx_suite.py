"""The dataset checks as a Great Expectations 1.x suite (ephemeral context, nothing written): labels,
classes, unique paths, hashes, image sizes, images per class, imbalance. Returns plain check records."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd

from imgclf.data.validation_config import ValidationConfig
from imgclf.data.validation_result import EXAMPLES, plain, short


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
                expect("ExpectColumnValuesToBeInSet", "labels_in_classes", f"in {short(classes)}",
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
        observed: Any = plain(res["observed_value"])
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
        "unexpected": unexpected[:EXAMPLES],
    }


