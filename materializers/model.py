"""Materializers for the trained model (safetensors + JSON spec) and its ONNX exports. No pickle."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from imgclf.bundle import EXPORT_REPORT_FILE, ONNX_FILE, ONNX_INT8_FILE
from imgclf.export.exporter import ExportedModel, ExportReport
from imgclf.export.int8_report import RECIPES_FILE, recipe_table_markdown
from imgclf.models.trained import TrainedModel
from imgclf.render import render
from materializers._files import download_dir, upload_dir


class TrainedModelMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (TrainedModel,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.MODEL

    def save(self, data: TrainedModel) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            data.save(tmp)
            upload_dir(Path(tmp), self.uri)

    def load(self, data_type: type[Any]) -> TrainedModel:
        return TrainedModel.load(download_dir(self.uri))

    def save_visualizations(self, data: TrainedModel) -> dict[str, VisualizationType]:
        page = render(
            "training_history.html.j2",
            arch=data.arch,
            classes=len(data.class_names),
            preprocess=data.preprocess.to_json(),
            columns=list(data.history[0]) if data.history else [],
            history=data.history,
        )
        path = os.path.join(self.uri, "training.html")
        with fileio.open(path, "w") as f:
            f.write(page)
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: TrainedModel) -> dict[str, Any]:
        return {
            "arch": data.arch,
            "classes": len(data.class_names),
            "image_size": data.preprocess.image_size,
            "best_val_score": float(data.info.get("best_val_score", float("nan"))),
        }


class ExportedModelMaterializer(BaseMaterializer):
    """model.onnx, model.int8.onnx (only when an INT8 recipe was chosen), export_report.json, and the
    INT8 recipe table as Markdown for the dashboard."""

    ASSOCIATED_TYPES = (ExportedModel,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.MODEL

    def save(self, data: ExportedModel) -> None:
        blobs = [(ONNX_FILE, data.onnx)] + ([(ONNX_INT8_FILE, data.onnx_int8)] if data.onnx_int8 is not None else [])
        for name, blob in blobs:
            with fileio.open(os.path.join(self.uri, name), "wb") as f:
                f.write(blob)
        with fileio.open(os.path.join(self.uri, EXPORT_REPORT_FILE), "w") as f:
            f.write(json.dumps(data.report.to_dict(), indent=2))

    def load(self, data_type: type[Any]) -> ExportedModel:
        local = download_dir(self.uri)
        int8 = local / ONNX_INT8_FILE
        return ExportedModel(
            onnx=(local / ONNX_FILE).read_bytes(),
            onnx_int8=int8.read_bytes() if int8.is_file() else None,
            report=ExportReport.from_dict(json.loads((local / EXPORT_REPORT_FILE).read_text())),
        )

    def save_visualizations(self, data: ExportedModel) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, RECIPES_FILE)
        with fileio.open(path, "w") as f:
            table = recipe_table_markdown(data.report.int8_search)
            f.write(f"### INT8 recipes (serving {data.serving_file})\n\n{table}")
        return {os.path.join(self.uri, EXPORT_REPORT_FILE): VisualizationType.JSON, path: VisualizationType.MARKDOWN}

    def extract_metadata(self, data: ExportedModel) -> dict[str, Any]:
        return data.report.scalars()
