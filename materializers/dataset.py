"""Materializers for the dataset manifest and the quarantine list: parquet + JSON, an HTML summary."""

from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Type

import pandas as pd
from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from imgclf.data.manifest import DatasetManifest, Quarantine
from imgclf.data.split import SPLITS, split_report
from materializers._files import download_dir, upload_dir


class DatasetManifestMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (DatasetManifest,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    def save(self, data: DatasetManifest) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            data.records.to_parquet(Path(tmp, "records.parquet"), index=False)
            Path(tmp, "manifest.json").write_text(json.dumps({"root": data.root, "rows": len(data)}))
            upload_dir(Path(tmp), self.uri)

    def load(self, data_type: Type[Any]) -> DatasetManifest:
        local = download_dir(self.uri)
        meta = json.loads((local / "manifest.json").read_text())
        return DatasetManifest(root=meta["root"], records=pd.read_parquet(local / "records.parquet"))

    def save_visualizations(self, data: DatasetManifest) -> Dict[str, VisualizationType]:
        counts = data.class_counts()
        body = f"<h3>{len(data)} images, {len(data.class_names)} classes</h3><p>root: {html.escape(data.root)}</p>"
        if "split" in data.records.columns:  # the split report: images per class per split
            report = split_report(data)
            counts = pd.DataFrame.from_dict(report["per_class"], orient="index").rename_axis("class")
            counts["total"] = counts.sum(axis=1)
            counts.loc["all classes"] = counts.sum()
            body += "<p>split: " + ", ".join(f"{s} {report[s]} ({report[s] / max(len(data), 1):.1%})" for s in SPLITS) + "</p>"
            if "clusters" in report:
                body += (
                    f"<p>{report['rows_in_shared_clusters']} images in clusters kept within one split (same group, bytes "
                    f"or near-duplicate); largest cluster {report['largest_cluster']}; clusters across splits "
                    f"{report['clusters_across_splits']}</p>"
                )
        body += counts.to_html(border=0)
        path = os.path.join(self.uri, "summary.html")
        with fileio.open(path, "w") as f:
            f.write(f"<html><body style='font-family:sans-serif'>{body}</body></html>")
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: DatasetManifest) -> Dict[str, Any]:
        return {"images": len(data), "classes": len(data.class_names), "data_hash": data.content_hash()}


class QuarantineMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (Quarantine,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    def save(self, data: Quarantine) -> None:
        with fileio.open(os.path.join(self.uri, "quarantine.json"), "w") as f:
            f.write(data.records.to_json(orient="records", indent=1))

    def load(self, data_type: Type[Any]) -> Quarantine:
        with fileio.open(os.path.join(self.uri, "quarantine.json"), "r") as f:
            rows = json.loads(f.read())
        return Quarantine(pd.DataFrame(rows, columns=["path", "reason", "detail"]))

    def save_visualizations(self, data: Quarantine) -> Dict[str, VisualizationType]:
        path = os.path.join(self.uri, "quarantine.csv")
        with fileio.open(path, "w") as f:
            f.write(data.records.to_csv(index=False))
        return {path: VisualizationType.CSV}

    def extract_metadata(self, data: Quarantine) -> Dict[str, Any]:
        return {"quarantined": len(data), **{f"reason_{k}": v for k, v in data.reasons().items()}}
