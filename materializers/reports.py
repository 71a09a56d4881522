"""One materializer for the small report dataclasses: `dataclasses.asdict` as JSON (shown as JSON in the
dashboard), rebuilt nested dataclasses and all by pydantic's TypeAdapter."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from pydantic import TypeAdapter
from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from imgclf.drift.detect import DriftDecision
from imgclf.evaluate.gate import GateResult
from imgclf.evaluate.metrics import EvaluationReport
from imgclf.promotion.record import PromotionRecord
from imgclf.registry import RegisteredVersion
from imgclf.serving.deployment import Deployment

_FILE = "report.json"


class ReportMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (EvaluationReport, GateResult, RegisteredVersion, Deployment, DriftDecision)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA_ANALYSIS

    def save(self, data: Any) -> None:
        with fileio.open(os.path.join(self.uri, _FILE), "w") as f:
            f.write(json.dumps(dataclasses.asdict(data), indent=2, default=str))

    def load(self, data_type: type[Any]) -> Any:
        with fileio.open(os.path.join(self.uri, _FILE), "r") as f:
            return TypeAdapter(data_type).validate_python(json.loads(f.read()))

    def save_visualizations(self, data: Any) -> dict[str, VisualizationType]:
        return {os.path.join(self.uri, _FILE): VisualizationType.JSON}

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        """The scalar fields (nested reports and tables stay in the JSON)."""
        fields = dataclasses.asdict(data)
        return {k: v for k, v in fields.items() if isinstance(v, (bool, int, float, str))}


class PromotionRecordMaterializer(ReportMaterializer):
    """The record as JSON, shown in the dashboard as its Markdown page (decision, figures, audit move)."""

    ASSOCIATED_TYPES = (PromotionRecord,)

    def save_visualizations(self, data: PromotionRecord) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, "promotion.md")
        with fileio.open(path, "w") as f:
            f.write(data.to_markdown())
        return {path: VisualizationType.MARKDOWN}
