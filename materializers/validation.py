"""Materializer for the data-validation result: JSON on disk, an HTML page in the ZenML dashboard."""

from __future__ import annotations

import json
import os
from typing import Any

from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from imgclf.data.validation_result import SuiteResult

_JSON = "suite.json"
_HTML = "suite.html"


class SuiteResultMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (SuiteResult,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA_ANALYSIS

    def save(self, data: SuiteResult) -> None:
        with fileio.open(os.path.join(self.uri, _JSON), "w") as f:
            f.write(json.dumps(data.to_dict(), indent=1, default=str))

    def load(self, data_type: type[Any]) -> SuiteResult:
        with fileio.open(os.path.join(self.uri, _JSON), "r") as f:
            return SuiteResult.from_dict(json.loads(f.read()))

    def save_visualizations(self, data: SuiteResult) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, _HTML)
        with fileio.open(path, "w") as f:
            f.write(data.to_html())
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: SuiteResult) -> dict[str, Any]:
        return {
            **data.counts,
            "suite_success": data.success,
            "failed_errors": len(data.failures("error")),
            "failed_warnings": len(data.failures("warning")),
        }
