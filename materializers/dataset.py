"""Materializers for the dataset manifest and the quarantine list: parquet + JSON, an HTML summary."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import pandas as pd
from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from imgclf.data.manifest import DatasetManifest, Quarantine
from imgclf.data.split import SPLITS, split_report
from imgclf.render import render
from materializers._files import download_dir, upload_dir


class DatasetManifestMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (DatasetManifest,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    def save(self, data: DatasetManifest) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            upload_dir(data.write(tmp), self.uri)

    def load(self, data_type: type[Any]) -> DatasetManifest:
        return DatasetManifest.read(download_dir(self.uri))

    def save_visualizations(self, data: DatasetManifest) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, "summary.html")
        with fileio.open(path, "w") as f:
            f.write(render("dataset_summary.html.j2", **_summary(data)))
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: DatasetManifest) -> dict[str, Any]:
        return {"images": len(data), "classes": len(data.class_names), "data_hash": data.content_hash()}


class QuarantineMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (Quarantine,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    def save(self, data: Quarantine) -> None:
        with fileio.open(os.path.join(self.uri, "quarantine.json"), "w") as f:
            f.write(data.records.to_json(orient="records", indent=1))

    def load(self, data_type: type[Any]) -> Quarantine:
        with fileio.open(os.path.join(self.uri, "quarantine.json"), "r") as f:
            rows = json.loads(f.read())
        return Quarantine(pd.DataFrame(rows, columns=["path", "reason", "detail"]))

    def save_visualizations(self, data: Quarantine) -> dict[str, VisualizationType]:
        path = os.path.join(self.uri, "quarantine.csv")
        with fileio.open(path, "w") as f:
            f.write(data.records.to_csv(index=False))
        return {path: VisualizationType.CSV}

    def extract_metadata(self, data: Quarantine) -> dict[str, Any]:
        return {"quarantined": len(data), **{f"reason_{k}": v for k, v in data.reasons().items()}}


def _summary(data: DatasetManifest) -> dict[str, Any]:
    """What the summary page shows: size, root, images per class, and once split, the images per class
    per split (with totals), each split's share and how rows were clustered."""
    counts, splits, clusters = data.class_counts(), [], None
    if "split" in data.records.columns:
        report = split_report(data)
        counts = pd.DataFrame.from_dict(report["per_class"], orient="index").rename_axis("class")
        counts["total"] = counts.sum(axis=1)
        counts.loc["all classes"] = counts.sum()
        splits = [{"name": s, "images": report[s], "share": report[s] / max(len(data), 1)} for s in SPLITS]
        clusters = report if "clusters" in report else None
    table = {
        "index_name": counts.index.name or "",
        "columns": [str(c) for c in counts.columns],
        "rows": [(str(name), [int(v) for v in row]) for name, row in zip(counts.index, counts.to_numpy())],
    }
    return {
        "images": len(data),
        "classes": len(data.class_names),
        "root": data.root,
        "splits": splits,
        "clusters": clusters,
        "table": table,
    }
