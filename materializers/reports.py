"""One materializer for the small report dataclasses (plain JSON, shown as JSON in the dashboard)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Type

from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from imgclf.evaluate.metrics import EvaluationReport, GateResult
from imgclf.registry import RegisteredVersion
from imgclf.serving.deployment import Deployment

_FILE = "report.json"


class ReportMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (EvaluationReport, GateResult, RegisteredVersion, Deployment)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA_ANALYSIS

    def save(self, data: Any) -> None:
        with fileio.open(os.path.join(self.uri, _FILE), "w") as f:
            f.write(json.dumps(dataclasses.asdict(data), indent=2, default=str))

    def load(self, data_type: Type[Any]) -> Any:
        with fileio.open(os.path.join(self.uri, _FILE), "r") as f:
            return data_type(**json.loads(f.read()))

    def save_visualizations(self, data: Any) -> Dict[str, VisualizationType]:
        return {os.path.join(self.uri, _FILE): VisualizationType.JSON}

    def extract_metadata(self, data: Any) -> Dict[str, Any]:
        fields = dataclasses.asdict(data)
        return {k: v for k, v in fields.items() if isinstance(v, (bool, int, float, str))}
