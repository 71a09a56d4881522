"""The dataset checks as a Great Expectations 1.x suite (ephemeral context, nothing written): labels,
classes, unique paths, hashes, image sizes, images per class, imbalance. Returns typed check records."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from imgclf.data.validation_config import ValidationConfig
from imgclf.data.validation_result import EXAMPLES, SuiteCheck, plain, short


@dataclass
class _Suite:
    """One GX suite: the frame it runs on, the column naming its rows, and its expectations in order."""

    name: str
    frame: pd.DataFrame
    id_column: str
    expectations: list[Any]


def run_suite(
    images: pd.DataFrame,
    label_rows: pd.DataFrame,
    kept_label_rows: pd.DataFrame,
    classes: list[str],
    config: ValidationConfig,
) -> list[SuiteCheck]:
    """The GX suite (ephemeral context, nothing written), one record per expectation in suite order.

    `images` are the readable rows (label None when missing, plus `labels_per_sha256`); `label_rows`
    and `kept_label_rows` hold one (path, label) row per class of each labelled / kept image (a
    multi-label image has several), for the class-set check and the class-level checks.
    """
    gx, gxe = _import_gx()
    expect = _Expect(gxe, config)
    suites = [
        _Suite("images", images, "path", _image_expectations(expect, config)),
        _Suite("labels", label_rows, "path", _label_expectations(expect, classes)),
        _Suite("kept", kept_label_rows, "path", _kept_expectations(expect, config)),
        _Suite("class_counts", _class_counts(kept_label_rows, classes), "label", _class_expectations(expect, config)),
    ]
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_pandas("imgclf")
    return [check for suite in suites for check in _run(gx, context, source, suite, config)]


def _import_gx() -> tuple[Any, Any]:
    """great_expectations and its expectations module, imported quietly (no analytics, no INFO chatter)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


class _Expect:
    """Builds a GX expectation tagged with our check name and threshold, at the check's severity."""

    def __init__(self, gxe: Any, config: ValidationConfig) -> None:
        self.gxe, self.config = gxe, config

    def __call__(self, kind: str, check: str, threshold: str, **kwargs: Any) -> Any:
        gx_severity = "critical" if self.config.severity[check] == "error" else "warning"
        return getattr(self.gxe, kind)(severity=gx_severity, meta={"check": check, "threshold": threshold}, **kwargs)


def _image_expectations(expect: _Expect, config: ValidationConfig) -> list[Any]:
    """Row-level checks on the readable images: label present, no conflicts, no duplicates, sizes."""
    sides = f"{config.min_size}..{config.max_size} px"
    size_range = {"min_value": config.min_size, "max_value": config.max_size}
    return [
        expect("ExpectColumnValuesToNotBeNull", "labels_not_null", "every file has a label", column="label"),
        expect(
            "ExpectColumnValuesToBeBetween",
            "label_conflicts",
            "one label per sha256",
            column="labels_per_sha256",
            max_value=1,
        ),
        expect(
            "ExpectCompoundColumnsToBeUnique",
            "exact_duplicates",
            "unique (sha256, label)",
            column_list=["sha256", "label"],
            ignore_row_if="any_value_is_missing",
        ),
        expect("ExpectColumnValuesToBeBetween", "image_size_range", sides, column="width", **size_range),
        expect("ExpectColumnValuesToBeBetween", "image_size_range", sides, column="height", **size_range),
    ]


def _label_expectations(expect: _Expect, classes: list[str]) -> list[Any]:
    """Every label (each class of a multi-label row) is one of the classes."""
    return [
        expect(
            "ExpectColumnValuesToBeInSet",
            "labels_in_classes",
            f"in {short(classes)}",
            column="label",
            value_set=classes,
        )
    ]


def _kept_expectations(expect: _Expect, config: ValidationConfig) -> list[Any]:
    """Enough classes among the kept images."""
    return [
        expect(
            "ExpectColumnUniqueValueCountToBeBetween",
            "min_classes",
            f">= {config.min_classes} classes",
            column="label",
            min_value=config.min_classes,
        )
    ]


def _class_expectations(expect: _Expect, config: ValidationConfig) -> list[Any]:
    """Class-level checks on the kept images: images per class, largest/smallest class."""
    return [
        expect(
            "ExpectColumnValuesToBeBetween",
            "min_images_per_class",
            f">= {config.min_images_per_class} images",
            column="images",
            min_value=config.min_images_per_class,
        ),
        expect(
            "ExpectColumnMaxToBeBetween",
            "class_imbalance",
            f"largest/smallest <= {config.max_imbalance_ratio:g}",
            column="imbalance",
            max_value=config.max_imbalance_ratio,
        ),
    ]


def _class_counts(kept_label_rows: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per class (configured or found): kept images and largest class / this class (NaN if empty)."""
    found = sorted(set(classes) | set(kept_label_rows["label"]))
    counts = kept_label_rows.groupby("label")["path"].count().reindex(found, fill_value=0)
    per_class = pd.DataFrame({"label": counts.index.astype(str), "images": counts.to_numpy(dtype=np.int64)})
    per_class["imbalance"] = (per_class["images"].max() / per_class["images"]).where(per_class["images"] > 0)
    return per_class


def _run(gx: Any, context: Any, source: Any, suite: _Suite, config: ValidationConfig) -> list[SuiteCheck]:
    """Run one suite on its frame; the records come in suite order, not GX's result order."""
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite.name, expectations=suite.expectations))
    batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all")
    definition = gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
    result = context.validation_definitions.add(definition).run(
        batch_parameters={"dataframe": suite.frame.reset_index(drop=True)},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [suite.id_column]},
    )
    by_id = {r.expectation_config.id: r for r in result.results}
    return [_record(suite.name, by_id[e.id], suite.id_column, config) for e in gx_suite.expectations]


def _record(suite: str, r: Any, id_column: str, config: ValidationConfig) -> SuiteCheck:
    """One GX expectation result as a SuiteCheck, naming at most EXAMPLES of the rows it failed."""
    cfg = r.expectation_config
    res = r.result or {}
    kwargs = cfg.kwargs
    unexpected = [str(row[id_column]) for row in res.get("unexpected_index_list") or []]
    return SuiteCheck(
        suite=suite,
        check=cfg.meta["check"],
        severity=config.severity[cfg.meta["check"]],
        expectation=cfg.type,
        column=kwargs.get("column") or ",".join(kwargs.get("column_list") or []),
        success=bool(r.success),
        observed=_observed(r, res),
        threshold=cfg.meta["threshold"],
        unexpected_count=int(res.get("unexpected_count", len(unexpected)) or 0),
        unexpected=unexpected[:EXAMPLES],
    )


def _observed(r: Any, res: dict[str, Any]) -> Any:
    """What GX saw: its observed value, else the share of unexpected rows, else why it could not tell."""
    exception = (r.exception_info or {}).get("exception_message") if not r.success else None
    if exception:
        return f"GX could not evaluate: {exception}"
    if "observed_value" in res:
        return plain(res["observed_value"])
    if "element_count" in res:
        return f"{res.get('unexpected_count', 0)} of {res['element_count']} rows unexpected"
    return None
