"""One monitoring pass: the served version (the holder of a stage), a window of its prediction log, its
reference profile from the registry, and the drift decision with the figures to look at."""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from imgclf.drift.detect import DriftConfig
from imgclf.drift.reference import read_reference_profile
from imgclf.monitoring.log import read_window
from imgclf.monitoring.record import COLUMNS, DTYPES

logger = logging.getLogger(__name__)


class MonitoringConfig(BaseModel):
    """Whose traffic (a stage's holder, or a version), which window of the log, and the drift rules."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = "image-classifier"
    stage: Literal["production", "staging"] = "production"
    version: str = Field("", description="a version to watch instead of the stage's holder")
    log_url: str | None = Field(None, description="the prediction log (default: IMGCLF_PREDICTION_LOG)")
    last: int | None = Field(1000, ge=1, description="the newest rows of that version")
    hours: float | None = Field(None, gt=0, description="or the rows of the last hours")
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="after")
    def _one_window(self) -> MonitoringConfig:
        if (self.last is None) == (self.hours is None):
            raise ValueError("choose the window by `last` (rows) or by `hours`, not both and not neither")
        return self


def served_version(config: MonitoringConfig, tracking_uri: str | None = None) -> str:
    """The version to watch: `config.version`, else the holder of `config.stage` (LookupError if none)."""
    from imgclf.registry import alias_version

    if config.version:
        return config.version
    holder = alias_version(config.model_name, config.stage, tracking_uri)
    if holder is None:
        raise LookupError(f"no version of {config.model_name} holds {config.stage}: nothing is served to watch")
    return holder


def load_window(config: MonitoringConfig, version: str, now: datetime | None = None) -> pd.DataFrame:
    """The window of `version`'s rows in the prediction log, oldest first. No log written yet (nothing
    served, or served with the log elsewhere): an empty window, so the decision is "not enough data"."""
    try:
        if config.hours is not None:
            since = (now or datetime.now(UTC)) - timedelta(hours=config.hours)
            return read_window(config.log_url, since=since, model_version=version)
        return read_window(config.log_url, last=config.last, model_version=version)
    except FileNotFoundError as exc:
        logger.warning("%s: the window is empty", exc)
        return pd.DataFrame({name: pd.Series(dtype=DTYPES[name]) for name in COLUMNS})


def load_reference(config: MonitoringConfig, version: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The reference profile registered with `version` (LookupError for a version registered without one)."""
    from imgclf.registry import fetch_bundle

    with tempfile.TemporaryDirectory(prefix="imgclf-reference-") as tmp:
        bundle, _ = fetch_bundle(f"models:/{config.model_name}/{version}", tmp, tracking_uri)
        profile = read_reference_profile(bundle)
    if profile is None:
        raise LookupError(
            f"{config.model_name} version {version} has no reference profile (registered before monitoring "
            "existed): train and register a new version to watch its traffic"
        )
    return profile
