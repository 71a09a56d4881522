"""Typed dataset artifacts: the manifest of images and the quarantine list of rejected ones."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

MANIFEST_COLUMNS = ["path", "label", "sha256", "bytes", "format", "mode", "width", "height"]
QUARANTINE_COLUMNS = ["path", "reason", "detail"]
PIPELINE_COLUMNS = ["split", "split_cluster", "phash"]  # added by split; not the user's metadata


@dataclass
class DatasetManifest:
    """One row per image. `path` is relative to `root` (POSIX); `split` appears after splitting."""

    root: str
    records: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in MANIFEST_COLUMNS if c not in self.records.columns]
        if missing:
            raise ValueError(f"manifest is missing columns {missing}")
        self.records = self.records.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def multi_label(self) -> bool:
        """Multi-label rows hold their labels sorted and joined by '|' (e.g. "cat|outdoor")."""
        return bool(self.records["label"].astype(str).str.contains("|", regex=False).any())

    def label_sets(self) -> list[list[str]]:
        return [[p for p in str(label).split("|") if p] for label in self.records["label"]]

    @property
    def class_names(self) -> list[str]:
        return sorted({name for labels in self.label_sets() for name in labels})

    @property
    def extra_columns(self) -> list[str]:
        """The user's own columns from a CSV/JSON manifest (e.g. `site`, `scanner`), in file order."""
        known = set(MANIFEST_COLUMNS) | set(PIPELINE_COLUMNS)
        return [c for c in self.records.columns if c not in known]

    def subset(self, split: str) -> DatasetManifest:
        if "split" not in self.records.columns:
            raise ValueError("the manifest has no `split` column: split the data before taking its splits")
        return DatasetManifest(self.root, self.records[self.records["split"] == split])

    def label_indices(self, class_names: list[str]) -> np.ndarray:
        """Integer targets for `class_names` (the model's class order); single-label data only."""
        if self.multi_label:
            raise ValueError("this data set is multi-label; use label_matrix() for its targets")
        index = {name: i for i, name in enumerate(class_names)}
        return self.records["label"].map(index).to_numpy(dtype=np.int64)

    def label_matrix(self, class_names: list[str]) -> np.ndarray:
        """Multi-hot targets (N, C) in `class_names` order; works for single-label data too."""
        index = {name: i for i, name in enumerate(class_names)}
        out = np.zeros((len(self.records), len(class_names)), dtype=np.float32)
        for row, labels in enumerate(self.label_sets()):
            out[row, [index[name] for name in labels]] = 1.0
        return out

    def targets(self, class_names: list[str], multi_label: bool) -> np.ndarray:
        """What a model is trained and scored against: class indices, or multi-hot rows for multi-label
        data. `multi_label` is the whole data set's (a split may happen to hold single labels only)."""
        return self.label_matrix(class_names) if multi_label else self.label_indices(class_names)

    def write(self, folder: str | Path) -> Path:
        """`records.parquet` + `manifest.json` (the root) in `folder`: what the materializer and the
        registry store."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.records.to_parquet(folder / "records.parquet", index=False)
        (folder / "manifest.json").write_text(json.dumps({"root": self.root, "rows": len(self)}))
        return folder

    @classmethod
    def read(cls, folder: str | Path, root: str | Path | None = None) -> DatasetManifest:
        """What `write` stored; `root` re-anchors the relative paths (the data checked out elsewhere)."""
        folder = Path(folder)
        stored = json.loads((folder / "manifest.json").read_text())["root"]
        return cls(root=str(root or stored), records=pd.read_parquet(folder / "records.parquet"))

    def absolute_paths(self) -> list[Path]:
        root = Path(self.root)
        return [root / p for p in self.records["path"]]

    def content_hash(self) -> str:
        """Identity of the data (file contents and labels), independent of where the folder lives."""
        h = hashlib.sha256()
        for sha, label in sorted(zip(self.records["sha256"].astype(str), self.records["label"].astype(str))):
            h.update(f"{sha}\t{label}\n".encode())
        return h.hexdigest()

    def class_counts(self) -> pd.DataFrame:
        if "split" in self.records.columns:
            return self.records.pivot_table(
                index="label", columns="split", values="path", aggfunc="count", fill_value=0
            )
        return self.records.groupby("label")["path"].count().to_frame("images")


@dataclass
class Quarantine:
    """Files that were received but not kept, each with a reason code and a human-readable detail."""

    records: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=QUARANTINE_COLUMNS))

    def __len__(self) -> int:
        return len(self.records)

    def reasons(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.records["reason"].value_counts().items()}
