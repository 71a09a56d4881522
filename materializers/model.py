"""Materializers for the trained model (safetensors + JSON spec) and its ONNX exports. No pickle."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Type

from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from imgclf.bundle import ONNX_FILE, ONNX_INT8_FILE, TrainedModel
from imgclf.export.onnx import ExportedModel
from materializers._files import download_dir, upload_dir


class TrainedModelMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (TrainedModel,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.MODEL

    def save(self, data: TrainedModel) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            data.save(tmp)
            upload_dir(Path(tmp), self.uri)

    def load(self, data_type: Type[Any]) -> TrainedModel:
        return TrainedModel.load(download_dir(self.uri))

    def save_visualizations(self, data: TrainedModel) -> Dict[str, VisualizationType]:
        rows = "".join(
            "<tr>" + "".join(f"<td>{v:.4g}</td>" if isinstance(v, float) else f"<td>{v}</td>" for v in h.values()) + "</tr>"
            for h in data.history
        )
        head = "".join(f"<th>{k}</th>" for k in (data.history[0] if data.history else {}))
        page = (
            f"<html><body style='font-family:sans-serif'><h3>{data.arch}: {len(data.class_names)} classes</h3>"
            f"<p>preprocess: {data.preprocess.to_json()}</p><table border=1 cellpadding=3><tr>{head}</tr>{rows}</table></body></html>"
        )
        path = os.path.join(self.uri, "training.html")
        with fileio.open(path, "w") as f:
            f.write(page)
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: TrainedModel) -> Dict[str, Any]:
        return {"arch": data.arch, "classes": len(data.class_names), "image_size": data.preprocess.image_size,
                "best_val_score": float(data.info.get("best_val_score", float("nan")))}


class ExportedModelMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (ExportedModel,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.MODEL

    def save(self, data: ExportedModel) -> None:
        for name, blob in ((ONNX_FILE, data.onnx), (ONNX_INT8_FILE, data.onnx_int8)):
            with fileio.open(os.path.join(self.uri, name), "wb") as f:
                f.write(blob)
        with fileio.open(os.path.join(self.uri, "export_report.json"), "w") as f:
            f.write(json.dumps(data.report, indent=2))

    def load(self, data_type: Type[Any]) -> ExportedModel:
        local = download_dir(self.uri)
        return ExportedModel(
            onnx=(local / ONNX_FILE).read_bytes(),
            onnx_int8=(local / ONNX_INT8_FILE).read_bytes(),
            report=json.loads((local / "export_report.json").read_text()),
        )

    def save_visualizations(self, data: ExportedModel) -> Dict[str, VisualizationType]:
        return {os.path.join(self.uri, "export_report.json"): VisualizationType.JSON}

    def extract_metadata(self, data: ExportedModel) -> Dict[str, Any]:
        return {k: v for k, v in data.report.items() if isinstance(v, (int, float, str))}
