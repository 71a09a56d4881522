"""The batch pipeline's settings, and the registered model it runs, pinned to one version before any shard
starts (an alias moved mid-run cannot give two shards two models)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from imgclf.batch.classify import ClassifySettings
from imgclf.paths import state_dir
from imgclf.registry import resolve_version

DEFAULT_MODEL_URI = "models:/image-classifier@production"


class BatchConfig(BaseModel):
    """`model_uri`: models:/NAME@ALIAS or models:/NAME/VERSION. `output_dir`: where the merged parquet files go
    (None: $IMGCLF_STATE/batch/<run name>). `log_url`: also append the monitoring rows to this prediction
    log (a SQLAlchemy URL, e.g. the service's), so batch traffic is watched like served traffic."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    model_uri: str = DEFAULT_MODEL_URI
    classify: ClassifySettings = Field(default_factory=ClassifySettings)
    output_dir: str | None = None
    log_url: str | None = None

    def output_folder(self, run_name: str) -> Path:
        return Path(self.output_dir) if self.output_dir else state_dir() / "batch" / run_name


class ResolvedModel(BaseModel):
    """One registered version: `stage` is the alias it was reached through (None for a version number)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    version: str
    stage: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_model(model_uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """The version `model_uri` names now (ValueError for a malformed URI; MLflow's error for a missing alias)."""
    name, version = resolve_version(model_uri, tracking_uri)
    alias = re.fullmatch(r"models:/[^/@]+@(.+)", model_uri)
    return ResolvedModel(name=name, version=version, stage=alias.group(1) if alias else None)
